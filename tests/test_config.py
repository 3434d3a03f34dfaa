"""params.yaml -> typed config: the real file parses, and every kind of bad input is named."""

import dataclasses
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mnist_vae.config import (
    SECTIONS,
    ConfigError,
    Params,
    load_params,
    parse_params,
    read_params_mapping,
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
        ({"evaluate": {"iwae_precision": "float16"}},
         "evaluate.iwae_precision: must be one of 'float32', 'bfloat16', 'auto'"),
        ({"paths": ["data"]}, "paths: must be a mapping"),
        ({"model": {"decoder": {"autoregressive_channels": -1}}},
         "model.decoder.autoregressive_channels: must be >= 0, got -1"),
        ({"model": {"decoder": {"autoregressive_channels": 8, "head": "dense"}}},
         "model.decoder.autoregressive_channels: the autoregressive head reads the conv stack"),
        ({"model": {"likelihood": "gaussian", "decoder": {"autoregressive_channels": 8}}},
         "model.decoder.autoregressive_channels: the autoregressive head draws binary pixels; "
         "set model.likelihood: bernoulli"),
        ({"model": {"decoder": {"autoregressive_channels": 8}}},
         "model.decoder.autoregressive_channels: the head reads the pixels before each one as "
         "drawn, 0 or 1, so it must train on binary images; set data.binarize: dynamic"),
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


# --- strictness: what DVC would read differently, and values that fail later -------------

def _params_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def _refusal(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as err:
        load_params(_params_file(tmp_path, text))
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("text", [".inf", "-.inf", ".nan", ".NaN", "1e999"])
@pytest.mark.parametrize("key", [("train", "learning_rate"), ("train", "beta"),
                                 ("download", "read_timeout_s")])
def test_non_finite_floats_are_refused(tmp_path, key, text):
    section, name = key
    message = _refusal(tmp_path, f"{section}:\n  {name}: {text}\n")
    assert message.startswith(f"{section}.{name}: must be a finite number")


def test_non_finite_floats_in_lists_are_refused():
    with pytest.raises(ConfigError, match=r"model.encoder.dropout\[1\]: must be a finite"):
        parse_params({"model": {"encoder": {"dropout": [0.1, float("nan"), 0.1]}}})


SEED_KEYS = [("train", "seed"), ("classifier", "seed"), ("evaluate", "seed"),
             ("render", "seed"), ("data", "split_seed")]


@pytest.mark.parametrize("value", [-1, 2**32, 2**40])
@pytest.mark.parametrize("key", SEED_KEYS)
def test_seeds_outside_numpys_range_are_refused(key, value):
    section, name = key
    with pytest.raises(ConfigError) as err:
        parse_params({section: {name: value}})
    assert str(err.value) == (f"{section}.{name}: must be a seed in [0, 2**32) (numpy's range), "
                              f"got {value}")


@pytest.mark.parametrize("key", SEED_KEYS)
def test_seeds_at_the_edges_of_numpys_range_are_accepted(key):
    import numpy as np

    section, name = key
    for value in (0, 2**32 - 1):
        parsed = getattr(parse_params({section: {name: value}}), section)
        np.random.seed(getattr(parsed, name))  # what Keras' set_random_seed does with it


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"val_size": 60000}, "data.val_size: 60000 leaves no training images out of MNIST's"),
        ({"val_size": 70000}, "data.val_size: 70000 leaves no training images"),
        ({"val_size": 5000, "train_limit": 55001}, "data.train_limit: 55001 is more than the"),
        ({"test_limit": 10001}, "data.test_limit: 10001 is more than MNIST's 10,000 test"),
    ],
)
def test_sizes_mnist_cannot_hold_are_refused(data, message):
    with pytest.raises(ConfigError) as err:
        parse_params({"data": data})
    assert str(err.value).startswith(message)


def test_sizes_at_mnists_limits_are_accepted():
    data = parse_params({"data": {"val_size": 59999, "train_limit": 1, "test_limit": 10000}}).data
    assert (data.val_size, data.train_limit, data.test_limit) == (59999, 1, 10000)
    assert parse_params({"evaluate": {"iwae_images": 10000}}).evaluate.iwae_images == 10000
    with pytest.raises(ConfigError, match="evaluate.iwae_images: must be at most 10,000"):
        parse_params({"evaluate": {"iwae_images": 10001}})


def test_a_duplicate_key_is_refused_naming_it_and_both_lines(tmp_path):
    message = _refusal(tmp_path, "train:\n  epochs: 3\n  batch_size: 8\n  epochs: 5\n")
    assert "duplicate key 'epochs' on lines 2 and 4" in message
    assert "keep one of them" in message


def test_a_duplicate_section_is_refused(tmp_path, repo_root):
    text = (repo_root / "params.yaml").read_text() + "\ntrain:\n  epochs: 1\n"
    message = _refusal(tmp_path, text)
    assert "duplicate key 'train'" in message and "DVC refuses such a file" in message


def test_dvc_refuses_the_same_duplicate_keys(tmp_path):
    from dvc.utils.serialize import YAMLFileCorruptedError, load_yaml

    path = _params_file(tmp_path, "train:\n  epochs: 3\n  epochs: 5\n")
    with pytest.raises(YAMLFileCorruptedError):
        load_yaml(path)


@pytest.mark.parametrize("word", ["yes", "no", "on", "off", "y", "n", "Yes", "NO", "On", "OFF"])
def test_yaml_11_booleans_are_refused_as_ambiguous(tmp_path, word):
    message = _refusal(tmp_path, f"train:\n  deterministic: {word}\n")
    assert message == (f"train.deterministic: {word} is a boolean in YAML 1.1 but the string "
                       f"'{word}' for DVC (YAML 1.2); write true or false (or quote it if a "
                       f"string is meant)")


def test_yaml_11_booleans_are_refused_in_string_fields_and_lists_too(tmp_path):
    assert _refusal(tmp_path, "tracking:\n  experiment: on\n").startswith(
        "tracking.experiment: on is a boolean in YAML 1.1")
    assert _refusal(tmp_path, "tracking:\n  comparable_on: [data.test_limit, yes]\n").startswith(
        "tracking.comparable_on[1]: yes is a boolean in YAML 1.1")


@pytest.mark.parametrize("text", ["010", "1:30"])
def test_yaml_11_only_numbers_are_refused_as_ambiguous(tmp_path, text):
    message = _refusal(tmp_path, f"train:\n  epochs: {text}\n")
    assert message.startswith(f"train.epochs: {text} is a number that YAML 1.1 and DVC")


def test_quoted_and_yaml_12_scalars_still_load(tmp_path):
    params = load_params(_params_file(
        tmp_path, "train:\n  deterministic: false\n  jit_compile: False\n  learning_rate: 1e-3\n"
                  "tracking:\n  experiment: 'yes'\n"))
    assert params.train.deterministic is False and params.train.learning_rate == 1e-3
    assert params.tracking.experiment == "yes"


def test_ambiguous_scalars_load_alike_in_dvcs_reader(tmp_path):
    """Every scalar this loader accepts, DVC's YAML 1.2 reader reads as the same value."""
    from dvc.utils.serialize import load_yaml

    text = ("train:\n  deterministic: true\n  epochs: 10\n  learning_rate: 5e-05\n"
            "  beta: 1_000\ntracking:\n  experiment: 'on'\n")
    ours = read_params_mapping(_params_file(tmp_path, text))
    assert ours == load_yaml(tmp_path / "params.yaml")


@pytest.mark.parametrize("payload", [b"\xff\xfe\x00t\x00r\x00a\x00i\x00n",
                                     b"train:\n  epochs: \xe9\n", bytes(range(256))])
def test_a_binary_or_non_utf8_params_file_is_one_line(tmp_path, payload):
    path = tmp_path / "params.yaml"
    path.write_bytes(payload)
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert str(err.value).startswith(f"{path}: not UTF-8 text (byte 0x")
    assert "\n" not in str(err.value)


def test_control_characters_are_one_line_yaml_errors(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"train:\n  epochs: \x00\x01\n")
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert str(err.value).startswith(f"{path}: not valid YAML:")
    assert "\n" not in str(err.value)


def test_a_bad_seed_stops_the_train_stage_before_any_mlflow_run(tmp_path, repo_root):
    import os
    import subprocess
    import sys

    (tmp_path / "params.yaml").write_text("train:\n  seed: -1\n")
    result = subprocess.run(
        [sys.executable, str(repo_root / "stages" / "train.py")], cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(repo_root / "src"),
             "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    )
    assert result.returncode != 0
    assert "train.seed: must be a seed in [0, 2**32) (numpy's range), got -1" in result.stderr
    assert not (tmp_path / "mlflow.db").exists()


# --- properties: only ConfigError, and what is accepted is what was written ----------------

PROPERTY = settings(max_examples=200, deadline=None)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
values = st.one_of(scalars, st.lists(scalars, max_size=4))
SCHEMA = {section: [f.name for f in dataclasses.fields(cls)  # nested sections left out
                    if f"{section}.{f.name}" in to_flat_dict(Params())]
          for section, cls in SECTIONS.items()}
sections = st.sampled_from(sorted(SCHEMA))


@st.composite
def params_mappings(draw):
    """Some sections with some known keys (and now and then an unknown one) set to anything."""
    mapping = {}
    for section in draw(st.lists(sections, max_size=3, unique=True)):
        keys = st.sampled_from(SCHEMA[section] + ["no_such_key"])
        mapping[section] = draw(st.dictionaries(keys, values, max_size=3))
    return mapping


def _as_written(parsed, written) -> bool:
    """Equal, and a boolean only where a boolean was written (1 == True in Python)."""
    if isinstance(written, list):
        return isinstance(parsed, tuple) and len(parsed) == len(written) and all(
            _as_written(p, w) for p, w in zip(parsed, written, strict=True))
    return parsed == written and isinstance(parsed, bool) == isinstance(written, bool)


@PROPERTY
@given(params_mappings())
def test_any_mapping_is_refused_naming_a_key_or_parsed_as_written(mapping):
    try:
        params = parse_params(mapping)
    except ConfigError as err:
        message = str(err)
        assert "\n" not in message
        assert message.split(":")[0].split(".")[0].split("[")[0] in SCHEMA
        return
    flat = to_flat_dict(params)
    for section, entries in mapping.items():
        for key, value in entries.items():
            parsed = flat[f"{section}.{key}"]
            assert _as_written(parsed, value)
            for item in parsed if isinstance(parsed, tuple) else (parsed,):
                assert not isinstance(item, float) or math.isfinite(item)


@PROPERTY
@given(st.text(max_size=300))
def test_any_text_file_loads_or_is_one_configerror_line(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("p") / "params.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_params(path)
    except ConfigError as err:
        assert "\n" not in str(err)


@PROPERTY
@given(st.binary(max_size=300))
def test_any_bytes_file_loads_or_is_one_configerror_line(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("p") / "params.yaml"
    path.write_bytes(raw)
    try:
        load_params(path)
    except ConfigError as err:
        assert "\n" not in str(err)


@PROPERTY
@given(st.sampled_from(SEED_KEYS), st.integers(-2**70, 2**70))
def test_a_seed_is_accepted_exactly_in_numpys_range(key, value):
    section, name = key
    try:
        parsed = getattr(getattr(parse_params({section: {name: value}}), section), name)
    except ConfigError:
        assert not 0 <= value < 2**32
    else:
        assert 0 <= value < 2**32 and parsed == value


@PROPERTY
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_a_learning_rate_is_accepted_exactly_when_finite_and_positive(value):
    try:
        parsed = parse_params({"train": {"learning_rate": value}}).train.learning_rate
    except ConfigError:
        assert not (math.isfinite(value) and value > 0)
    else:
        assert parsed == value and math.isfinite(parsed) and parsed > 0


@PROPERTY
@given(params_mappings())
def test_yaml_written_by_dvc_loads_as_the_same_params(tmp_path_factory, mapping):
    """A file DVC's writer (YAML 1.2) produced is read alike by DVC and by this loader."""
    from dvc.utils.serialize import dump_yaml, load_yaml

    path = tmp_path_factory.mktemp("p") / "params.yaml"
    dump_yaml(path, mapping)
    try:
        ours = read_params_mapping(path)
    except ConfigError as err:  # only for a string DVC writes plain that YAML 1.1 reads else
        assert "duplicate" not in str(err)
        return
    theirs = load_yaml(path)
    assert _canonical(ours) == _canonical(theirs) or _has_ambiguous(ours)


def _canonical(value):
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return (type(value).__name__, value) if isinstance(value, (bool, int, float)) else value


def _has_ambiguous(value) -> bool:
    from mnist_vae.config import _Ambiguous

    if isinstance(value, dict):
        return any(_has_ambiguous(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_ambiguous(v) for v in value)
    return isinstance(value, _Ambiguous)


@pytest.mark.parametrize(("train", "message"), [
    ({"precision": "bfloat16"}, "train.precision: must be one of 'float32', 'mixed_bfloat16', "
                                "'auto', got 'bfloat16'"),
    ({"time_budget_s": 0}, "train.time_budget_s: must be > 0, or null for off, got 0"),
    ({"time_budget_s": "10 min"}, "train.time_budget_s: must be a number or null"),
    ({"precision": "auto", "distribute": "mirrored"}, "train.precision: auto times each machine"),
    ({"time_budget_s": 600, "distribute": "multi_worker"},
     "train.time_budget_s: each worker would time its own epochs"),
])
def test_precision_and_time_budget_are_refused_naming_the_key(train, message):
    with pytest.raises(ConfigError) as err:
        parse_params({"train": train})
    assert str(err.value).startswith(message)


def test_precision_and_time_budget_accept_their_values():
    train = parse_params({"train": {"precision": "mixed_bfloat16", "time_budget_s": 600}}).train
    assert train.precision == "mixed_bfloat16" and train.time_budget_s == 600.0
    assert parse_params({"train": {"time_budget_s": None}}).train.time_budget_s is None
    mirrored = parse_params({"train": {"time_budget_s": 600, "distribute": "mirrored"}}).train
    assert mirrored.time_budget_s == 600.0  # one process times one clock
