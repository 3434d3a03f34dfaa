"""Training the VAE: a resumable, deterministic Keras `fit` with epoch bookkeeping.

The input pipeline makes each epoch's order and each batch's binarisation a pure function of
(seed, epoch, step), and the checkpoint holds every variable that changes while training (the
weights, the optimizer, the dropout and sampling RNG states), so a run resumed from epoch k
replays exactly what an uninterrupted run would have done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import keras
import numpy as np
import tensorflow as tf

from mnist_vae import data as data_module
from mnist_vae import losses as losses_module
from mnist_vae import model as model_module
from mnist_vae.config import DataConfig, ModelConfig, Params, PriorConfig, TrainConfig
from mnist_vae.data import Splits
from mnist_vae.files import atomic_path
from mnist_vae.model import VAE, build_vae, count_params
from mnist_vae.prior import (
    DIGITS,
    GaussianMixture,
    fit_digit_mixtures,
    fit_mixture,
    require_enough_codes,
)

CHECKPOINT_FILE = "checkpoint.npz"
EVAL_BATCH = 500
METRICS = ("loss", "reconstruction", "kl")
DATA_KEYS = ("val_size", "split_seed", "train_limit", "binarize")  # the data params training reads


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class CheckpointMismatch(RuntimeError):
    """A checkpoint that does not fit the model being trained."""


class EpochLogger(Protocol):
    """Where per-epoch records go (dvclive in the stage; a list in tests)."""

    def log_epoch(self, record: dict[str, float]) -> None: ...


# --- determinism -------------------------------------------------------------------------

def configure_determinism(cfg: TrainConfig) -> None:
    """Seed Python, NumPy, TF and Keras; with `deterministic`, make TF ops deterministic."""
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()


# --- input pipeline ----------------------------------------------------------------------

def steps_per_epoch(n_images: int, batch_size: int) -> int:
    """Full batches per epoch (the remainder, different each epoch, is dropped)."""
    steps = n_images // batch_size
    if steps == 0:
        raise ValueError(
            f"train.batch_size: {batch_size} is larger than the {n_images} training images; "
            "lower it or raise data.train_limit"
        )
    return steps


def training_batches(x: np.ndarray, cfg: TrainConfig, dynamic_binarize: bool,
                     start_epoch: int = 0) -> tf.data.Dataset:
    """Shuffled batches for epochs start_epoch .. cfg.epochs - 1, a pure function of the seed.

    Epoch e's order comes from a stateless RNG keyed by (seed, e); with dynamic binarisation,
    batch s of epoch e is resampled from a stateless RNG keyed by (seed, global step).
    """
    images = tf.constant(x, tf.float32)
    n, batch = len(x), cfg.batch_size
    steps = steps_per_epoch(n, batch)
    shuffle_seed = tf.constant([cfg.seed, 0], tf.int64)
    binarize_seed = tf.constant([cfg.seed, 1], tf.int64)

    def epoch_batches(epoch):
        seed = tf.random.experimental.stateless_fold_in(shuffle_seed, epoch)
        order = tf.argsort(tf.random.stateless_uniform([n], seed=seed))
        order = tf.reshape(order[: steps * batch], [steps, batch])
        global_steps = epoch * steps + tf.range(steps, dtype=tf.int64)
        return tf.data.Dataset.from_tensor_slices((global_steps, order))

    def gather(global_step, index):
        batch_images = tf.gather(images, index)
        if dynamic_binarize:
            seed = tf.random.experimental.stateless_fold_in(binarize_seed, global_step)
            noise = tf.random.stateless_uniform(tf.shape(batch_images), seed=seed)
            batch_images = tf.cast(noise < batch_images, tf.float32)
        return batch_images

    options = tf.data.Options()
    options.autotune.enabled = False  # its thread made each fit() end wait 25-60 s; no speed gain
    epochs = tf.data.Dataset.range(start_epoch, cfg.epochs).with_options(options)
    return epochs.flat_map(epoch_batches).map(gather).prefetch(2)


def validation_images(splits: Splits, data_cfg: DataConfig) -> np.ndarray:
    """The validation set as the model is scored on it: binarised once when training is dynamic."""
    if data_cfg.binarize == "dynamic":
        return data_module.binarize(splits.x_val, data_cfg.split_seed + 1)
    return splits.x_val


def learning_rate(cfg: TrainConfig, steps: int):
    """A constant rate, or cosine decay from `learning_rate` to 0 over the epoch budget."""
    if cfg.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(cfg.learning_rate, cfg.epochs * steps)
    return cfg.learning_rate


def compiled_vae(model_cfg: ModelConfig, cfg: TrainConfig, steps: int) -> VAE:
    """A fresh VAE compiled with Adam, beta and the KL warm-up, ready for `fit`."""
    model = build_vae(model_cfg)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate(cfg, steps)),
        beta=cfg.beta,
        kl_warmup_steps=cfg.kl_warmup_epochs * steps,
        jit_compile=cfg.jit_compile,
    )
    model.optimizer.build(model.trainable_variables)
    return model


# --- checkpoints -------------------------------------------------------------------------

@dataclass
class TrainState:
    """Everything besides variables that a resumed run needs; JSON in the checkpoint."""

    epochs_done: int = 0
    best_epoch: int = 0
    best_val_loss: float = math.inf
    stale_epochs: int = 0
    train_seconds: float = 0.0
    train_cpu_seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)

    def finished(self, cfg: TrainConfig) -> bool:
        return self.epochs_done >= cfg.epochs or self.stale_epochs >= cfg.patience


def checkpoint_key(params: Params, data_path: str | Path) -> str:
    """Names the checkpoint directory: the params, data and code that determine training."""
    digest = hashlib.sha256()
    settings = {name: dataclasses.asdict(getattr(params, name)) for name in ("model", "train")}
    settings["data"] = {k: getattr(params.data, k) for k in DATA_KEYS}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    digest.update(_file_sha256(Path(data_path)).encode())
    for module in (data_module, losses_module, model_module):
        digest.update(Path(module.__file__).read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(path: Path, model: VAE, state: TrainState,
                    best_weights: list[np.ndarray], progress: list[np.ndarray]) -> None:
    """Write the whole training state to one file, atomically (temp file + rename)."""
    arrays: dict[str, Any] = {"state": np.array(json.dumps(dataclasses.asdict(state)))}
    for prefix, variables in (("model", model.variables),
                              ("optimizer", model.optimizer.variables)):
        arrays.update({f"{prefix}/{i}": np.asarray(v) for i, v in enumerate(variables)})
    arrays.update({f"best/{i}": w for i, w in enumerate(best_weights)})
    arrays["progress"] = np.stack(progress) if progress else np.zeros((0, 0, 28, 28), "float32")
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())


def load_checkpoint(path: Path, model: VAE) -> tuple[TrainState, list[np.ndarray], list]:
    """Restore model and optimizer variables; return the state, best weights and progress."""
    with np.load(path) as npz:
        for prefix, variables in (("model", model.variables),
                                  ("optimizer", model.optimizer.variables)):
            saved = [npz[f"{prefix}/{i}"] for i in range(_count(npz, prefix))]
            if [s.shape for s in saved] != [tuple(v.shape) for v in variables]:
                raise CheckpointMismatch(
                    f"{path}: its {prefix} variables do not fit this model; delete "
                    f"{path.parent} to start over"
                )
            for variable, value in zip(variables, saved, strict=True):
                variable.assign(value)
        state = TrainState(**json.loads(str(npz["state"])))
        best = [npz[f"best/{i}"] for i in range(_count(npz, "best"))]
        progress = list(npz["progress"])
    return state, best, progress


def _count(npz, prefix: str) -> int:
    return sum(1 for k in npz.files if k.startswith(prefix + "/"))


# --- the epoch bookkeeping ---------------------------------------------------------------

class EpochBookkeeper(keras.callbacks.Callback):
    """After each epoch: NaN guard, progress image, early stopping, checkpoint, metrics log."""

    def __init__(self, cfg: TrainConfig, state: TrainState, best_weights: list[np.ndarray],
                 progress: list[np.ndarray], fixed_z, checkpoint: Path,
                 logger: EpochLogger | None):
        super().__init__()
        self.cfg, self.state, self.checkpoint, self.logger = cfg, state, checkpoint, logger
        self.best_weights, self.progress, self.fixed_z = best_weights, progress, fixed_z
        self._epoch_start = (0.0, 0.0)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = (time.perf_counter(), time.process_time())

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self._diverged(len(self.state.history) + 1, f"step {batch + 1}", float(loss))

    def on_epoch_end(self, epoch, logs=None):
        record = self._record(epoch + 1, logs or {})
        bad = {k: v for k, v in record.items() if not math.isfinite(v)}
        if bad:
            self._diverged(epoch + 1, "the end of the epoch", bad)
        self.progress.append(np.asarray(self.model.decode(self.fixed_z))[..., 0])
        state = self.state
        if record["val/loss"] < state.best_val_loss:
            state.best_val_loss, state.best_epoch, state.stale_epochs = (
                record["val/loss"], epoch + 1, 0)
            self.best_weights[:] = self.model.get_weights()
        else:
            state.stale_epochs += 1
        state.epochs_done = epoch + 1
        state.train_seconds += time.perf_counter() - self._epoch_start[0]
        state.train_cpu_seconds += time.process_time() - self._epoch_start[1]
        state.history.append(record)
        save_checkpoint(self.checkpoint, self.model, state, self.best_weights, self.progress)
        if self.logger is not None:
            self.logger.log_epoch(record)
        if state.stale_epochs >= self.cfg.patience:
            print(f"Early stopping: no better validation loss for {self.cfg.patience} epochs; "
                  f"keeping epoch {state.best_epoch} ({state.best_val_loss:.2f})")
            self.model.stop_training = True

    def _record(self, epoch: int, logs: dict) -> dict[str, float]:
        record = {"epoch": epoch}
        for name in METRICS:
            record[f"train/{name}"] = float(logs[name])
            record[f"val/{name}"] = float(logs[f"val_{name}"])
        record["kl_weight"] = float(self.model.kl_weight())
        record["learning_rate"] = float(self.model.optimizer.learning_rate)
        return record

    def _diverged(self, epoch: int, where: str, value) -> None:
        last = (f"the checkpoint of epoch {self.state.epochs_done} is kept in "
                f"{self.checkpoint.parent}" if self.state.epochs_done else "no epoch completed")
        raise TrainingDiverged(
            f"loss is not finite ({value}) in epoch {epoch}, seen at {where}; {last}. "
            "Lower train.learning_rate or raise train.kl_warmup_epochs, then rerun."
        )


# --- the entry point ---------------------------------------------------------------------

@dataclass
class TrainResult:
    """The model with its best weights, the facts about the run, and per-epoch progress."""

    model: VAE
    facts: dict[str, Any]
    progress: np.ndarray
    history: list[dict[str, float]]


def train(splits: Splits, data_cfg: DataConfig, model_cfg: ModelConfig, cfg: TrainConfig,
          checkpoint_dir: str | Path, logger: EpochLogger | None = None,
          callbacks: tuple = (), verbose: str | int = "auto") -> TrainResult:
    """Train (or resume training) a VAE; early stopping keeps the best validation epoch.

    A checkpoint in `checkpoint_dir` from an interrupted run with the same settings is resumed.
    Past epochs are replayed into `logger` first, so it ends with the whole history. Extra
    `callbacks` run before the bookkeeping, so they see (and may alter) each epoch's logs.
    """
    check_prior_fit(model_cfg.prior, len(splits.x_train))
    configure_determinism(cfg)
    steps = steps_per_epoch(len(splits.x_train), cfg.batch_size)
    model = compiled_vae(model_cfg, cfg, steps)
    checkpoint = Path(checkpoint_dir) / CHECKPOINT_FILE
    state, best_weights, progress = TrainState(), model.get_weights(), []
    if checkpoint.is_file():
        state, best_weights, progress = load_checkpoint(checkpoint, model)
        print(f"Resuming from {checkpoint}: {state.epochs_done} epochs done")
    resumed_from = state.epochs_done
    if logger is not None:
        for record in state.history:
            logger.log_epoch(record)

    started = time.perf_counter()
    if not state.finished(cfg):
        fixed_z = keras.random.normal((cfg.progress_samples, model.latent_dim), seed=cfg.seed)
        bookkeeper = EpochBookkeeper(cfg, state, best_weights, progress, fixed_z, checkpoint,
                                     logger)
        val = tf.data.Dataset.from_tensor_slices(validation_images(splits, data_cfg))
        model.fit(
            training_batches(splits.x_train, cfg, data_cfg.binarize == "dynamic",
                             state.epochs_done),
            epochs=cfg.epochs, initial_epoch=state.epochs_done, steps_per_epoch=steps,
            validation_data=val.batch(EVAL_BATCH), callbacks=[*callbacks, bookkeeper],
            shuffle=False, verbose=verbose,  # the dataset is already shuffled, per epoch
        )
    final = build_vae(model_cfg)
    final.set_weights(best_weights)
    prior_facts = fit_prior(final, prior_fit_images(splits, data_cfg),
                            validation_images(splits, data_cfg), model_cfg.prior, cfg.seed,
                            labels=splits.y_train)
    facts = {
        "epochs_run": state.epochs_done,
        "best_epoch": state.best_epoch,
        "best_val_loss": state.best_val_loss,
        "stopped_early": state.epochs_done < cfg.epochs,
        "resumed_from_epoch": resumed_from,
        "wall_time_s": round(time.perf_counter() - started, 2),
        "train_time_s": round(state.train_seconds, 2),
        "train_cpu_s": round(state.train_cpu_seconds, 2),  # CPU seconds, all cores
        "images_per_s": round(state.epochs_done * steps * cfg.batch_size
                              / max(state.train_seconds, 1e-9), 1),
        "steps_per_epoch": steps,
        "train_images": len(splits.x_train),
        "val_images": len(splits.x_val),
        "parameters": count_params(final),
        "prior": prior_facts,
    }
    empty = np.zeros((0, cfg.progress_samples, 28, 28), "float32")
    return TrainResult(final, facts, np.stack(progress) if progress else empty,
                       state.history)


def check_prior_fit(cfg: PriorConfig, train_images: int) -> None:
    """The mixture's fit, checked before training rather than after it."""
    if cfg.kind == "mixture":
        require_enough_codes(train_images * cfg.fit_samples, cfg.components,
                             f" from {train_images} training images x {cfg.fit_samples}")
    if cfg.conditional:  # each digit is about a tenth of the images
        require_enough_codes(train_images * cfg.fit_samples // DIGITS, cfg.components_per_digit,
                             f" per digit from {train_images} training images x "
                             f"{cfg.fit_samples}", "model.prior.components_per_digit")


def prior_fit_images(splits: Splits, data_cfg: DataConfig) -> np.ndarray:
    """The training images as the encoder learned them: binarised once when training is dynamic."""
    if data_cfg.binarize == "dynamic":
        return data_module.binarize(splits.x_train, data_cfg.split_seed + 3)
    return splits.x_train


def sample_codes(model: VAE, images: np.ndarray, per_image: int,
                 rng: np.random.Generator) -> np.ndarray:
    """`per_image` draws z ~ q(z|x) for every image: samples of the aggregate posterior."""
    mean, log_var = (np.asarray(t, np.float64) for t in model.encode(images))
    return np.concatenate([mean + np.exp(0.5 * log_var) * rng.standard_normal(mean.shape)
                           for _ in range(per_image)])


def fit_prior(model: VAE, images: np.ndarray, val_images: np.ndarray, cfg: PriorConfig,
              seed: int, labels: np.ndarray | None = None) -> dict[str, Any]:
    """With `mixture`, replace N(0, I) by a Gaussian mixture fitted to codes z ~ q(z|x) of
    `images` (see prior.py). Returns what the fit did and the mean log p of the training codes
    and of validation codes, under the mixture and under N(0, I): a mixture that overfits
    (too many components for the data) scores the validation codes far below the training ones.
    With `conditional`, then also fit p(z | digit) to the same codes grouped by `labels`; it
    draws no random numbers of its own, so p(z) and every unconditional number stay the same.
    """
    if cfg.kind == "standard" and not cfg.conditional:
        return {"kind": "standard"}
    rng = np.random.default_rng(seed)
    codes = sample_codes(model, images, cfg.fit_samples, rng)
    facts = {"kind": "standard"} if cfg.kind == "standard" else _fit_mixture_prior(
        model, codes, val_images, cfg, seed, rng)
    if cfg.conditional:
        if labels is None:
            raise ValueError("model.prior.conditional: the per-digit prior needs the labels")
        if cfg.digit_codes == "mean":  # the encoder's means: no random numbers drawn
            codes, labels = np.asarray(model.encode(images)[0], np.float64), labels
        else:
            labels = np.tile(labels, cfg.fit_samples)
        mixtures, digit_facts = fit_digit_mixtures(
            codes, labels, cfg.components_per_digit, cfg.covariance, cfg.fit_iterations, seed,
            cfg.digit_temperature)
        model.set_digit_prior(mixtures)
        facts["digits"] = digit_facts
    return facts


def _fit_mixture_prior(model: VAE, codes: np.ndarray, val_images: np.ndarray,
                       cfg: PriorConfig, seed: int, rng: np.random.Generator) -> dict[str, Any]:
    """p(z) := the mixture fitted to `codes`, and its facts (see `fit_prior`)."""
    mixture, facts = fit_mixture(codes, cfg.components, cfg.covariance, cfg.fit_iterations, seed)
    model.set_prior(mixture)
    val_codes = sample_codes(model, val_images, 1, rng)
    standard = GaussianMixture.standard(model.latent_dim)
    mean_log_prob = {
        f"{name}_log_prob{suffix}": round(float(np.mean(prior.log_prob(z))), 4)
        for name, z in (("codes", codes), ("val_codes", val_codes))
        for suffix, prior in (("", mixture), ("_standard", standard))
    }
    return {"kind": "mixture", **facts, **mean_log_prob}


def remove_checkpoint(checkpoint_dir: str | Path) -> None:
    """Drop a finished run's checkpoint directory."""
    shutil.rmtree(checkpoint_dir, ignore_errors=True)


# --- outputs -----------------------------------------------------------------------------

class DvcLiveLogger:
    """Per-epoch metrics to dvclive (DVC plots and `dvc exp show`); files declared in dvc.yaml.

    `dvcyaml=False` keeps dvclive from rewriting dvc.yaml; the directory starts empty because
    a resumed run replays its history from the checkpoint.
    """

    def __init__(self, directory: str | Path):
        from dvclive import Live

        self.live = Live(str(directory), dvcyaml=False, save_dvc_exp=False, resume=False)

    def log_epoch(self, record: dict[str, float]) -> None:
        self.live.step = int(record["epoch"])
        for name, value in record.items():
            if name != "epoch":
                self.live.log_metric(name, value)
        self.live.make_summary()

    def log_summary(self, facts: dict[str, Any], history: list[dict[str, float]]) -> None:
        """The best epoch's validation metrics, alongside the last epoch's, for `dvc exp show`."""
        best = next(r for r in history if r["epoch"] == facts["best_epoch"])
        for name in METRICS:
            self.live.log_metric(f"best/val/{name}", best[f"val/{name}"], plot=False)
        for name in ("best_epoch", "epochs_run"):
            self.live.log_metric(name, facts[name], plot=False)
        self.live.make_summary()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.live.end()


def save_model(model: VAE, path: str | Path) -> None:
    """Save the model as `.keras`, atomically: a killed run leaves no half-written model."""
    with atomic_path(path) as tmp:
        model.save(tmp)


def write_progress(path: str | Path, images: np.ndarray) -> None:
    """Fixed latents decoded after each epoch: `images` [epochs, n, 28, 28], `epoch` [epochs]."""
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez_compressed(f, images=images.astype(np.float32),
                            epoch=np.arange(1, len(images) + 1))
