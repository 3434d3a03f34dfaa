"""Typed, validated settings: `params.yaml` parsed into frozen dataclasses.

Every tunable and path lives in `params.yaml`; stages read it only through `load_params`.
Each section is a frozen dataclass whose field annotations are the schema: unknown keys,
wrong types and out-of-range values fail with a message naming the key path.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

PARAMS_FILE = "params.yaml"
SEED_LIMIT = 2**32  # numpy's legacy seeding (Keras' set_random_seed) takes seeds below this
MNIST_TRAIN_IMAGES = 60_000
MNIST_TEST_IMAGES = 10_000


class YamlLoader(yaml.SafeLoader):
    """SafeLoader that reads scalars as YAML 1.2 (DVC's reader) does, or refuses them.

    PyYAML follows YAML 1.1: a float needs a dot, so `5e-05` (how `dvc exp run -S` writes
    0.00005 back) would load as a string; `yes`/`on` are booleans and `010` is octal, where
    YAML 1.2 reads the strings "yes"/"on" and the integer 10. Such scalars load as
    `_Ambiguous` and are refused by the schema, naming the key. A mapping that repeats a key
    is refused here, as DVC refuses it, instead of the last value silently winning.
    """

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} on lines {seen[key]} and {line}: DVC "
                    "refuses such a file; keep one of them", key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _Ambiguous(str):
    """A scalar that YAML 1.1 (PyYAML) and YAML 1.2 (DVC) read differently."""

    def problem(self) -> str:
        if _YAML11_BOOL.match(self):
            return (f"{self!s} is a boolean in YAML 1.1 but the string {self!r} for DVC (YAML "
                    f"1.2); write true or false (or quote it if a string is meant)")
        return (f"{self!s} is a number that YAML 1.1 and DVC (YAML 1.2) read differently; "
                f"write it in decimal without leading zeros (or quote it if a string is meant)")


_YAML11_BOOL = re.compile(r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF)$")
_YAML12_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_YAML11_NUMBER = re.compile(r"^(?:[-+]?0[0-9_]+|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?)$")
_AMBIGUOUS_TAG = "tag:mnist-vae,2026:yaml11-only"

YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
YamlLoader.add_implicit_resolver("tag:yaml.org,2002:bool", _YAML12_BOOL, list("tTfF"))
for _regexp, _first in ((_YAML11_BOOL, "yYnNoO"), (_YAML11_NUMBER, "-+0123456789")):
    for _char in _first:  # ahead of PyYAML's own int resolver
        resolvers = YamlLoader.yaml_implicit_resolvers.setdefault(_char, [])
        resolvers.insert(0, (_AMBIGUOUS_TAG, _regexp))
YamlLoader.add_constructor(_AMBIGUOUS_TAG, lambda loader, node: _Ambiguous(node.value))
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


class ConfigError(ValueError):
    """A params file that does not match the schema; the message names the key and the fix."""


# --- field constraints -------------------------------------------------------------------

def positive(v: Any) -> str | None:
    return None if v > 0 else "must be > 0"


def non_negative(v: Any) -> str | None:
    return None if v >= 0 else "must be >= 0"


def fraction(v: Any) -> str | None:
    return None if 0 <= v < 1 else "must be in [0, 1)"


def probability(v: Any) -> str | None:
    return None if 0 <= v <= 1 else "must be in [0, 1]"


def seed_range(v: Any) -> str | None:
    return None if 0 <= v < SEED_LIMIT else "must be a seed in [0, 2**32) (numpy's range)"


def all_positive(v: Any) -> str | None:
    return None if all(x > 0 for x in v) else "must contain only values > 0"


def positive_or_off(v: Any) -> str | None:
    return None if v is None or v > 0 else "must be > 0, or null for off"


def non_empty(v: Any) -> str | None:
    return None if len(v) > 0 else "must not be empty"


def at_most(limit: int):
    def check(v: Any) -> str | None:
        return None if v <= limit else f"must be at most {limit:,}"
    return check


def http_urls(v: Any) -> str | None:
    ok = all(u.startswith(("http://", "https://")) for u in v)
    return None if ok else "must contain only http:// or https:// URLs"


def checked(default: Any, *checks, **kwargs) -> Any:
    """A dataclass field with a default and value checks run after type checking."""
    if isinstance(default, (list, dict)):
        raise TypeError("use a tuple default")
    return field(default=default, metadata={"checks": checks}, **kwargs)


# --- sections ----------------------------------------------------------------------------

@dataclass(frozen=True)
class DownloadConfig:
    """Where MNIST comes from; `MNIST_VAE_SOURCE` replaces `mirrors` at run time."""

    mirrors: tuple[str, ...] = checked(
        (
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        non_empty,
        http_urls,
    )
    connect_timeout_s: float = checked(5.0, positive)
    read_timeout_s: float = checked(10.0, positive)


@dataclass(frozen=True)
class PathsConfig:
    """Every file the pipeline reads or writes, relative to the repository root."""

    data: str = "data/mnist.npz"
    provenance: str = "data/provenance.json"
    model: str = "models/vae.keras"
    train_facts: str = "models/train.json"
    progress: str = "models/progress.npz"
    run_id: str = "models/mlflow_run.json"
    checkpoints: str = ".checkpoints"
    dvclive: str = "dvclive"
    classifier: str = "models/classifier.keras"
    classifier_metrics: str = "metrics/classifier.json"
    classifier_facts: str = "metrics/classifier_facts.json"
    metrics: str = "metrics/eval.json"
    eval_facts: str = "metrics/eval_facts.json"
    plots: str = "plots"
    registered: str = "models/registered.json"


# --- sections below are owned by the stage that reads them --------------------------------


@dataclass(frozen=True)
class DataConfig:
    """How the arrays in `paths.data` become training, validation and test sets."""

    val_size: int = checked(5000, positive)
    split_seed: int = checked(0, seed_range)
    train_limit: int = checked(0, non_negative)  # 0 = all; small values for tests and CI
    test_limit: int = checked(0, non_negative)
    binarize: Literal["none", "static", "dynamic"] = "none"

    def __post_init__(self) -> None:
        if self.val_size >= MNIST_TRAIN_IMAGES:
            raise ConfigError(f"data.val_size: {self.val_size} leaves no training images out of "
                              f"MNIST's {MNIST_TRAIN_IMAGES:,}; lower it")
        if self.train_limit > MNIST_TRAIN_IMAGES - self.val_size:
            raise ConfigError(f"data.train_limit: {self.train_limit} is more than the "
                              f"{MNIST_TRAIN_IMAGES - self.val_size:,} training images left after "
                              f"data.val_size; lower it, or 0 for all")
        if self.test_limit > MNIST_TEST_IMAGES:
            raise ConfigError(f"data.test_limit: {self.test_limit} is more than MNIST's "
                              f"{MNIST_TEST_IMAGES:,} test images; lower it, or 0 for all")


Activation = Literal["relu", "leaky_relu", "silu", "gelu", "elu", "tanh"]


def _check_lengths(section: str, lengths: dict[str, int]) -> None:
    """Per-layer lists must line up; raise a message naming the keys."""
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{section}.{k} has {n}" for k, n in lengths.items())
        raise ConfigError(f"{section}: per-layer lists must have the same length ({listed})")


def _check_dropout(section: str, dropout: tuple[float, ...], n_layers: int) -> None:
    """Dropout is either off (empty) or one rate in [0, 1) per conv layer."""
    if dropout and len(dropout) != n_layers:
        raise ConfigError(
            f"{section}.dropout: give one rate per conv layer ({n_layers}) or [] for none, "
            f"got {len(dropout)}"
        )
    if any(not 0 <= r < 1 for r in dropout):
        raise ConfigError(f"{section}.dropout: rates must be in [0, 1), got {list(dropout)}")


@dataclass(frozen=True)
class EncoderConfig:
    """Conv2D stack ('same' padding) -> flatten -> optional dense layers -> mean, log-variance."""

    filters: tuple[int, ...] = checked((32, 64, 128), all_positive)
    kernel_sizes: tuple[int, ...] = checked((3, 3, 3), all_positive)
    strides: tuple[int, ...] = checked((2, 2, 1), all_positive)
    dropout: tuple[float, ...] = ()  # one rate per conv layer, or [] for none
    dense_units: tuple[int, ...] = checked((), all_positive)
    activation: Activation = "relu"
    batch_norm: bool = False  # BatchNormalization after each conv and dense layer

    def __post_init__(self) -> None:
        _check_lengths("model.encoder", {"filters": len(self.filters),
                                         "kernel_sizes": len(self.kernel_sizes),
                                         "strides": len(self.strides)})
        _check_dropout("model.encoder", self.dropout, len(self.filters))


@dataclass(frozen=True)
class DecoderConfig:
    """Dense layers -> reshape -> Conv2DTranspose stack -> logits head.

    The last dense layer has prod(reshape) units. `head: conv` ends in a 1-filter Conv2D (the
    stack must reach 28x28); `head: dense` flattens into Dense(784) and reshapes (the article).
    """

    dense_units: tuple[int, ...] = checked((), all_positive)
    dense_activation: Activation = "relu"
    reshape: tuple[int, ...] = checked((7, 7, 64), all_positive)
    filters: tuple[int, ...] = checked((64, 64, 32, 16), all_positive)
    kernel_sizes: tuple[int, ...] = checked((3, 3, 3, 3), all_positive)
    strides: tuple[int, ...] = checked((1, 1, 2, 2), all_positive)
    dropout: tuple[float, ...] = ()  # one rate per Conv2DTranspose layer, or [] for none
    conv_activation: Activation = "relu"
    batch_norm: bool = False  # BatchNormalization after each dense and Conv2DTranspose layer
    head: Literal["conv", "dense"] = "conv"
    head_kernel_size: int = checked(3, positive)
    # > 0: a local autoregressive head of this width (autoregressive.py) lets each pixel's
    # logit also read the pixels before it; 0: pixels independent given z
    autoregressive_channels: int = checked(0, non_negative)

    def __post_init__(self) -> None:
        if len(self.reshape) != 3:
            raise ConfigError(f"model.decoder.reshape: must be [height, width, channels], "
                              f"got {list(self.reshape)}")
        if self.autoregressive_channels and self.head != "conv":
            raise ConfigError("model.decoder.autoregressive_channels: the autoregressive head "
                              "reads the conv stack's last 28x28 layer; set head: conv, or 0")
        _check_lengths("model.decoder", {"filters": len(self.filters),
                                         "kernel_sizes": len(self.kernel_sizes),
                                         "strides": len(self.strides)})
        _check_dropout("model.decoder", self.dropout, len(self.filters))


@dataclass(frozen=True)
class PriorConfig:
    """p(z): N(0, I) while training; `mixture` then fits a Gaussian mixture to training codes."""

    kind: Literal["standard", "mixture"] = "mixture"
    components: int = checked(50, positive)
    covariance: Literal["full", "diag"] = "full"
    fit_samples: int = checked(1, positive)  # codes z ~ q(z|x) drawn per training image
    fit_iterations: int = checked(200, positive)  # most EM iterations
    # Also fit p(z | digit), one mixture per digit to the codes of that digit's training images,
    # so `vae.sample(n, seed, digit=d)` draws the digit asked for.
    conditional: bool = True
    components_per_digit: int = checked(10, positive)
    digit_codes: Literal["sample", "mean"] = "sample"  # p(z | digit) fitted to z ~ q or its mean
    digit_temperature: float = checked(0.8, positive)  # p(z | digit)'s spread x this (< 1: typical)


@dataclass(frozen=True)
class ModelConfig:
    """The VAE's architecture and likelihood."""

    latent_dim: int = checked(32, positive)
    likelihood: Literal["bernoulli", "gaussian"] = "bernoulli"
    leaky_relu_slope: float = checked(0.3, non_negative)  # used where activation is leaky_relu
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)

    def __post_init__(self) -> None:
        if self.decoder.autoregressive_channels and self.likelihood != "bernoulli":
            raise ConfigError("model.decoder.autoregressive_channels: the autoregressive head "
                              "draws binary pixels; set model.likelihood: bernoulli, or 0")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation of the VAE."""

    seed: int = checked(0, seed_range)
    deterministic: bool = True  # TF op determinism; false is faster (see README)
    jit_compile: bool = False  # XLA; Keras allows it only without op determinism
    batch_size: int = checked(64, positive)
    epochs: int = checked(20, positive)  # the budget; early stopping may end sooner
    learning_rate: float = checked(2e-3, positive)
    lr_schedule: Literal["constant", "cosine"] = "cosine"  # cosine decays to 0 at the budget
    beta: float = checked(1.0, non_negative)  # weight of the KL term
    kl_warmup_epochs: int = checked(2, non_negative)  # KL weight rises linearly 0 -> beta
    patience: int = checked(5, positive)  # epochs without a better val loss before stopping
    progress_samples: int = checked(16, positive)  # fixed latents decoded after each epoch
    # mixed_bfloat16: layers compute in bf16, variables and loss stay float32; auto: bf16 only
    # where the CPU has native bf16 and it measured faster here (precision.py)
    precision: Literal["float32", "mixed_bfloat16", "auto"] = "float32"
    # seconds of training: after epoch 1, plan the epochs that fit and spread the schedule
    # over them; null = off (the result then never depends on the machine's speed)
    time_budget_s: float | None = checked(None, positive_or_off)
    distribute: Literal["none", "mirrored", "multi_worker"] = "none"  # see distribute.py
    collective_timeout_s: int = checked(300, positive)  # multi_worker: a dead peer fails a step

    def __post_init__(self) -> None:
        if self.precision == "auto" and self.distribute != "none":
            raise ConfigError(
                "train.precision: auto times each machine on its own, so workers could pick "
                "different precisions; set float32 or mixed_bfloat16 with train.distribute"
            )
        if self.time_budget_s is not None and self.distribute == "multi_worker":
            raise ConfigError(
                "train.time_budget_s: each worker would time its own epochs and could plan "
                "a different number, leaving the others waiting; set train.epochs instead "
                "with train.distribute: multi_worker"
            )
        if self.jit_compile and self.deterministic:
            raise ConfigError(
                "train.jit_compile: Keras turns XLA off under op determinism; set "
                "train.deterministic: false to use it, or jit_compile: false"
            )


@dataclass(frozen=True)
class ClassifierConfig:
    """The digit classifier that measures sample quality."""

    epochs: int = checked(4, positive)
    batch_size: int = checked(128, positive)
    learning_rate: float = checked(1e-3, positive)
    features: int = checked(128, positive)  # width of the penultimate layer (Frechet features)
    dropout: float = checked(0.25, fraction)
    seed: int = checked(0, seed_range)


@dataclass(frozen=True)
class EvaluateConfig:
    """Test-set likelihood and sample-quality metrics."""

    seed: int = checked(0, seed_range)
    batch_size: int = checked(500, positive)  # images per forward pass
    iwae_samples: int = checked(100, positive)  # k importance samples per image
    iwae_images: int = checked(2000, non_negative, at_most(MNIST_TEST_IMAGES))  # 0 = all
    iwae_max_batch: int = checked(5000, positive)  # images x samples decoded at once (memory)
    iwae_views: Literal["all", "trained"] = "all"  # trained: the IWAE on the trained view only
    # bfloat16: bf16 decoding, the heaviest samples again in float32; auto: bf16 on native bf16
    iwae_precision: Literal["float32", "bfloat16", "auto"] = "float32"
    active_threshold: float = checked(0.01, positive)  # Burda et al.'s covariance criterion
    prior_samples: int = checked(10000, positive)  # N samples from the prior for sample quality
    digit_samples: int = checked(1000, positive)  # samples asked for each digit (p(z | digit))
    style_images: int = checked(100, positive)  # test images of each digit redrawn as 0-9
    confidence: float = checked(0.9, probability)  # "recognisable" = top class prob >= this


@dataclass(frozen=True)
class RenderConfig:
    """The PNG grids people look at."""

    seed: int = checked(0, seed_range)
    scale: int = checked(2, positive)  # each MNIST pixel becomes scale x scale screen pixels
    gutter: int = checked(2, non_negative)  # pixels between tiles
    samples_grid: int = checked(10, positive)  # samples.png is grid x grid
    digit_columns: int = checked(10, positive)  # digits.png: this many draws of each digit 0-9
    style_rows: int = checked(10, positive)  # styles.png: test images (digit r mod 10) redrawn
    reconstruction_rows: int = checked(10, positive)  # one row per digit class (cycling)
    reconstruction_pairs: int = checked(5, positive)  # original|reconstruction pairs per row
    interpolation_rows: int = checked(8, positive)
    interpolation_steps: int = checked(10, positive)  # tiles per walk, endpoints included
    manifold_size: int = checked(15, positive)  # manifold.png is size x size
    manifold_quantile: float = checked(0.95, fraction)  # walk covers the central quantiles
    progress_rows: int = checked(10, positive)  # at most this many epochs (evenly subsampled)


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow experiment and Model Registry settings."""

    experiment: str = checked("mnist-vae", non_empty)
    registered_model: str = checked("mnist-vae", non_empty)
    # the test metric (a key of paths.metrics) that decides who holds the `champion` alias
    champion_metric: str = checked("test/bernoulli/neg_elbo", non_empty)
    champion_direction: Literal["minimize", "maximize"] = "minimize"
    # a challenger is compared with the champion only when these params match (same protocol)
    comparable_on: tuple[str, ...] = ("data.test_limit",)
    # a tracking server that does not answer within this time fails the stage before training
    server_timeout_s: float = checked(3.0, positive)
    # a store down this long mid-run (a restart, a database failover) fails the stage; until
    # then each epoch's metrics are resent
    outage_s: float = checked(30.0, positive)
    serve_max_rows: int = checked(256, positive)  # most latent vectors one request may send


SECTIONS: dict[str, type] = {
    "paths": PathsConfig,
    "download": DownloadConfig,
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "classifier": ClassifierConfig,
    "evaluate": EvaluateConfig,
    "render": RenderConfig,
    "tracking": TrackingConfig,
}


@dataclass(frozen=True)
class Params:
    """The whole of `params.yaml`."""

    paths: PathsConfig = field(default_factory=PathsConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        if self.model.decoder.autoregressive_channels and self.data.binarize == "none":
            raise ConfigError("model.decoder.autoregressive_channels: the head reads the pixels "
                              "before each one as drawn, 0 or 1, so it must train on binary "
                              "images; set data.binarize: dynamic (or static), or 0")


# --- parsing -----------------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Return `value` as type `tp`, or raise ConfigError naming `key`."""
    if isinstance(value, _Ambiguous):
        raise ConfigError(f"{key}: {value.problem()}")
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return parse_section(tp, value, key)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
    elif origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _convert(value, option, key)
            except ConfigError:
                continue
    elif origin is tuple:
        if isinstance(value, (list, tuple)):
            item_type = typing.get_args(tp)[0]
            return tuple(_convert(v, item_type, f"{key}[{i}]") for i, v in enumerate(value))
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{key}: must be a finite number, got {value!r}; write a "
                                  f"number such as 0.001")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is type(None):
        if value is None:
            return None
    else:
        raise TypeError(f"unsupported schema type {tp!r} for {key}")
    raise ConfigError(f"{key}: must be {_type_name(tp)}, got {value!r}")


def parse_section(cls: type, data: Any, prefix: str) -> Any:
    """Build dataclass `cls` from mapping `data`, checking keys, types and ranges."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix}: must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{prefix}.{unknown[0]}: unknown key; allowed keys in {prefix}: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        key = f"{prefix}.{name}"
        converted = _convert(value, hints[name], key)
        for check in fields[name].metadata.get("checks", ()):
            problem = check(converted)
            if problem:
                raise ConfigError(f"{key}: {problem}, got {value!r}")
        values[name] = converted
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{prefix}: {err}") from err


def parse_params(data: Any) -> Params:
    """Validate a whole params mapping (as loaded from YAML)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{PARAMS_FILE}: must be a mapping of sections, got {data!r}")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            f"{unknown[0]}: unknown section; allowed sections: {', '.join(SECTIONS)}"
        )
    return Params(**{name: parse_section(cls, data.get(name), name)
                     for name, cls in SECTIONS.items()})


def read_params_mapping(path: str | Path = PARAMS_FILE) -> Any:
    """The raw mapping in a params file or overlay, unvalidated; the only place YAML is read."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; run from the repository root") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at "
                          f"offset {err.start}); it must be a YAML text file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        return yaml.load(text, Loader=YamlLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {_one_line(err)}") from None


def _one_line(err: yaml.YAMLError) -> str:
    """PyYAML's several-line message as one line: the problem and where it is."""
    problem = getattr(err, "problem", None)
    mark = getattr(err, "problem_mark", None)
    if problem is None:
        return " ".join(str(err).split())
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    context = getattr(err, "context", None)
    return f"{context + ': ' if context else ''}{problem}{where}"


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate `params.yaml`."""
    return parse_params(read_params_mapping(path))


def to_flat_dict(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a config into dotted keys (`train.batch_size`), for logging."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.update(to_flat_dict(value, key + "."))
        else:
            out[key] = value
    return out
