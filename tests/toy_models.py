"""Hand-made models with known distributions, implementing the VAE's evaluation methods.

They make the metric arithmetic checkable by hand: every density is known in closed form.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


class LinearGaussianVAE:
    """p(z) = N(0, I), p(x | z) = N(W z + b, s^2 I) with orthogonal columns of W, so the exact
    posterior is diagonal; q(z | x) is that posterior, optionally shifted and widened.

    `decode_logits` returns the Gaussian mean; `nll` is the matching per-image Gaussian NLL.
    """

    likelihood = "linear-gaussian"

    def __init__(self, dims=6, latent_dim=2, noise=0.5, shift=0.0, log_var_offset=0.0, seed=0):
        rng = np.random.default_rng(seed)
        q, _ = np.linalg.qr(rng.standard_normal((dims, latent_dim)))
        self.W = q * np.linspace(1.0, 2.0, latent_dim)  # orthogonal columns, norms 1..2
        self.b = rng.standard_normal(dims)
        self.noise = noise
        self.latent_dim = latent_dim
        self.shift = shift
        self.log_var_offset = log_var_offset
        self.post_var = 1.0 / (1.0 + np.sum(self.W**2, axis=0) / noise**2)

    def encode(self, x):
        mean = (np.asarray(x, np.float64) - self.b) @ self.W / self.noise**2 * self.post_var
        log_var = np.log(self.post_var) + self.log_var_offset
        return mean + self.shift, np.broadcast_to(log_var, mean.shape).copy()

    def decode_logits(self, z):
        return np.asarray(z, np.float64) @ self.W.T + self.b

    def nll(self, x, mean):
        x, mean = np.asarray(x, np.float64), np.asarray(mean, np.float64)
        per_dim = 0.5 * ((x - mean) ** 2 / self.noise**2 + math.log(2 * math.pi * self.noise**2))
        return per_dim.reshape(len(x), -1).sum(axis=1)

    def sample_x(self, n, seed=1):
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((n, self.latent_dim))
        return z @ self.W.T + self.b + self.noise * rng.standard_normal((n, len(self.b)))

    def exact_neg_elbo(self, x):
        """-E_q[log p(x|z)] + KL(q || p), in closed form for this linear-Gaussian model."""
        mean, log_var = self.encode(x)
        var = np.exp(log_var)
        resid = np.asarray(x) - mean @ self.W.T - self.b
        expected_sq = np.sum(resid**2, axis=1) + var @ np.sum(self.W**2, axis=0)
        rec = 0.5 * (expected_sq / self.noise**2
                     + len(self.b) * math.log(2 * math.pi * self.noise**2))
        kl = 0.5 * np.sum(var + mean**2 - 1.0 - log_var, axis=1)
        return rec + kl

    def true_nll(self, x):
        cov = self.W @ self.W.T + self.noise**2 * np.eye(len(self.b))
        return -stats.multivariate_normal(self.b, cov).logpdf(x)


class ToyImageVAE:
    """A 28x28 'VAE' with fixed, simple maps: the encoder mean is [mean intensity, top-half
    minus bottom-half intensity, ...] scaled; the decoder paints z's first two coordinates as
    a horizontal and a vertical gradient. Deterministic, so pictures can be checked."""

    def __init__(self, latent_dim=2, likelihood="bernoulli", log_var=-1.0):
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.log_var = log_var
        rows = np.linspace(-1.0, 1.0, 28)
        self.patterns = np.stack([np.tile(rows, (28, 1)), np.tile(rows[:, None], (1, 28))])

    def encode(self, x):
        x = np.asarray(x, np.float64).reshape(len(x), 28, 28)
        feats = [8 * x.mean(axis=(1, 2)) - 1, 4 * (x[:, :14].mean(axis=(1, 2))
                                                   - x[:, 14:].mean(axis=(1, 2)))]
        for i in range(2, self.latent_dim):
            feats.append(np.full(len(x), 0.1 * i))
        mean = np.stack(feats[: self.latent_dim], axis=1)
        return mean, np.full_like(mean, self.log_var)

    def decode_logits(self, z):
        z = np.asarray(z, np.float64)
        logits = 3 * np.einsum("nk,khw->nhw", z[:, :2], self.patterns) - 1.0
        if self.latent_dim > 2:
            logits = logits + z[:, 2:].sum(axis=1)[:, None, None]
        return logits[..., None].astype(np.float32)


class ConstantVAE:
    """Encoder returns given (mean, log_var) for every image; decoder returns given logits."""

    def __init__(self, mean, log_var, logit=0.0, likelihood="bernoulli"):
        self.mean = np.asarray(mean, np.float64)
        self.log_var = np.asarray(log_var, np.float64)
        self.logit = logit
        self.latent_dim = len(self.mean)
        self.likelihood = likelihood

    def encode(self, x):
        n = len(x)
        return np.tile(self.mean, (n, 1)), np.tile(self.log_var, (n, 1))

    def decode_logits(self, z):
        return np.full((len(z), 28, 28, 1), self.logit, np.float32)


class ShiftedPriorVAE:
    """`LinearGaussianVAE` with its latent moved: z' = m + s z, so p(z') = N(m, diag(s^2)),
    written as a mixture of `copies` identical components. p(x) and the exactness of the
    posterior are unchanged, so every bound must still equal the true NLL."""

    def __init__(self, base: LinearGaussianVAE, shift, scale, copies=2):
        from mnist_vae.prior import GaussianMixture

        self.base, self.likelihood, self.latent_dim = base, base.likelihood, base.latent_dim
        self.m, self.s = np.asarray(shift, np.float64), np.asarray(scale, np.float64)
        self.prior = GaussianMixture(np.full(copies, -math.log(copies)),
                                     np.tile(self.m, (copies, 1)),
                                     np.tile(np.diag(self.s), (copies, 1, 1)))

    def prior_distribution(self):
        return self.prior

    def encode(self, x):
        mean, log_var = self.base.encode(x)
        return self.m + self.s * mean, log_var + 2 * np.log(self.s)

    def decode_logits(self, z):
        return self.base.decode_logits((np.asarray(z, np.float64) - self.m) / self.s)

    def nll(self, x, mean):
        return self.base.nll(x, mean)


class BandDigitVAE:
    """Draws "digit" d as a bright horizontal band in rows [2d, 2d + 2): p(z | d) is a narrow
    Gaussian at z = (d, 0); the decoder paints the band at round(z_0). `wrong` maps a digit
    to the band actually drawn, to model a VAE that draws the wrong digit."""

    latent_dim = 2
    likelihood = "bernoulli"
    draws_digits = True

    def __init__(self, wrong: dict[int, int] | None = None):
        self.wrong = wrong or {}

    def prior_distribution(self, digit=None):
        from mnist_vae.prior import GaussianMixture
        if digit is None:
            return GaussianMixture.standard(2)
        mean = np.array([[float(self.wrong.get(digit, digit)), 0.0]])
        return GaussianMixture(np.zeros(1), mean, 0.01 * np.eye(2)[None])

    def decode_logits(self, z):
        bands = np.clip(np.round(np.asarray(z, np.float64)[:, 0]), 0, 9).astype(int)
        logits = np.full((len(bands), 28, 28, 1), -8.0, np.float32)
        for image, band in zip(logits, bands, strict=True):
            image[2 * band:2 * band + 2] = 8.0
        return logits

    def encode(self, x):
        rows = np.asarray(x, np.float64).reshape(len(x), 28, 28).mean(axis=2)
        mean = np.stack([np.argmax(rows, axis=1) / 2.0, np.zeros(len(x))], axis=1)
        return mean, np.full_like(mean, -4.0)


def band_classifier():
    """A fixed keras classifier that reads band images: features = brightness of rows
    [2d, 2d + 2), class = the brightest band (same FEATURES_LAYER as the real one)."""
    import keras

    from mnist_vae.classifier import FEATURES_LAYER
    inputs = keras.Input((28, 28, 1))
    features = keras.layers.Dense(10, name=FEATURES_LAYER, use_bias=False)(
        keras.layers.Flatten()(inputs))
    probs = keras.layers.Activation("softmax")(features)
    model = keras.Model(inputs, probs)
    kernel = np.zeros((28, 28, 10), np.float32)
    for d in range(10):
        kernel[2 * d:2 * d + 2, :, d] = 1.0
    model.get_layer(FEATURES_LAYER).set_weights([kernel.reshape(784, 10)])
    return model


def band_test_set(per_digit: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Band images with a little noise, and their digits."""
    labels = np.repeat(np.arange(10), per_digit)
    images = np.asarray(BandDigitVAE().decode_logits(np.stack(
        [labels, np.zeros(len(labels))], axis=1)))
    noise = np.random.default_rng(seed).random(images.shape) * 0.1
    return (1 / (1 + np.exp(-images)) + noise).astype(np.float32), labels
