"""Atomic outputs: the target appears whole or not at all."""

import json

import pytest

from mnist_vae.files import atomic_path, atomic_paths, write_json


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


def test_several_outputs_appear_together_or_not_at_all(tmp_path):
    data, provenance = tmp_path / "data" / "mnist.npz", tmp_path / "data" / "provenance.json"
    with pytest.raises(RuntimeError), atomic_paths(data, provenance) as (data_tmp, prov_tmp):
        data_tmp.write_text("arrays")
        prov_tmp.write_text("{}")
        raise RuntimeError("killed after both temp files were written")
    assert sorted(p.name for p in data.parent.iterdir()) == []
    with atomic_paths(data, provenance) as (data_tmp, prov_tmp):
        data_tmp.write_text("arrays")
        prov_tmp.write_text("{}")
    assert data.read_text() == "arrays" and provenance.read_text() == "{}"
    assert sorted(p.name for p in data.parent.iterdir()) == ["mnist.npz", "provenance.json"]
