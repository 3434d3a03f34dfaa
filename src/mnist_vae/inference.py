"""Batched inference through any VAE-like model: encode, decode to pixel means, its prior.

Shared by evaluation.py and rendering.py. A model is any object with `encode(x) -> (mean,
log_var)`, `decode_logits(z)` and `latent_dim`, and optionally `prior_distribution()`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf

from mnist_vae.prior import GaussianMixture
from mnist_vae.progress import progress


def to_numpy(t: Any) -> np.ndarray:
    """A tensor or array as a NumPy array."""
    return t.numpy() if hasattr(t, "numpy") else np.asarray(t)


def batches(n: int, size: int, desc: str | None = None) -> Iterator[slice]:
    """Slices of at most `size` covering range(n); with `desc`, shown as a progress bar."""
    slices = (slice(start, min(start + size, n)) for start in range(0, n, size))
    if desc is None:
        return slices
    return iter(progress(slices, desc=desc, total=math.ceil(n / size), unit="batch"))


def prior_of(model: Any) -> GaussianMixture:
    """The model's p(z): its fitted prior if it has one, else N(0, I)."""
    if hasattr(model, "prior_distribution"):
        return model.prior_distribution()
    return GaussianMixture.standard(model.latent_dim)


def encode(model: Any, x: np.ndarray, batch_size: int,
           desc: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Encoder means and log-variances of many images, batch by batch, as float64."""
    means, log_vars = [], []
    for s in batches(len(x), batch_size, desc):
        mean, log_var = model.encode(x[s])
        means.append(to_numpy(mean))
        log_vars.append(to_numpy(log_var))
    return np.concatenate(means).astype(np.float64), np.concatenate(log_vars).astype(np.float64)


def decode_means(model: Any, z: np.ndarray, batch_size: int,
                 desc: str | None = None) -> np.ndarray:
    """Decoder means sigmoid(logits) for many latent vectors, as float32 [N, 28, 28, 1]."""
    out = [to_numpy(tf.sigmoid(model.decode_logits(z[s].astype(np.float32))))
           for s in batches(len(z), batch_size, desc)]
    return np.concatenate(out).astype(np.float32)
