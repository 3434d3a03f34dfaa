"""MNIST arrays -> scaled, split, optionally binarised training/validation/test sets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_vae.config import DataConfig

ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")


class DataError(ValueError):
    """The data file is missing or not what the download stage writes."""


@dataclass(frozen=True)
class Splits:
    """Float32 images in [0, 1] shaped [N, 28, 28, 1] and int64 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Read the download stage's npz, refusing anything with missing or malformed arrays."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; run `dvc repro download` first")
    with np.load(path) as npz:
        missing = [k for k in ARRAY_KEYS if k not in npz]
        if missing:
            raise DataError(f"{path}: missing arrays {missing}; rerun `dvc repro -f download`")
        arrays = {k: npz[k] for k in ARRAY_KEYS}
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.ndim != 3 or x.shape[1:] != (28, 28) or x.dtype != np.uint8 or len(x) != len(y):
            raise DataError(
                f"{path}: x_{part} must be uint8 [N, 28, 28] with one label per image, "
                f"got {x.dtype} {x.shape} and {len(y)} labels"
            )
    return arrays


def scale(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] -> float32 [N, 28, 28, 1] in [0, 1]."""
    return (images.astype(np.float32) / 255.0)[..., None]


def binarize(images: np.ndarray, seed: int) -> np.ndarray:
    """Sample each pixel as Bernoulli(intensity): the literature's binarised MNIST."""
    rng = np.random.default_rng(seed)
    return (rng.random(images.shape, dtype=np.float32) < images).astype(np.float32)


def split(arrays: dict[str, np.ndarray], cfg: DataConfig) -> Splits:
    """Carve a seeded validation set out of the training set; the test set stays untouched."""
    x, y = arrays["x_train"], arrays["y_train"].astype(np.int64)
    if cfg.val_size >= len(x):
        raise DataError(
            f"data.val_size: {cfg.val_size} leaves no training images out of {len(x)}; lower it"
        )
    order = np.random.default_rng(cfg.split_seed).permutation(len(x))
    val_idx, train_idx = order[: cfg.val_size], order[cfg.val_size :]
    if cfg.train_limit:
        train_idx = train_idx[: cfg.train_limit]
    x_test, y_test = arrays["x_test"], arrays["y_test"].astype(np.int64)
    if cfg.test_limit:
        x_test, y_test = x_test[: cfg.test_limit], y_test[: cfg.test_limit]
    splits = Splits(
        x_train=scale(x[train_idx]), y_train=y[train_idx],
        x_val=scale(x[val_idx]), y_val=y[val_idx],
        x_test=scale(x_test), y_test=y_test,
    )
    if cfg.binarize == "static":
        splits = Splits(
            x_train=binarize(splits.x_train, cfg.split_seed),
            y_train=splits.y_train,
            x_val=binarize(splits.x_val, cfg.split_seed + 1),
            y_val=splits.y_val,
            x_test=binarize(splits.x_test, cfg.split_seed + 2),
            y_test=splits.y_test,
        )
    return splits


def load_splits(path: str | Path, cfg: DataConfig) -> Splits:
    """The one call stages make: read the npz and split it as params say."""
    return split(load_arrays(path), cfg)
