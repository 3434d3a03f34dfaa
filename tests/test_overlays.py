"""Config overlays: deep merge, `dvc exp run -S` arguments DVC parses back, bad overlays named."""


import pytest

from mnist_vae.config import ConfigError, load_params
from mnist_vae.overlays import load_overlay, merge_overlay, overlay_to_set_args, params_with_overlay


def test_merge_overlay_is_deep_and_replaces_lists():
    base = {"model": {"latent_dim": 32, "encoder": {"filters": [32, 64], "activation": "silu"}},
            "train": {"epochs": 20}}
    merged = merge_overlay(base, {"model": {"encoder": {"filters": [8]}}})
    assert merged == {"model": {"latent_dim": 32,
                                "encoder": {"filters": [8], "activation": "silu"}},
                      "train": {"epochs": 20}}
    assert base["model"]["encoder"]["filters"] == [32, 64]  # the base is not modified


def test_overlay_to_set_args_flattens_to_hydra_overrides():
    args = overlay_to_set_args({
        "model": {"latent_dim": 8, "encoder": {"filters": [64, 64], "dropout": []}},
        "train": {"learning_rate": 0.0005, "deterministic": False},
        "data": {"binarize": "none"},
    })
    assert args == ["-S", "model.latent_dim=8", "-S", "model.encoder.filters=[64,64]",
                    "-S", "model.encoder.dropout=[]", "-S", "train.learning_rate=0.0005",
                    "-S", "train.deterministic=false", "-S", "data.binarize='none'"]


def test_overlay_args_survive_dvcs_own_override_parser(tmp_path, repo_root):
    from dvc.utils.hydra import apply_overrides

    params = tmp_path / "params.yaml"
    params.write_text((repo_root / "params.yaml").read_text())
    overlay = {"data": {"val_size": 7, "binarize": "dynamic"},
               "download": {"mirrors": ["http://127.0.0.1:1/it's/"], "read_timeout_s": 5e-05}}
    apply_overrides(params, overlay_to_set_args(overlay)[1::2])
    loaded = load_params(params)
    assert loaded.data.val_size == 7 and loaded.data.binarize == "dynamic"
    assert loaded.download.mirrors == ("http://127.0.0.1:1/it's/",)
    assert loaded.download.read_timeout_s == 5e-05  # written back as `5e-05`: a YAML 1.2 float


def test_load_overlay_rejects_non_mappings(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("- train\n")
    with pytest.raises(ConfigError, match="must be a mapping of sections"):
        load_overlay(path)
    with pytest.raises(ConfigError, match="no such config"):
        load_overlay(tmp_path / "missing.yaml")


def test_params_with_overlay_merges_and_validates(tmp_path, repo_root):
    overlay = tmp_path / "small.yaml"
    overlay.write_text("train:\n  epochs: 3\nmodel:\n  prior:\n    components: 5\n")
    base = repo_root / "params.yaml"
    params = params_with_overlay(overlay, base)
    assert params.train.epochs == 3 and params.model.prior.components == 5
    assert params.model.prior.covariance == load_params(base).model.prior.covariance
    overlay.write_text("train:\n  epocs: 3\n")
    with pytest.raises(ConfigError, match="train.epocs: unknown key"):
        params_with_overlay(overlay, base)
    assert params_with_overlay(None, base) == load_params(base)


def test_exp_run_script_refuses_an_invalid_overlay_before_calling_dvc(tmp_path, repo_root):
    import os
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epocs: 3\n")
    result = subprocess.run(
        [sys.executable, str(repo_root / "scripts" / "exp_run.py"), str(bad)],
        cwd=repo_root, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(repo_root / "src")},
    )
    assert result.returncode == 2
    assert "exp_run: train.epocs: unknown key" in result.stderr
    assert "dvc exp run" not in result.stdout
