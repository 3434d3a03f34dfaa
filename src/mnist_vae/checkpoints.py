"""Checkpoints of a training run: its state, its key (settings, data, code), save, load, remove.

The checkpoint holds every variable that changes while training (the weights, the optimizer,
the dropout and sampling RNG states), so a run resumed from epoch k replays exactly what an
uninterrupted run would have done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnist_vae.config import Params, TrainConfig
from mnist_vae.files import atomic_path, file_sha256
from mnist_vae.model import VAE

CHECKPOINT_FILE = "checkpoint.npz"
DATA_KEYS = ("val_size", "split_seed", "train_limit", "binarize")  # the data params training reads
# The package's modules whose code decides what training computes (hashed into the key).
TRAINING_CODE = ("data.py", "losses.py", "model.py", "prior.py", "inputs.py", "prior_fit.py",
                 "precision.py", "training.py")


class CheckpointMismatch(RuntimeError):
    """A checkpoint that does not fit the model being trained."""


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
    epoch_seconds: list[float] = field(default_factory=list)
    planned_epochs: int = 0  # under train.time_budget_s, the epochs planned (0: no plan yet)
    plans: list[list[int]] = field(default_factory=list)  # [after epoch, planned], in order

    def epoch_budget(self, cfg: TrainConfig) -> int:
        """The epochs this run may train: the time budget's plan once made, else train.epochs."""
        return self.planned_epochs or cfg.epochs

    def finished(self, cfg: TrainConfig) -> bool:
        return self.epochs_done >= self.epoch_budget(cfg) or self.stale_epochs >= cfg.patience


def checkpoint_key(params: Params, data_path: str | Path) -> str:
    """Names the checkpoint directory: the params, data and code that determine training."""
    digest = hashlib.sha256()
    settings = {name: dataclasses.asdict(getattr(params, name)) for name in ("model", "train")}
    settings["data"] = {k: getattr(params.data, k) for k in DATA_KEYS}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    digest.update(file_sha256(data_path).encode())
    for name in TRAINING_CODE:
        digest.update(Path(__file__).with_name(name).read_bytes())
    return digest.hexdigest()[:16]



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
                    f"{path}: its {prefix} variables do not fit this model"
                )
            for variable, value in zip(variables, saved, strict=True):
                variable.assign(value)
        state = TrainState(**json.loads(str(npz["state"])))
        best = [npz[f"best/{i}"] for i in range(_count(npz, "best"))]
        progress = list(npz["progress"])
    return state, best, progress


def set_aside(checkpoint_dir: Path, why: str) -> Path:
    """Rename an unusable checkpoint directory to `<dir>.corrupt-<UTC time>`, kept for a look."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = checkpoint_dir.with_name(f"{checkpoint_dir.name}.corrupt-{stamp}")
    checkpoint_dir.rename(target)
    print(f"checkpoint {checkpoint_dir} is unusable ({why}); moved to {target} and training "
          "starts over (delete that directory once inspected)", file=sys.stderr)
    return target


def _count(npz, prefix: str) -> int:
    return sum(1 for k in npz.files if k.startswith(prefix + "/"))


def remove_checkpoint(checkpoint_dir: str | Path) -> None:
    """Drop a finished run's checkpoint directory."""
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
