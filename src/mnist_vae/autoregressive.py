"""A local autoregressive head for a decoder: p(x_ij | x_<ij, z), still normalised.

The head reads a decoder's last hidden layer and logits for z together with the image itself
through a causal convolution (PixelCNN's mask "A": the rows above a pixel and the pixels left
of it), so each pixel's logit depends on z and on the pixels before it in raster order. Scoring
an image is one pass (teacher forcing); drawing one is 784 steps, each computing only that
pixel's logit, so a step costs a few thousand multiply-adds per image, not a whole head.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops


def causal_mask(rows: int, cols: int) -> np.ndarray:
    """[rows, cols, 1, 1] ones where a kernel tap reads a pixel before the centre one."""
    mask = np.zeros((rows, cols, 1, 1), "float32")
    mask[: rows // 2] = 1.0
    mask[rows // 2, : cols // 2] = 1.0
    return mask


@keras.saving.register_keras_serializable(package="mnist_vae")
class CausalConv2D(layers.Conv2D):
    """A Conv2D of a one-channel image whose output at a pixel reads only the pixels before it
    in raster order."""

    def build(self, input_shape):
        super().build(input_shape)
        self.mask = causal_mask(*self.kernel_size)

    def convolution_op(self, inputs, kernel):
        return super().convolution_op(inputs, kernel * ops.cast(self.mask, kernel.dtype))


@keras.saving.register_keras_serializable(package="mnist_vae")
class LocalARHead(layers.Layer):
    """Logits of p(x_ij | x_<ij, z): the decoder's logits plus a residual (zero at the start,
    so training starts from the decoder alone) of its hidden layer and the causal context."""

    def __init__(self, channels: int = 32, kernel_size: int = 7, **kwargs):
        kwargs.setdefault("autocast", False)  # the decoder's float32 logits stay float32
        super().__init__(**kwargs)
        self.channels, self.kernel_size = channels, kernel_size
        dtype = self.dtype_policy  # the hidden layers compute in it; the logits in float32
        self.context = CausalConv2D(channels, kernel_size, padding="same", name="context",
                                    dtype=dtype)
        self.project = layers.Conv2D(channels, 1, name="project", dtype=dtype)
        self.mix = layers.Conv2D(channels, 1, activation="relu", name="mix", dtype=dtype)
        self.out = layers.Conv2D(1, 1, kernel_initializer="zeros", name="out", dtype="float32")

    def build(self, hidden_shape, base_shape=None, x_shape=None):
        height, width = hidden_shape[1:3]
        self.context.build((None, height, width, 1))
        self.project.build(hidden_shape)
        self.mix.build((None, height, width, self.channels))
        self.out.build((None, height, width, self.channels))

    def call(self, hidden, base, x):
        u = ops.relu(self.project(hidden) + self.context(ops.cast(x, hidden.dtype)))
        return base + ops.cast(self.out(self.mix(u)), base.dtype)

    def sample(self, hidden, base, uniforms) -> tuple[np.ndarray, np.ndarray]:
        """Binary images [n, h, w, 1] drawn pixel by pixel, and each pixel's probability given
        the pixels drawn before it: a pixel is 1 where its uniform [n, h, w] is below that
        probability, so an image depends on its own uniforms only, not on the others drawn."""
        projected = np.asarray(ops.cast(self.project(hidden), "float32"))
        base = np.asarray(ops.cast(base, "float32"))[..., 0]
        n, height, width = base.shape
        uniforms = np.asarray(uniforms)
        if uniforms.shape != base.shape:
            raise ValueError(f"uniforms of shape {uniforms.shape}: give one per pixel drawn, "
                             f"shape {base.shape}")
        half = self.kernel_size // 2
        taps = (np.asarray(self.context.kernel) * self.context.mask)[: half + 1, :, 0, :]
        context_bias = np.asarray(self.context.bias)
        mix_w, mix_b = (np.asarray(w) for w in self.mix.weights)
        out_w, out_b = (np.asarray(w) for w in self.out.weights)
        padded = np.zeros((n, height + half, width + 2 * half), "float32")
        probs = np.zeros((n, height, width), "float32")
        for i in range(height):
            for j in range(width):
                patch = padded[:, i:i + half + 1, j:j + self.kernel_size]
                context = np.tensordot(patch, taps, axes=([1, 2], [0, 1])) + context_bias
                mixed = np.maximum(np.maximum(projected[:, i, j] + context, 0) @ mix_w[0, 0]
                                   + mix_b, 0)
                logit = base[:, i, j] + mixed @ out_w[0, 0, :, 0] + out_b[0]
                probs[:, i, j] = 1.0 / (1.0 + np.exp(-logit))
                padded[:, i + half, j + half] = uniforms[:, i, j] < probs[:, i, j]
        return padded[:, half:, half:width + half, None].copy(), probs[..., None]

    def get_config(self):
        return {**super().get_config(), "channels": self.channels,
                "kernel_size": self.kernel_size}
