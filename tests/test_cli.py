"""The command line: `python -m mnist_vae draw` writes the PNG asked for, or one clear error
line and no file."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_vae import cli, drawing
from mnist_vae.config import DecoderConfig, EncoderConfig, ModelConfig, PriorConfig
from mnist_vae.model import build_vae
from mnist_vae.prior import GaussianMixture

SRC = Path(__file__).resolve().parents[1] / "src"
TINY = ModelConfig(
    latent_dim=3,
    encoder=EncoderConfig(filters=(4,), kernel_sizes=(3,), strides=(4,)),
    decoder=DecoderConfig(reshape=(7, 7, 4), filters=(4,), kernel_sizes=(3,), strides=(4,)),
    prior=PriorConfig(components=1, components_per_digit=1),
)


def save_drawing_vae(path: Path, conditional: bool = True) -> None:
    """A tiny untrained VAE whose p(z | d) sits at 3d in every coordinate."""
    model = build_vae(dataclasses.replace(
        TINY, prior=dataclasses.replace(TINY.prior, conditional=conditional)))
    if conditional:
        model.set_digit_prior([GaussianMixture(np.zeros(1), np.full((1, 3), 3.0 * d),
                                               0.1 * np.eye(3)[None]) for d in range(10)])
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "models" / "vae.keras"
    save_drawing_vae(path)
    return path


def test_draw_writes_a_grid_of_the_digit_and_the_same_seed_the_same_bytes(model_file, tmp_path,
                                                                          capsys):
    out = tmp_path / "seven.png"
    assert cli.main(["draw", "7", "--n", "5", "--out", str(out), "--model", str(model_file)]) == 0
    assert "5 x digit 7 (seed 0)" in capsys.readouterr().out
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size == (58 * 3 + 2, 58 * 2 + 2)  # 3 x 2 grid
    first = out.read_bytes()
    cli.main(["draw", "7", "--n", "5", "--out", str(out), "--model", str(model_file)])
    assert out.read_bytes() == first
    cli.main(["draw", "2", "--n", "5", "--out", str(out), "--model", str(model_file)])
    assert out.read_bytes() != first  # another digit, another drawing


def test_without_a_store_the_default_model_is_the_pipelines_file(model_file, tmp_path,
                                                                 monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(model_file.parent.parent)
    out = tmp_path / "one.png"
    assert cli.main(["draw", "1", "--n", "1", "--out", str(out)]) == 0
    assert "from models/vae.keras" in capsys.readouterr().out
    assert not (model_file.parent.parent / "mlflow.db").exists()  # no store created


@pytest.mark.parametrize("argv, message", [
    (["draw", "10"], "digit must be 0-9, got 10"),
    (["draw", "-1"], "digit must be 0-9, got -1"),
    (["draw", "x"], "digit must be a whole number, got 'x'"),
    (["draw", "2.5"], "digit must be a whole number, got '2.5'"),
    (["draw", "3", "--n", "0"], "n must be 1-256 images, got 0"),
    (["draw", "3", "--n", "1000"], "n must be 1-256 images, got 1000"),
    (["draw", "3", "--out", "x.jpg"], "the output is a PNG"),
])
def test_bad_requests_get_one_line_and_no_file(argv, message, model_file, tmp_path, capsys):
    out = tmp_path / "out.png"
    args = [*argv, "--model", str(model_file)] + ([] if "--out" in argv else ["--out", str(out)])
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_a_missing_model_or_one_that_cannot_draw_digits_says_how_to_fix_it(tmp_path, capsys):
    out = tmp_path / "out.png"
    assert cli.main(["draw", "3", "--out", str(out), "--model", str(tmp_path / "no.keras")]) == 2
    assert "no such model file; run `dvc repro`" in capsys.readouterr().err
    plain = tmp_path / "plain.keras"
    save_drawing_vae(plain, conditional=False)
    assert cli.main(["draw", "3", "--out", str(out), "--model", str(plain)]) == 2
    assert "cannot draw a chosen digit" in capsys.readouterr().err
    assert not out.exists()


def test_python_dash_m_runs_the_command_line(model_file, tmp_path):
    out = tmp_path / "nine.png"
    result = subprocess.run([sys.executable, "-m", "mnist_vae", "draw", "9", "--n", "4", "--out",
                             str(out), "--model", str(model_file)], capture_output=True,
                            text=True, timeout=120, env={"PYTHONPATH": str(SRC),
                                                         "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    with Image.open(out) as png:
        assert png.size == (58 * 2 + 2, 58 * 2 + 2)
    bad = subprocess.run([sys.executable, "-m", "mnist_vae", "draw", "11", "--model",
                          str(model_file)], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == (
        "draw: error: digit must be 0-9, got 11")


def test_requests_are_checked_before_any_model_is_loaded():
    assert drawing.check_request("7", "3", "1", "4") == drawing.Request(7, 3, 1, 4)
    for bad in (True, 2.5, None, "7.0"):
        with pytest.raises(drawing.DrawError, match="digit must be"):
            drawing.check_request(bad)
