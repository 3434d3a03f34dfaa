"""Training the VAE: a resumable, deterministic Keras `fit` with epoch bookkeeping.

The input pipeline (inputs.py) makes each epoch's order and each batch's binarisation a pure
function of (seed, epoch, step), and the checkpoint (checkpoints.py) holds the whole training
state, so a resumed run replays exactly what an uninterrupted run would have done.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import keras
import numpy as np
import tensorflow as tf

from mnist_vae import distribute, precision
from mnist_vae.checkpoints import (
    CHECKPOINT_FILE,
    CheckpointMismatch,
    TrainState,
    load_checkpoint,
    save_checkpoint,
    set_aside,
)
from mnist_vae.config import DataConfig, ModelConfig, Params, TrainConfig
from mnist_vae.data import Splits
from mnist_vae.files import atomic_path, canonical_keras_file
from mnist_vae.inputs import (
    prior_fit_images,
    steps_per_epoch,
    training_batches,
    validation_images,
)
from mnist_vae.model import IMAGE_SHAPE, VAE, build_vae, count_params
from mnist_vae.prior_fit import check_prior_fit, fit_prior

EVAL_BATCH = 500
METRICS = ("loss", "reconstruction", "kl")
PACE_EPOCHS = 3  # the epochs whose mean time bounds the time budget's running pace
# What reading a truncated, garbled or foreign checkpoint raises: it is set aside, not fatal.
UNUSABLE_CHECKPOINT = (CheckpointMismatch, zipfile.BadZipFile, OSError, EOFError, KeyError,
                       TypeError, ValueError)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class EpochLogger(Protocol):
    """Where per-epoch records go (dvclive in the stage; a list in tests)."""

    def log_epoch(self, record: dict[str, float]) -> None: ...


# --- determinism -------------------------------------------------------------------------

def configure_determinism(cfg: TrainConfig) -> None:
    """Seed Python, NumPy, TF and Keras; with `deterministic`, make TF ops deterministic."""
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()


def learning_rate(cfg: TrainConfig, steps: int):
    """A constant rate, or cosine decay from `learning_rate` to 0 over the epoch budget.

    Under a time budget the decay length is a variable, so `plan_schedule` can stretch or
    shrink it to the planned epochs without retracing the training step.
    """
    if cfg.lr_schedule == "cosine":
        decay_steps = cfg.epochs * steps
        if cfg.time_budget_s is not None:
            decay_steps = keras.Variable(decay_steps, dtype="float32", trainable=False,
                                         name="decay_steps")
        return keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps)
    return cfg.learning_rate


def plan_epochs(cap: int, done: int, spent_s: float, pace_s: float, budget_s: float) -> int:
    """The epochs that fit the budget when `done` epochs took `spent_s` and each next one takes
    `pace_s`: at least the epochs done (and 1), at most `cap`."""
    fit = done + math.floor((budget_s - spent_s) / max(pace_s, 1e-9))
    return max(done, 1, min(cap, fit))


def recent_pace(epoch_seconds: list[float]) -> float:
    """Seconds per epoch from here on, erring slow: the last epoch's, or the mean of the last
    PACE_EPOCHS if slower, so a slowdown counts at once and one fast epoch hides nothing."""
    recent = epoch_seconds[-PACE_EPOCHS:]
    return max(recent[-1], sum(recent) / len(recent))


def plan_schedule(model: VAE, epochs: int, steps: int) -> None:
    """Spread the cosine schedule over `epochs` (it reaches 0 at their end)."""
    schedule = model.optimizer._learning_rate  # the schedule object Adam was given
    if isinstance(getattr(schedule, "decay_steps", None), keras.Variable):
        schedule.decay_steps.assign(float(epochs * steps))


def compiled_vae(model_cfg: ModelConfig, cfg: TrainConfig, steps: int,
                 compute: str = "float32") -> VAE:
    """A fresh VAE computing in `compute` precision, compiled with Adam, beta and the KL
    warm-up, ready for `fit`."""
    model = build_vae(model_cfg, compute)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate(cfg, steps)),
        beta=cfg.beta,
        kl_warmup_steps=cfg.kl_warmup_epochs * steps,
        jit_compile=cfg.jit_compile,
    )
    model.optimizer.build(model.trainable_variables)
    return model


# --- the epoch bookkeeping ---------------------------------------------------------------

class EpochBookkeeper(keras.callbacks.Callback):
    """After each epoch: NaN guard, progress image, early stopping, checkpoint, metrics log."""

    def __init__(self, cfg: TrainConfig, state: TrainState, best_weights: list[np.ndarray],
                 progress: list[np.ndarray], fixed_z, checkpoint: Path,
                 logger: EpochLogger | None,
                 placement: distribute.Placement = distribute.ONE_PROCESS, steps: int = 1):
        super().__init__()
        self.cfg, self.state, self.checkpoint, self.logger = cfg, state, checkpoint, logger
        self.steps = steps
        self.placement = placement
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
        state.epoch_seconds.append(time.perf_counter() - self._epoch_start[0])
        state.train_seconds += state.epoch_seconds[-1]
        state.train_cpu_seconds += time.process_time() - self._epoch_start[1]
        state.history.append(record)
        if self.cfg.time_budget_s is not None:
            self._plan()
        distribute.write_on_chief(  # tf.distribute hook: every worker saves, only the chief keeps
            self.checkpoint, lambda path: save_checkpoint(
                path, self.model, state, self.best_weights, self.progress), self.placement)
        if self.logger is not None:
            self.logger.log_epoch(record)
        if state.stale_epochs >= self.cfg.patience:
            print(f"Early stopping: no better validation loss for {self.cfg.patience} epochs; "
                  f"keeping epoch {state.best_epoch} ({state.best_val_loss:.2f})")
            self.model.stop_training = True
        elif state.epochs_done >= state.epoch_budget(self.cfg):
            self.model.stop_training = True  # the time budget's plan is done

    def _plan(self) -> None:
        """Fit the epochs to the budget: planned after epoch 1, then cut (never stretched, so
        the rate never rises again) when the running pace says the plan would overrun."""
        state, budget_s = self.state, self.cfg.time_budget_s
        pace = recent_pace(state.epoch_seconds)
        fits = plan_epochs(state.epoch_budget(self.cfg), state.epochs_done,
                           state.train_seconds, pace, budget_s)
        if state.planned_epochs and fits >= state.planned_epochs:
            return
        if state.planned_epochs:
            print(f"Time budget {budget_s:g} s: {state.train_seconds:.0f} s spent, epochs now "
                  f"take {pace:.1f} s, so {fits} epochs instead of {state.planned_epochs}, "
                  "the schedule spread over them")
        else:
            print(f"Time budget {budget_s:g} s: epoch 1 took {pace:.1f} s, "
                  f"so {fits} of {self.cfg.epochs} epochs, the schedule spread over them")
        state.planned_epochs = fits
        state.plans.append([state.epochs_done, fits])
        plan_schedule(self.model, fits, self.steps)

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
    placement = distribute.place(cfg.distribute, cfg.collective_timeout_s)  # tf.distribute hook
    distribute.check_batches(cfg.batch_size, EVAL_BATCH, len(splits.x_val), placement.replicas)
    configure_determinism(cfg)
    steps = steps_per_epoch(len(splits.x_train), cfg.batch_size)
    chosen = precision.resolve(cfg.precision, Path(checkpoint_dir).parent,
                               precision.speed_settings(model_cfg, cfg),
                               StepTimer(model_cfg, cfg))
    compute = chosen["used"]
    configure_determinism(cfg)  # timing `auto`'s candidates drew random numbers: seed again
    with placement.scope():  # tf.distribute hook: variables created under the strategy
        model = compiled_vae(model_cfg, cfg, steps, compute)
    checkpoint = Path(checkpoint_dir) / CHECKPOINT_FILE
    state, best_weights, progress = TrainState(), model.get_weights(), []
    if checkpoint.is_file():
        try:
            state, best_weights, progress = load_checkpoint(checkpoint, model)
            print(f"Resuming from {checkpoint}: {state.epochs_done} epochs done")
        except UNUSABLE_CHECKPOINT as err:
            set_aside(checkpoint.parent, f"{type(err).__name__}: {err}")
            with placement.scope():  # a fresh model: the failed load may have set some
                model = compiled_vae(model_cfg, cfg, steps, compute)
            state, best_weights, progress = TrainState(), model.get_weights(), []
    if state.planned_epochs:  # a resumed run keeps the plan made so far
        plan_schedule(model, state.planned_epochs, steps)
    resumed_from = state.epochs_done
    if logger is not None:
        for record in state.history:
            logger.log_epoch(record)

    started = time.perf_counter()
    if not state.finished(cfg):
        fixed_z = keras.random.normal((cfg.progress_samples, model.latent_dim), seed=cfg.seed)
        bookkeeper = EpochBookkeeper(cfg, state, best_weights, progress, fixed_z, checkpoint,
                                     logger, placement, steps)
        val = tf.data.Dataset.from_tensor_slices(validation_images(splits, data_cfg))
        batches = training_batches(splits.x_train, cfg, data_cfg.binarize == "dynamic",
                                   state.epochs_done)
        model.fit(  # tf.distribute hook: distribute_batches is the identity without a strategy
            distribute.distribute_batches(batches, placement),
            epochs=state.epoch_budget(cfg), initial_epoch=state.epochs_done,
            steps_per_epoch=steps,
            validation_data=distribute.distribute_batches(val.batch(EVAL_BATCH), placement),
            callbacks=[*callbacks, bookkeeper],
            shuffle=False, verbose=verbose,  # the dataset is already shuffled, per epoch
        )
    final = build_vae(model_cfg)
    final.set_weights(best_weights)
    prior_facts = (fit_prior(final, prior_fit_images(splits, data_cfg),
                             validation_images(splits, data_cfg), model_cfg.prior, cfg.seed,
                             labels=splits.y_train)
                   if placement.is_chief else {"kind": "not fitted: a worker's model is dropped"})
    facts = {
        "epochs_run": state.epochs_done,
        "best_epoch": state.best_epoch,
        "best_val_loss": state.best_val_loss,
        "stopped_early": state.epochs_done < state.epoch_budget(cfg),
        "precision": compute,  # how `chosen` was decided: precision_choice
        "precision_choice": chosen,
        "time_budget_s": cfg.time_budget_s,
        "planned_epochs": state.epoch_budget(cfg),  # train.epochs unless a time budget planned
        "plans": state.plans,  # [after epoch, epochs planned]: the budget's plan and its cuts
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


class StepTimer:
    """CPU seconds per image of a few training steps in a given precision (for `auto`).

    CPU time, not wall time: on a shared machine other processes stretch wall time by half or
    double from one round to the next (seen here), and CPU time hardly; both precisions run
    the same thread pools. One throwaway model per precision, built on first use and kept,
    so interleaved rounds time steps, not tracing.
    """

    def __init__(self, model_cfg: ModelConfig, cfg: TrainConfig):
        self.model_cfg, self.cfg = model_cfg, dataclasses.replace(cfg, lr_schedule="constant")
        images = np.random.default_rng(cfg.seed).random((cfg.batch_size, *IMAGE_SHAPE), "float32")
        self.batches = tf.data.Dataset.from_tensors(images).repeat()
        self.models: dict[str, VAE] = {}

    def __call__(self, compute: str) -> float:
        if compute not in self.models:
            self.models[compute] = compiled_vae(self.model_cfg, self.cfg, 1, compute)
            self._steps(compute, 3)  # traces, then warms oneDNN's kernel caches
        started = time.process_time()
        self._steps(compute, precision.MEASURE_STEPS)
        return (time.process_time() - started) / (precision.MEASURE_STEPS * self.cfg.batch_size)

    def _steps(self, compute: str, steps: int) -> None:
        self.models[compute].fit(self.batches, epochs=1, steps_per_epoch=steps, shuffle=False,
                                 verbose=0)


def keras_logs(record: dict[str, float]) -> dict[str, float]:
    """An epoch record as Keras logged it (`loss`, `val_loss`), as MLflow's callback names it."""
    logs = {}
    for name in METRICS:
        logs[name], logs[f"val_{name}"] = record[f"train/{name}"], record[f"val/{name}"]
    return logs


def train_as_worker(params: Params) -> int:
    """A non-chief worker: every step and collective, checkpoints to a scratch directory."""
    from mnist_vae.checkpoints import checkpoint_key
    from mnist_vae.data import load_splits

    key = checkpoint_key(params, params.paths.data)
    try:
        result = train(load_splits(params.paths.data, params.data), params.data, params.model,
                       params.train, Path(params.paths.checkpoints) / key, verbose=2)
    except distribute.lost_worker_errors() as err:
        print(f"train (worker): {distribute.describe_lost_worker(err)}", file=sys.stderr)
        return 1
    print(f"train (worker): done, {result.facts['epochs_run']} epochs; the chief wrote outputs")
    return 0


def save_model(model: VAE, path: str | Path) -> None:
    """Save the model as `.keras`, atomically (a killed run leaves no half-written model) and
    reproducibly (the same weights give the same bytes)."""
    with atomic_path(path) as tmp:
        model.save(tmp)
        canonical_keras_file(tmp)


def write_progress(path: str | Path, images: np.ndarray) -> None:
    """Fixed latents decoded after each epoch: `images` [epochs, n, 28, 28], `epoch` [epochs]."""
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez_compressed(f, images=images.astype(np.float32),
                            epoch=np.arange(1, len(images) + 1))
