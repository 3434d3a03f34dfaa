"""The VAE's loss terms as pure functions: nats per image, summed over pixels and latents.

Every decoder ends in logits; the likelihoods read them directly so nothing saturates.
"""

from __future__ import annotations

import math

from keras import ops

LIKELIHOODS = ("bernoulli", "gaussian")

# The Gaussian likelihood's fixed pixel variance. At 1/2, -log N(x; mu, 1/2) per pixel is
# (x - mu)^2 + ln(pi)/2: the article's summed squared error plus a constant.
GAUSSIAN_VARIANCE = 0.5


def _per_image_sum(values):
    """Sum everything but the batch axis."""
    return ops.sum(ops.reshape(values, (ops.shape(values)[0], -1)), axis=-1)


def _as_float(x, like):
    return ops.cast(ops.convert_to_tensor(x), ops.dtype(like))


def bernoulli_nll(x, logits):
    """-log Bernoulli(x | sigmoid(logits)) per image; x may be grey levels in [0, 1].

    This is binary cross-entropy from logits, in its overflow-free form
    max(l, 0) - l x + log(1 + exp(-|l|)).
    """
    logits = ops.convert_to_tensor(logits)
    x = _as_float(x, logits)
    per_pixel = ops.relu(logits) - logits * x + ops.softplus(-ops.abs(logits))
    return _per_image_sum(per_pixel)


def gaussian_nll(x, logits):
    """-log N(x | sigmoid(logits), 1/2) per image: summed squared error + (D/2) ln(pi).

    The squared-error part is the article's reconstruction loss; the constant makes it a
    density in nats (it does not change gradients).
    """
    logits = ops.convert_to_tensor(logits)
    x = _as_float(x, logits)
    squared_error = _per_image_sum(ops.square(x - ops.sigmoid(logits)))
    n_pixels = math.prod(logits.shape[1:])
    constant = 0.5 * n_pixels * math.log(2 * math.pi * GAUSSIAN_VARIANCE)
    return squared_error / (2 * GAUSSIAN_VARIANCE) + constant


def reconstruction_nll(x, logits, likelihood: str):
    """The reconstruction term for the model's likelihood ('bernoulli' or 'gaussian')."""
    if likelihood == "bernoulli":
        return bernoulli_nll(x, logits)
    if likelihood == "gaussian":
        return gaussian_nll(x, logits)
    raise ValueError(f"likelihood: must be one of {', '.join(LIKELIHOODS)}, got {likelihood!r}")


def kl_to_standard_normal(mean, log_var):
    """KL(N(mean, exp(log_var)) || N(0, I)) per row, analytically."""
    mean = ops.convert_to_tensor(mean)
    log_var = _as_float(log_var, mean)
    return 0.5 * ops.sum(ops.exp(log_var) + ops.square(mean) - 1.0 - log_var, axis=-1)
