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

from mnist_vae.prior import LOG_2PI, GaussianMixture
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
    """Decoder means sigmoid(logits) for many latent vectors, as float32 [N, 28, 28, 1]; for
    an autoregressive decoder, `decode`'s drawn images' pixel probabilities."""
    if is_autoregressive(model):
        decode = model.decode
    else:
        def decode(z_rows):
            return tf.sigmoid(model.decode_logits(z_rows))
    out = [to_numpy(decode(z[s].astype(np.float32))) for s in batches(len(z), batch_size, desc)]
    return np.concatenate(out).astype(np.float32)


def is_autoregressive(model: Any) -> bool:
    """Whether the model's pixel logits read the image too (`image_logits(z, x)`)."""
    return bool(getattr(model, "is_autoregressive", False))


def image_logits(model: Any, z: np.ndarray, x: np.ndarray) -> Any:
    """Logits of p(x | z) for latents z [N, d] and their images x [N, ...]."""
    return model.image_logits(z, x) if is_autoregressive(model) else model.decode_logits(z)


DECODE_ROWS = 1000  # latents per compiled decoder call: bounds the activations' memory

LogLikelihood = Callable[[np.ndarray, np.ndarray], np.ndarray]


def log_likelihood_fn(model: Any, nll: Callable[[Any, Any], Any],
                      precision: str = "float32") -> LogLikelihood:
    """(z [m*b, d], x [b, ...]) -> log p(x | z) [m*b] in float64, x repeated for each of
    the m draws: one compiled graph (decoder, likelihood) for a Keras decoder, else eager ops.

    `nll` is a per-pixel likelihood summed over each image, so it may read the pixels in any
    layout: a decoder whose tail `phase_logits` can rewrite is scored in the phase layout.
    `precision` "bfloat16" runs a Keras decoder's arithmetic in bf16 (float32 weights, logits
    and likelihood): faster where the CPU has native bf16, and off by up to tenths of a nat.
    """
    if is_autoregressive(model):
        return _autoregressive_log_likelihood(model, nll, precision)
    decoder = getattr(model, "decoder", None)
    if not isinstance(decoder, keras.Model):
        return lambda z, x: -to_numpy(nll(_repeat(x, len(z) // len(x)),
                                          model.decode_logits(z))).astype(np.float64)
    if precision == "bfloat16":
        decoder = bfloat16_decoder(decoder)
    phase = phase_logits(decoder)

    @tf.function(reduce_retracing=True)
    def graph(z, x):
        if phase is None:
            logits = decoder(z, training=False)
        else:
            logits, x = phase(z), tf.nn.space_to_depth(x, 2)
        return -nll(_tiled_for(z, x), tf.cast(logits, tf.float32))

    return lambda z, x: graph(tf.constant(z, tf.float32), tf.constant(x)).numpy().astype(np.float64)


def _autoregressive_log_likelihood(model: Any, nll: Callable[[Any, Any], Any],
                                   precision: str) -> LogLikelihood:
    """`log_likelihood_fn` of a decoder whose head reads the image: the repeated images go
    through the head with the decoder's features (bf16 for "bfloat16"; the head float32)."""
    features = bfloat16_decoder(model.features) if precision == "bfloat16" else model.features

    @tf.function(reduce_retracing=True)
    def graph(z, x):
        x = _tiled_for(z, x)
        hidden, base = features(z, training=False)
        return -nll(x, tf.cast(model.ar_head(hidden, base, x), tf.float32))

    return lambda z, x: graph(tf.constant(z, tf.float32), tf.constant(x)).numpy().astype(np.float64)


def _tiled_for(z: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    """x [b, ...] repeated for each of the m draws in z [m*b, d]: [m*b, ...] (in a graph)."""
    reps = tf.shape(z)[0] // tf.shape(x)[0]
    return tf.tile(x, tf.concat([[reps], tf.ones([tf.rank(x) - 1], tf.int32)], axis=0))


def bfloat16_decoder(decoder: keras.Model) -> keras.Model:
    """The decoder rebuilt under Keras' mixed_bfloat16 policy, with the same (float32) weights."""
    clone = keras.models.clone_model(decoder, clone_function=lambda layer: type(
        layer).from_config(layer.get_config() | {"dtype": "mixed_bfloat16"}))
    clone.set_weights(decoder.get_weights())
    return clone


def log_prior_fn(prior: GaussianMixture) -> Callable[[np.ndarray], np.ndarray]:
    """z [N, d] -> log p(z) [N] in float64: `prior.log_prob` as one compiled graph for a
    mixture (the same numbers to 1e-12, in TensorFlow's threads rather than NumPy's, which
    contend with the decoder's), the closed form for N(0, I)."""
    if prior.is_standard:
        return prior.log_prob
    weights, shift, log_det = prior.whitening()
    weights, shift = tf.constant(weights), tf.constant(shift)
    offset = tf.constant(prior.normalized_log_weights - log_det - 0.5 * prior.dim * LOG_2PI)

    @tf.function(reduce_retracing=True)
    def graph(z):
        y = tf.reshape(tf.matmul(z, weights), [-1, prior.components, prior.dim]) - shift
        return tf.reduce_logsumexp(offset - 0.5 * tf.reduce_sum(y * y, axis=-1), axis=1)

    return lambda z: graph(tf.constant(z, tf.float64)).numpy()


def _repeat(x: np.ndarray, times: int) -> np.ndarray:
    """x [b, ...] stacked `times` times along the first axis: [times*b, ...]."""
    return np.tile(x, (times,) + (1,) * (x.ndim - 1))


# --- the decoder's last upsampling and its 1-filter head, as dense sub-pixel convolutions ----
#
# A 3x3 stride-2 'same' Conv2DTranspose sends each input pixel to a 2x2 block of outputs: output
# (2p + a, 2q + b) reads input taps that depend only on the phase (a, b). So it is one 2x2 'valid'
# convolution of the input (padded by one row and column before) with 4x the filters, the
# outputs of phase (a, b) in channels (2a + b) * filters + f: tf.nn.depth_to_space's order.
# An elementwise activation commutes with that layout, and a 3x3 'same' Conv2D on the fine
# grid is a 3x3 convolution on the coarse one, 4 phases in, 4 phases out. The logits come out
# as tf.nn.space_to_depth(logits, 2): the same numbers (to float32 rounding) with no zeros
# multiplied, no 28x28x16 tensor rearranged, and a head with 4 outputs instead of 1.

_STRIDE2_TAPS = {0: {0: 2, 1: 0}, 1: {1: 1}}  # phase -> {window row (0: p - 1, 1: p): kernel row}


def phase_logits(decoder: keras.Model) -> Callable[[Any], Any] | None:
    """z -> space_to_depth(decoder(z), 2) [N, 14, 14, 4] for a decoder ending in a 3x3 stride-2
    Conv2DTranspose, an elementwise activation and a 1-filter 3x3 Conv2D head; else None."""
    layers = [layer for layer in decoder.layers if not isinstance(layer, keras.layers.Dropout)]
    if len(layers) < 4:
        return None
    upsample, activation, head = layers[-3:]
    if not (_is_stride2_transpose(upsample) and _is_elementwise(activation)
            and _is_one_filter_head(head)):
        return None
    body = keras.Model(decoder.input, upsample.input)
    kernel, bias = (np.asarray(w) for w in upsample.get_weights())
    dtype = upsample.compute_dtype
    up_kernel = tf.constant(_subpixel_kernel(kernel), dtype)
    up_bias = tf.constant(np.tile(bias, 4), dtype)
    head_kernel, head_bias = (np.asarray(w) for w in head.get_weights())
    phase_head = tf.constant(_phase_head_kernel(head_kernel), head.compute_dtype)
    head_bias = tf.constant(head_bias, head.compute_dtype)

    def logits(z):
        h = tf.pad(body(z, training=False), [[0, 0], [1, 0], [1, 0], [0, 0]])
        h = activation(tf.nn.conv2d(h, up_kernel, 1, "VALID") + up_bias)
        return tf.nn.conv2d(tf.cast(h, head_bias.dtype), phase_head, 1, "SAME") + head_bias

    return logits


def _is_stride2_transpose(layer: Any) -> bool:
    return (isinstance(layer, keras.layers.Conv2DTranspose) and layer.use_bias
            and tuple(layer.strides) == (2, 2) and tuple(layer.kernel_size) == (3, 3)
            and layer.padding == "same" and tuple(layer.dilation_rate) == (1, 1)
            and layer.data_format == "channels_last"
            and layer.activation is keras.activations.linear)


def _is_elementwise(layer: Any) -> bool:
    return isinstance(layer, (keras.layers.Activation, keras.layers.LeakyReLU, keras.layers.ReLU))


def _is_one_filter_head(layer: Any) -> bool:
    return (type(layer) is keras.layers.Conv2D and layer.filters == 1 and layer.use_bias
            and tuple(layer.strides) == (1, 1) and tuple(layer.kernel_size) == (3, 3)
            and layer.padding == "same" and tuple(layer.dilation_rate) == (1, 1)
            and layer.groups == 1 and layer.data_format == "channels_last"
            and layer.activation is keras.activations.linear)


def _subpixel_kernel(kernel: np.ndarray) -> np.ndarray:
    """Conv2DTranspose kernel [3, 3, out, in] (stride 2, 'same') -> [2, 2, in, 4 * out]."""
    out_channels, in_channels = kernel.shape[2:]
    sub = np.zeros((2, 2, in_channels, 2, 2, out_channels), kernel.dtype)
    for a, rows in _STRIDE2_TAPS.items():
        for b, cols in _STRIDE2_TAPS.items():
            for i, tap_i in rows.items():
                for j, tap_j in cols.items():
                    sub[i, j, :, a, b, :] = kernel[tap_i, tap_j].T
    return sub.reshape(2, 2, in_channels, 4 * out_channels)


def _phase_head_kernel(kernel: np.ndarray) -> np.ndarray:
    """Conv2D kernel [3, 3, C, 1] on the fine grid -> [3, 3, 4 C, 4] on the phase grid."""
    channels = kernel.shape[2]
    phase = np.zeros((3, 3, 2, 2, channels, 2, 2), kernel.dtype)
    for a in (0, 1):
        for b in (0, 1):
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    row, a_in = divmod(a + dy, 2)
                    col, b_in = divmod(b + dx, 2)
                    phase[row + 1, col + 1, a_in, b_in, :, a, b] = kernel[dy + 1, dx + 1, :, 0]
    return phase.reshape(3, 3, 4 * channels, 4)
