"""Batched inference through any VAE-like model: encode, decode to pixel means, its prior.

Shared by evaluation.py and rendering.py. A model is any object with `encode(x) -> (mean,
log_var)`, `decode_logits(z)` and `latent_dim`, and optionally `prior_distribution()`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import keras
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


DECODE_ROWS = 1000  # latents per compiled decoder call: bounds the activations' memory

LogLikelihood = Callable[[np.ndarray, np.ndarray], np.ndarray]


def log_likelihood_fn(model: Any, nll: Callable[[Any, Any], Any]) -> LogLikelihood:
    """(z [m*b, d], x [b, ...]) -> log p(x | z) [m*b] in float64, x repeated for each of
    the m draws: one compiled graph (decoder, likelihood) for a Keras decoder, else eager ops."""
    decoder = getattr(model, "decoder", None)
    if not isinstance(decoder, keras.Model):
        return lambda z, x: -to_numpy(nll(_repeat(x, len(z) // len(x)),
                                          model.decode_logits(z))).astype(np.float64)

    @tf.function(reduce_retracing=True)
    def graph(z, x):
        reps = tf.shape(z)[0] // tf.shape(x)[0]
        multiples = tf.concat([[reps], tf.ones([tf.rank(x) - 1], tf.int32)], axis=0)
        return -nll(tf.tile(x, multiples), decoder(z, training=False))

    return lambda z, x: graph(tf.constant(z, tf.float32), tf.constant(x)).numpy().astype(np.float64)


def _repeat(x: np.ndarray, times: int) -> np.ndarray:
    """x [b, ...] stacked `times` times along the first axis: [times*b, ...]."""
    return np.tile(x, (times,) + (1,) * (x.ndim - 1))
