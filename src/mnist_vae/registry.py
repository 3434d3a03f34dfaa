"""Model Registry: the VAE as an MLflow model, its versions, aliases, and loading them back.

One MLflow model per trained VAE, loadable two ways:
- the Keras flavour (`data/model.keras`, MLflow's own Keras integration): the VAE itself,
  through `load("champion")` (or `mlflow.keras.load_model` after `import mnist_vae.model`);
- a `python_function` flavour whose loader is this module: a digit generator that
  `mlflow models serve` exposes. Input: latent vectors, float32 [N, latent_dim]; a model with
  p(z | digit) declares the columns `z` (one latent vector a row) or `digit` and `seed`
  (records {"digit": 0-9, "seed": n >= 0}, one image each); output: pixel intensities in
  [0, 1], float32 [N, 28, 28]. The package travels in `code/`, so a fresh
  process (the scoring server) can import it.

Every evaluated model becomes a new version of `tracking.registered_model` with alias
`challenger`; `champion` moves to it when its `tracking.champion_metric` beats the champion's
on the same evaluation protocol (`tracking.comparable_on`).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
from pathlib import Path
from typing import Any, NoReturn

import keras
import mlflow
import numpy as np
import pandas as pd
import tensorflow as tf
from mlflow import pyfunc
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.models.model import MLMODEL_FILE_NAME, ModelInfo
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import scoring_server
from mlflow.tracking import MlflowClient
from mlflow.types.schema import Array, ColSpec, DataType, Schema, TensorSpec

from mnist_vae import serving, tracking_store
from mnist_vae.config import Params, TrackingConfig, to_flat_dict
from mnist_vae.model import VAE, load_vae
from mnist_vae.prior import check_digit

CHALLENGER = "challenger"
CHAMPION = "champion"
MODEL_NAME = "model"  # the logged model's name inside its run
KERAS_FILE = "model.keras"  # in the model's data/ directory, where mlflow.keras puts it
TAG_METRIC = "champion_metric"
TAG_PROTOCOL = "protocol."  # + a `tracking.comparable_on` key
DEFAULT_NAME = TrackingConfig().registered_model  # params.yaml's tracking.registered_model
REQUIREMENTS = ("mlflow", "tensorflow", "keras", "numpy", "pyyaml", "pandas")


ABSENT = ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST")  # "no such alias / model"


class RegistryError(RuntimeError):
    """Registering or loading failed; the message names the model and the fix."""


class ChampionUnreadable(RegistryError):
    """The registry did not say which version is champion (as opposed to: none is)."""


# --- the MLflow model flavour: Keras model + digit generator ---------------------------------

def generator_signature(latent_dim: int, draws_digits: bool = False) -> ModelSignature:
    """Latent vectors [N, latent_dim] in, images [N, 28, 28] in [0, 1] out. A model that also
    draws chosen digits takes optional columns, so the MLflow UI shows both request forms: `z`
    (a latent vector; doubles, since MLflow will not narrow JSON's float64 to float32) or
    `digit` and `seed` (longs). The generator and the serving gate check which form came."""
    image = Schema([TensorSpec(np.dtype(np.float32), (-1, 28, 28))])
    if not draws_digits:
        return ModelSignature(Schema([TensorSpec(np.dtype(np.float32), (-1, latent_dim))]), image)
    return ModelSignature(Schema([ColSpec(Array(DataType.double), serving.LATENT, required=False),
                                  *(ColSpec(DataType.long, name, required=False)
                                    for name in serving.WHOLE)]), image)


def pip_requirements() -> list[str]:
    """This environment's exact versions of what loading and serving the model needs."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in REQUIREMENTS]


def save_model(path: str, vae: VAE, max_rows: int, mlflow_model: Model | None = None,
               signature: ModelSignature | None = None) -> None:
    """Write the MLflow model to `path` (the flavour entry point that `Model.log` calls)."""
    mlflow_model = mlflow_model or Model()
    mlflow.keras.save_model(vae, path, mlflow_model=mlflow_model,  # it takes tensor inputs only
                            signature=generator_signature(vae.latent_dim),
                            pip_requirements=pip_requirements())
    package = Path(__file__).resolve().parent  # src/mnist_vae (a namespace package)
    shutil.copytree(package, Path(path) / "code" / package.name,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # Replace the Keras flavour's pyfunc (which would call VAE.predict) by the generator.
    pyfunc.add_to_model(mlflow_model, loader_module=__name__, data="data", code="code",
                        conda_env="conda.yaml", python_env="python_env.yaml",
                        model_config={"max_rows": max_rows})
    mlflow_model.signature = signature or generator_signature(vae.latent_dim, vae.draws_digits)
    mlflow_model.save(str(Path(path) / MLMODEL_FILE_NAME))


def log_model(vae_path: Path, cfg: TrackingConfig) -> ModelInfo:
    """Log the `.keras` file at `vae_path` as an MLflow model of the active run."""
    vae = load_vae(vae_path)
    return Model.log(artifact_path=None, name=MODEL_NAME, flavor=sys.modules[__name__],
                     flavor_name="mnist_vae", vae=vae, max_rows=cfg.serve_max_rows,
                     signature=generator_signature(vae.latent_dim, vae.draws_digits))


def _load_pyfunc(data_path: str, model_config: dict[str, Any] | None = None) -> DigitGenerator:
    """pyfunc loader: what `mlflow.pyfunc.load_model` and `mlflow models serve` call."""
    max_rows = int((model_config or {}).get("max_rows", TrackingConfig().serve_max_rows))
    generator = DigitGenerator(load_vae(Path(data_path) / KERAS_FILE), max_rows)
    if os.environ.get(scoring_server._SERVER_MODEL_PATH):  # inside `mlflow models serve`
        check = (serving.check_column_request if generator.vae.draws_digits
                 else serving.check_json_numbers)
        serving.install_request_gate(serving.max_body_bytes(max_rows, generator.vae.latent_dim),
                                     check)
    return generator


class DigitGenerator:
    """Latent vectors, or digit records, -> 28x28 digit images; bad input raises a
    400-mapped MlflowException."""

    def __init__(self, vae: VAE, max_rows: int):
        self.vae = vae
        self.max_rows = max_rows
        # One graph for every batch size: a tenth of the eager decoder's time per request.
        # An autoregressive decoder draws each image pixel by pixel instead (`vae.decode`).
        self._decode = vae.decode if vae.is_autoregressive else tf.function(
            lambda z: keras.ops.sigmoid(vae.decoder(z, training=False)),
            input_signature=[tf.TensorSpec([None, vae.latent_dim], tf.float32)])

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        """float32 [N, latent_dim] (or a `z` column of them), or records {"digit", "seed"},
        -> float32 [N, 28, 28] pixel intensities in [0, 1]; record i is
        `vae.sample(1, seed_i, digit=digit_i)`."""
        records = self._digit_records(model_input)
        if records is not None:
            return np.concatenate([np.asarray(self.vae.sample(1, seed, digit=digit))
                                   for digit, seed in records])[..., 0]
        z = self._checked(model_input)
        return np.asarray(self._decode(z))[..., 0]

    def _digit_records(self, model_input: Any) -> list[tuple[int, int]] | None:
        """(digit, seed) per record when the input asks for digits, else None."""
        if isinstance(model_input, dict) and "digit" in model_input:  # {"inputs": {"digit": ..}}
            model_input = pd.DataFrame({k: np.atleast_1d(v) for k, v in model_input.items()})
        if not (hasattr(model_input, "columns") and "digit" in model_input.columns):
            return None
        if not self.vae.draws_digits:
            _bad("this model cannot draw a chosen digit (no p(z | digit)); send latent vectors")
        extra = sorted(set(map(str, model_input.columns)) - {"digit", "seed"})
        if extra == [serving.LATENT]:
            _bad(f"send latent vectors ({serving.LATENT}) or digit records (digit, seed), not "
                 f"both in one request")
        if extra:
            _bad(f"digit records take the fields digit and seed only; got also {extra}")
        if not 1 <= len(model_input) <= self.max_rows:
            _bad(f"send between 1 and {self.max_rows} records per request; got "
                 f"{len(model_input)}")
        seeds = model_input["seed"] if "seed" in model_input.columns else [0] * len(model_input)
        records = []
        for digit, seed in zip(model_input["digit"], seeds, strict=True):
            try:
                digit = check_digit(digit.item() if isinstance(digit, np.generic) else digit)
            except ValueError as err:
                _bad(str(err))
            if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) \
                    or seed < 0:
                _bad(f"seed must be a whole number >= 0, got {seed!r}")
            records.append((digit, int(seed)))
        return records

    def _checked(self, model_input: Any) -> np.ndarray:
        if hasattr(model_input, "columns") and self.vae.draws_digits:
            model_input = self._latent_column(model_input)
        if hasattr(model_input, "to_numpy"):  # a DataFrame: one column per latent dimension
            model_input = model_input.to_numpy()
        if isinstance(model_input, dict) and len(model_input) == 1:  # {"inputs": {"z": ...}}
            model_input = next(iter(model_input.values()))
        width = self.vae.latent_dim
        try:
            z = np.asarray(model_input)
        except (TypeError, ValueError):
            z = np.asarray(None)  # ragged rows
        if z.dtype.kind not in "iuf":  # strings, booleans, None and ragged rows are refused
            _bad(f"inputs must be numbers: a list of latent vectors, each of {width} numbers")
        with np.errstate(over="ignore"):  # beyond float32's range becomes inf: refused below
            z = z.astype(np.float32)
        if z.ndim != 2 or z.shape[1] != width:
            _bad(f"inputs must be a list of latent vectors of width {width}; got shape "
                 f"{list(z.shape)}")
        if not 1 <= len(z) <= self.max_rows:
            _bad(f"send between 1 and {self.max_rows} latent vectors per request; got {len(z)}")
        if not np.isfinite(z).all():
            _bad("inputs must be finite numbers (no NaN or infinity)")
        return z

    def _latent_column(self, frame: pd.DataFrame) -> list[Any]:
        """The rows of the `z` column of a frame checked against the column signature."""
        if list(map(str, frame.columns)) != [serving.LATENT]:
            _bad(f"send latent vectors as the column {serving.LATENT} (one vector a row, e.g. "
                 f"pd.DataFrame({{'{serving.LATENT}': list(vectors)}})) or digit records "
                 f"(digit, seed)")
        return [np.asarray(v).tolist() for v in frame[serving.LATENT]]


def _bad(message: str) -> NoReturn:
    raise MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


# --- versions and aliases -------------------------------------------------------------------

def register(info: ModelInfo, run_id: str, metrics: dict[str, float], params: Params,
             ) -> ModelVersion:
    """A new version with `challenger`; `champion` too when it beats the champion.

    The metric is checked before anything is created, and a version whose aliases could
    not be set is deleted again: a failure leaves no version behind.
    """
    cfg = params.tracking
    name = cfg.registered_model
    check_metric(metrics, cfg)
    client = MlflowClient()
    _ensure_registered_model(client, cfg)
    value = metrics[cfg.champion_metric]
    before = alias_versions(client, name)
    version = mlflow.register_model(info.model_uri, name,
                                    tags=version_tags(run_id, value, params))
    try:
        client.update_model_version(name, version.version, description=(
            f"VAE from run {run_id}: {cfg.champion_metric} = {value:.4f} on the test set."))
        client.set_registered_model_alias(name, CHALLENGER, version.version)
        if should_promote(client, version.version, value, params):
            client.set_registered_model_alias(name, CHAMPION, version.version)
            print(f"registry: {name} version {version.version} is the new {CHAMPION} "
                  f"({cfg.champion_metric} = {value:.4f})")
        settle_champion(client, params)
    except BaseException:
        undo_registration(client, name, version.version, before)
        raise
    return client.get_model_version(name, version.version)


def check_metric(metrics: dict[str, float], cfg: TrackingConfig) -> None:
    """Raise RegistryError unless the metric that ranks versions is among the test metrics."""
    if cfg.champion_metric not in metrics:
        raise RegistryError(
            f"tracking.champion_metric {cfg.champion_metric!r} is not among the test metrics; "
            f"use one of: {', '.join(sorted(metrics)[:20])}"
        )


def version_tags(run_id: str, value: float, params: Params) -> dict[str, str]:
    """Run id, the ranking metric and its value, and the evaluation protocol it came from."""
    cfg = params.tracking
    flat = to_flat_dict(params)
    tags = {"run_id": run_id, TAG_METRIC: cfg.champion_metric, cfg.champion_metric: repr(value)}
    for key in cfg.comparable_on:
        tags[TAG_PROTOCOL + key] = str(flat.get(key))
    return tags


def _ensure_registered_model(client: MlflowClient, cfg: TrackingConfig) -> None:
    try:
        client.get_registered_model(cfg.registered_model)
    except MlflowException:
        try:
            client.create_registered_model(cfg.registered_model, description=(
                "Convolutional VAE that draws MNIST digits. Every evaluated training run adds "
                f"a version with alias `{CHALLENGER}`; `{CHAMPION}` is the best by "
                f"{cfg.champion_metric} ({cfg.champion_direction}). Serve it with "
                f"`mlflow models serve -m models:/{cfg.registered_model}@{CHAMPION} "
                "--env-manager local`: latent vectors in, 28x28 images out."))
        except MlflowException:  # created concurrently
            client.get_registered_model(cfg.registered_model)


def champion(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version holding `champion`, or None when no version holds it.

    Raises ChampionUnreadable when the registry does not answer (a server error, a 403):
    "no champion" must never be guessed from a failed read.
    """
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as err:
        if err.error_code in ABSENT:
            return None
        raise ChampionUnreadable(f"cannot read {name}@{CHAMPION}: {err.message}") from err


def should_promote(client: MlflowClient, version: str, value: float, params: Params) -> bool:
    """Whether the new version takes `champion`: none yet, or strictly better, same protocol."""
    cfg = params.tracking
    try:
        current = champion(client, cfg.registered_model)
    except ChampionUnreadable as err:
        print(f"registry: version {version} stays {CHALLENGER}: {err}")
        return False
    if current is None or str(current.version) == str(version):
        return True
    mine = version_tags("", value, params)
    differing = [k for k in cfg.comparable_on
                 if current.tags.get(TAG_PROTOCOL + k) != mine[TAG_PROTOCOL + k]]
    if differing:
        print(f"registry: version {version} keeps {CHALLENGER} only: its evaluation differs "
              f"from {CHAMPION} (version {current.version}) in {', '.join(differing)}; move "
              f"the alias by hand if it should win")
        return False
    theirs = _champion_value(client, current, cfg.champion_metric)
    if theirs is None:
        print(f"registry: {CHAMPION} (version {current.version}) has no "
              f"{cfg.champion_metric}; version {version} takes it")
        return True
    better = value < theirs if cfg.champion_direction == "minimize" else value > theirs
    if not better:
        print(f"registry: version {version} stays {CHALLENGER}: {cfg.champion_metric} "
              f"{value:.4f} does not beat {CHAMPION} (version {current.version}) at {theirs:.4f}")
    return better


def _champion_value(client: MlflowClient, version: ModelVersion, key: str) -> float | None:
    """The champion's value of `key`: its tag, else its run's metric."""
    if key in version.tags:
        return float(version.tags[key])
    try:
        return client.get_run(version.run_id).data.metrics.get(key)
    except MlflowException:
        return None


def record(version: ModelVersion, run_id: str, client: MlflowClient | None = None,
           ) -> dict[str, Any]:
    """What `register` did, for `paths.registered`: the run, model name, version, aliases."""
    client = client or MlflowClient()
    current = client.get_model_version(version.name, version.version)
    return {"run_id": run_id, "model": version.name, "version": int(version.version),
            "aliases": sorted(current.aliases),
            "tracking_uri": tracking_store.redact(mlflow.get_tracking_uri())}


# --- promotion as compare-and-set -------------------------------------------------------------

def settle_champion(client: MlflowClient, params: Params, rounds: int = 5) -> None:
    """Re-read after promoting: move `champion` to the best comparable version, until a re-read
    agrees. Two pipelines promoting at once both end here, so the alias ends on the best
    version whatever the interleaving (the last writer re-reads after its write)."""
    name = params.tracking.registered_model
    for _ in range(rounds):
        try:
            current = champion(client, name)
        except ChampionUnreadable as err:
            print(f"registry: not checking {CHAMPION} again: {err}")
            return
        best = best_version(client, current, params.tracking) if current else None
        if best is None or str(best.version) == str(current.version):
            return
        client.set_registered_model_alias(name, CHAMPION, best.version)
        print(f"registry: {CHAMPION} moved from version {current.version} to version "
              f"{best.version}, better by {params.tracking.champion_metric}")


def best_version(client: MlflowClient, current: ModelVersion,
                 cfg: TrackingConfig) -> ModelVersion | None:
    """The version strictly better than `current` (same metric and protocol), if any."""
    theirs = _champion_value(client, current, cfg.champion_metric)
    if theirs is None:
        return None
    protocol = {k: v for k, v in current.tags.items() if k.startswith(TAG_PROTOCOL)}
    sign = 1.0 if cfg.champion_direction == "minimize" else -1.0
    best, best_key = None, (sign * theirs, int(current.version))
    for version in client.search_model_versions(f"name = '{cfg.registered_model}'"):
        tags = version.tags
        if (tags.get(TAG_METRIC) != cfg.champion_metric or cfg.champion_metric not in tags
                or any(tags.get(k) != v for k, v in protocol.items())):
            continue
        key = (sign * float(tags[cfg.champion_metric]), int(version.version))
        if key[0] < best_key[0] or (best is not None and key < best_key):
            best, best_key = version, key
    return best


def alias_versions(client: MlflowClient, name: str) -> dict[str, str]:
    """Which version holds `challenger` and `champion` now ({} for a new model)."""
    try:
        return dict(client.get_registered_model(name).aliases)
    except MlflowException:
        return {}


def undo_registration(client: MlflowClient, name: str, version: str,
                      before: dict[str, str]) -> None:
    """Put `challenger`/`champion` back where they were and delete the half-made version.

    Only aliases still on this version are moved (another pipeline may have moved one
    since). Best effort (the server may be gone): what cannot be undone is named on stderr.
    """
    now = alias_versions(client, name)
    for alias in (CHALLENGER, CHAMPION):
        if now and str(now.get(alias)) != str(version):
            continue
        try:
            if alias in before:
                client.set_registered_model_alias(name, alias, before[alias])
            else:
                client.delete_registered_model_alias(name, alias)
        except MlflowException as err:
            if err.error_code not in ABSENT:
                print(f"registry: could not restore {name}@{alias} (was version "
                      f"{before.get(alias, 'none')}): {err.message}", file=sys.stderr)
    try:
        client.delete_model_version(name, version)
    except MlflowException as err:
        print(f"registry: version {version} of {name} is left over; delete it "
              f"(`MlflowClient().delete_model_version`): {err.message}", file=sys.stderr)


# --- loading --------------------------------------------------------------------------------

def model_uri(ref: str = CHAMPION, name: str = DEFAULT_NAME) -> str:
    """`champion` -> models:/name@champion; `3` -> models:/name/3; URIs pass through."""
    if ":/" in ref:
        return ref
    return f"models:/{name}/{ref}" if ref.isdigit() else f"models:/{name}@{ref}"


def load(ref: str = CHAMPION, name: str = DEFAULT_NAME, tracking_uri: str | None = None) -> VAE:
    """The registered VAE (alias, version number or models:/ URI) with its library API.

    The store is `tracking_uri`, else the pipeline's (MLFLOW_TRACKING_URI or the repository's
    embedded store).
    """
    uri = _use_store_for(ref, name, tracking_uri)
    try:
        model = mlflow.keras.load_model(uri, load_model_kwargs={"compile": False})
    except MlflowException as err:
        where = tracking_store.redact(mlflow.get_tracking_uri())
        raise RegistryError(f"cannot load {uri} from {where}: {err.message}") from err
    if not isinstance(model, VAE):
        raise RegistryError(f"{uri} holds a {type(model).__name__}, not a mnist_vae VAE")
    return model


def load_generator(ref: str = CHAMPION, name: str = DEFAULT_NAME,
                   tracking_uri: str | None = None) -> pyfunc.PyFuncModel:
    """The registered model as the pyfunc the scoring server runs (latents -> images)."""
    return pyfunc.load_model(_use_store_for(ref, name, tracking_uri))


def _use_store_for(ref: str, name: str, tracking_uri: str | None) -> str:
    default = tracking_store.tracking_uri(tracking_store.repo_root())
    tracking_store.use_store(tracking_uri or default)
    return model_uri(ref, name)
