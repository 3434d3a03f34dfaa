"""Atomic outputs: the target appears whole or not at all."""

import json

import pytest

from mnist_vae.files import atomic_path, write_json


def test_write_json_creates_parents_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "metrics" / "eval.json"
    write_json(path, {"test": {"neg_elbo": 80.5}})
    assert json.loads(path.read_text()) == {"test": {"neg_elbo": 80.5}}
    assert [p.name for p in path.parent.iterdir()] == ["eval.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "model.keras"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        assert tmp.suffix == ".keras" and tmp.parent == tmp_path
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]
