"""Batched inference: the phase-layout decoder tail equals the Keras decoder it rewrites."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from mlflow_helpers import tiny_autoregressive_vae
from mnist_vae import inference, losses
from mnist_vae.config import DecoderConfig
from mnist_vae.model import build_decoder

SMALL = DecoderConfig(reshape=(7, 7, 8), filters=(8, 6, 5), kernel_sizes=(3, 3, 3),
                      strides=(1, 2, 2))


def _randomised(decoder: keras.Model, seed: int = 0) -> keras.Model:
    """Weights and biases away from their initial values, so no term is trivially zero."""
    rng = np.random.default_rng(seed)
    decoder.set_weights([w + 0.2 * rng.standard_normal(w.shape).astype(w.dtype)
                         for w in decoder.get_weights()])
    return decoder


@pytest.mark.parametrize(("activation", "dropout"), [("relu", ()), ("leaky_relu", ()),
                                                     ("tanh", (0.1, 0.2, 0.3))])
def test_phase_logits_are_the_decoder_logits_in_space_to_depth_layout(activation, dropout):
    cfg = dataclasses.replace(SMALL, conv_activation=activation, dropout=dropout)
    decoder = _randomised(build_decoder(cfg, latent_dim=4, slope=0.3))
    phase = inference.phase_logits(decoder)
    assert phase is not None
    z = np.random.default_rng(1).standard_normal((9, 4)).astype("float32")
    want = decoder(z, training=False).numpy()
    got = tf.nn.depth_to_space(phase(z), 2).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("change", [
    {"batch_norm": True},                               # a BatchNormalization before the activation
    {"strides": (2, 2, 1), "reshape": (7, 7, 8)},       # the last upsampling has stride 1
    {"head": "dense"},                                  # no 1-filter convolution head
    {"head_kernel_size": 5},                            # a head the phase kernel does not cover
])
def test_phase_logits_declines_decoders_it_cannot_rewrite(change):
    decoder = build_decoder(dataclasses.replace(SMALL, **change), latent_dim=4, slope=0.3)
    assert inference.phase_logits(decoder) is None


class _Decoding:
    """A model with a Keras decoder, as log_likelihood_fn sees a VAE."""

    def __init__(self, decoder):
        self.decoder = decoder

    def decode_logits(self, z):
        return self.decoder(z, training=False)


@pytest.mark.parametrize("nll", [losses.bernoulli_nll, losses.gaussian_nll])
def test_log_likelihood_in_the_phase_layout_equals_the_pixel_layout(monkeypatch, nll):
    decoder = _randomised(build_decoder(SMALL, latent_dim=4, slope=0.3), seed=2)
    x = (np.random.default_rng(3).random((3, 28, 28, 1)) < 0.3).astype("float32")
    z = np.random.default_rng(4).standard_normal((6, 4)).astype("float32")  # 2 draws x 3 images
    fast = inference.log_likelihood_fn(_Decoding(decoder), nll)(z, x)
    monkeypatch.setattr(inference, "phase_logits", lambda decoder: None)
    plain = inference.log_likelihood_fn(_Decoding(decoder), nll)(z, x)
    eager = -nll(np.tile(x, (2, 1, 1, 1)), decoder(z, training=False)).numpy()
    np.testing.assert_allclose(plain, eager, rtol=1e-6)
    np.testing.assert_allclose(fast, plain, rtol=1e-5)


def test_a_bfloat16_decoder_computes_in_bf16_and_stays_near_float32():
    decoder = _randomised(build_decoder(SMALL, latent_dim=4, slope=0.3), seed=5)
    x = (np.random.default_rng(6).random((3, 28, 28, 1)) < 0.3).astype("float32")
    z = np.random.default_rng(7).standard_normal((6, 4)).astype("float32")
    exact = inference.log_likelihood_fn(_Decoding(decoder), losses.bernoulli_nll)(z, x)
    bf16 = inference.log_likelihood_fn(_Decoding(decoder), losses.bernoulli_nll, "bfloat16")(z, x)
    assert bf16.dtype == np.float64
    assert not np.array_equal(bf16, exact)  # bf16 arithmetic really ran
    np.testing.assert_allclose(bf16, exact, rtol=2e-2)


def test_the_bfloat16_decoder_keeps_the_weights_and_the_phase_layout():
    decoder = _randomised(build_decoder(SMALL, latent_dim=4, slope=0.3), seed=8)
    clone = inference.bfloat16_decoder(decoder)
    assert clone.layers[-1].compute_dtype == "bfloat16"
    for ours, theirs in zip(clone.get_weights(), decoder.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    z = np.random.default_rng(9).standard_normal((5, 4)).astype("float32")
    phase = inference.phase_logits(clone)
    want = tf.cast(clone(z, training=False), tf.float32).numpy()
    got = tf.cast(tf.nn.depth_to_space(phase(z), 2), tf.float32).numpy()
    np.testing.assert_allclose(got, want, atol=0.05 * np.abs(want).max())


def test_the_compiled_log_prior_is_the_mixtures_log_prob():
    from benchmarks.iwae_speed import seeded_mixture
    from mnist_vae.prior import GaussianMixture

    z = np.random.default_rng(10).standard_normal((300, 5)) * 2
    mixture = seeded_mixture(5, 7, seed=11)
    np.testing.assert_allclose(inference.log_prior_fn(mixture)(z), mixture.log_prob(z),
                               rtol=1e-12)
    standard = GaussianMixture.standard(5)
    np.testing.assert_array_equal(inference.log_prior_fn(standard)(z), standard.log_prob(z))


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_an_autoregressive_decoder_scores_each_repeated_image_through_its_head(precision):
    vae = tiny_autoregressive_vae(seed=3)
    x = (np.random.default_rng(10).random((3, 28, 28, 1)) < 0.3).astype("float32")
    z = np.random.default_rng(11).standard_normal((6, 3)).astype("float32")  # 2 draws x 3
    got = inference.log_likelihood_fn(vae, losses.bernoulli_nll, precision)(z, x)
    repeated = np.tile(x, (2, 1, 1, 1))
    want = -losses.bernoulli_nll(repeated, vae.image_logits(z, repeated)).numpy()
    if precision == "float32":
        np.testing.assert_allclose(got, want, rtol=1e-6)
    else:
        assert not np.array_equal(got, want)  # bf16 arithmetic really ran
        np.testing.assert_allclose(got, want, rtol=2e-2)


def test_an_autoregressive_decoders_means_are_the_probabilities_it_drew_with():
    vae = tiny_autoregressive_vae(seed=4)
    z = np.random.default_rng(12).standard_normal((4, 3)).astype("float32")
    means = inference.decode_means(vae, z, batch_size=4)
    np.testing.assert_array_equal(means, np.asarray(vae.decode(z)))
    assert means.dtype == np.float32 and means.min() >= 0 and means.max() <= 1
