"""params.yaml -> typed config: the real file parses, and every kind of bad input is named."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from mnist_vae.config import ConfigError, Params, load_params, parse_params, to_flat_dict


def _repo_params(repo_root: Path) -> dict:
    return yaml.safe_load((repo_root / "params.yaml").read_text())


def test_repo_params_parse(repo_root):
    params = load_params(repo_root / "params.yaml")
    assert isinstance(params, Params)
    assert params.paths.data == "data/mnist.npz"
    assert params.download.mirrors[0].startswith("https://")


def test_every_config_in_configs_dir_parses(repo_root):
    base = _repo_params(repo_root)
    for path in sorted((repo_root / "configs").glob("*.yaml")):
        overrides = yaml.safe_load(path.read_text()) or {}
        merged = {k: {**base.get(k, {}), **v} for k, v in overrides.items()}
        parse_params({**base, **merged})


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
