"""params.yaml -> typed config: the real file parses, and every kind of bad input is named."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from mnist_vae.config import (
    ConfigError,
    Params,
    load_params,
    parse_params,
    to_flat_dict,
)
from mnist_vae.overlays import load_overlay, merge_overlay


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


def _flat_keys(mapping: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in mapping.items():
        if isinstance(value, dict):
            keys |= _flat_keys(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


def test_params_yaml_sets_every_key_to_its_dataclass_default(repo_root):
    """Each default has one value: params.yaml spells out every key, equal to the schema's."""
    written = _flat_keys(_repo_params(repo_root))
    defaults = to_flat_dict(Params())
    assert sorted(set(defaults) - written) == [], "keys params.yaml leaves to the dataclasses"
    actual = to_flat_dict(load_params(repo_root / "params.yaml"))
    differing = {k: (actual[k], defaults[k]) for k in defaults if actual[k] != defaults[k]}
    assert differing == {}, "params.yaml value vs dataclass default: make them one value"
    assert {k.split(".")[0] for k in defaults} == set(_repo_params(repo_root)), "every section"
