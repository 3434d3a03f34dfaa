"""The drawing benchmark: both ways draw the same digits, and bad models are refused."""

from __future__ import annotations

import json

from benchmarks import ar_sampling
from mlflow_helpers import TINY_MODEL, tiny_params
from mnist_vae.model import build_vae


def test_it_reports_the_speedup_and_that_both_ways_drew_the_same_digits(tmp_path, capsys):
    out = tmp_path / "sampling.json"
    assert ar_sampling.main(["--digits", "2", "--rounds", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["same_digits"] and report["max_probability_difference"] < 1e-5
    assert report["speedup"] > 0 and 0 < report["drawn_ink"] < 1
    assert set(report["seconds"]) == {"whole_head", "per_pixel"} and report["cpu"]


def test_a_missing_model_is_refused_and_nothing_written(tmp_path, capsys):
    out, missing = tmp_path / "sampling.json", tmp_path / "none.keras"
    assert ar_sampling.main(["--model", str(missing), "--out", str(out)]) == 1
    assert f"no such model: {missing}; train one with" in capsys.readouterr().err
    assert not out.exists()


def test_a_model_without_the_head_is_refused_by_kind(tmp_path, capsys):
    path, out = tmp_path / "vae.keras", tmp_path / "sampling.json"
    build_vae(tiny_params(model=TINY_MODEL).model).save(path)
    assert ar_sampling.main(["--model", str(path), "--out", str(out)]) == 1
    assert f"{path} has no autoregressive head, so it draws all pixels at once" in (
        capsys.readouterr().err)
    assert not out.exists()
