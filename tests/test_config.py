"""params.yaml -> typed config: the real file parses, and every kind of bad input is named."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from mnist_vae.config import (
    ConfigError,
    Params,
    load_overlay,
    load_params,
    merge_overlay,
    overlay_to_set_args,
    parse_params,
    to_flat_dict,
)


def _repo_params(repo_root: Path) -> dict:
    return yaml.safe_load((repo_root / "params.yaml").read_text())


def test_repo_params_parse(repo_root):
    params = load_params(repo_root / "params.yaml")
    assert isinstance(params, Params)
    assert params.paths.data == "data/mnist.npz"
    assert params.download.mirrors[0].startswith("https://")


def test_every_config_in_configs_dir_parses(repo_root):
    base = _repo_params(repo_root)
    configs = sorted((repo_root / "configs").glob("*.yaml"))
    assert configs, "configs/ should hold at least the article's config"
    for path in configs:
        parse_params(merge_overlay(base, load_overlay(path)))


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


def test_config_is_frozen(repo_root):
    params = load_params(repo_root / "params.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.download.read_timeout_s = 1.0


def test_missing_sections_take_defaults():
    params = parse_params({})
    assert params == Params()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"downlaod": {}}, "downlaod: unknown section; allowed sections: paths, download"),
        ({"download": {"mirror": []}}, "download.mirror: unknown key; allowed keys in download"),
        ({"download": {"read_timeout_s": "fast"}}, "download.read_timeout_s: must be a number"),
        ({"download": {"read_timeout_s": -3}}, "download.read_timeout_s: must be > 0, got -3"),
        ({"download": {"read_timeout_s": True}}, "download.read_timeout_s: must be a number"),
        ({"download": {"mirrors": []}}, "download.mirrors: must not be empty"),
        ({"download": {"mirrors": [1]}}, "download.mirrors[0]: must be a string, got 1"),
        ({"download": {"mirrors": "http://x/"}}, "download.mirrors: must be a list of a string"),
        ({"download": {"mirrors": ["ftp://x/"]}}, "download.mirrors: must contain only http"),
        ({"evaluate": {"iwae_views": "grey"}},
         "evaluate.iwae_views: must be one of 'all', 'trained'"),
        ({"paths": ["data"]}, "paths: must be a mapping"),
        (["download"], "params.yaml: must be a mapping of sections"),
    ],
)
def test_bad_values_name_the_key(data, message):
    with pytest.raises(ConfigError) as err:
        parse_params(data)
    assert message in str(err.value)


def test_load_params_reports_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_params(tmp_path / "params.yaml")


def test_load_params_reports_invalid_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("download: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(path)


def test_flat_dict_uses_dotted_keys():
    flat = to_flat_dict(Params())
    assert flat["download.read_timeout_s"] == 10.0
    assert flat["paths.model"] == "models/vae.keras"


def test_params_yaml_matches_the_dataclass_defaults(repo_root):
    params = load_params(repo_root / "params.yaml")
    assert params.model == Params().model
    assert params.train == Params().train


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
