"""Loss terms against values computed by hand."""

import math

import numpy as np
import pytest

from mnist_vae.losses import (
    bernoulli_nll,
    gaussian_nll,
    kl_to_standard_normal,
    reconstruction_nll,
)


def _logit(p):
    return math.log(p / (1 - p))


def test_kl_is_zero_for_the_standard_normal():
    kl = kl_to_standard_normal(np.zeros((3, 5), "float32"), np.zeros((3, 5), "float32"))
    np.testing.assert_allclose(np.asarray(kl), [0.0, 0.0, 0.0], atol=1e-7)


def test_kl_matches_hand_computed_value():
    # One latent with mean 1, variance e: 0.5 * (e + 1 - 1 - 1) = (e - 1) / 2.
    # A second with mean -2, variance 1: 0.5 * (1 + 4 - 1 - 0) = 2.
    mean = np.array([[1.0, -2.0]], "float32")
    log_var = np.array([[1.0, 0.0]], "float32")
    kl = np.asarray(kl_to_standard_normal(mean, log_var))
    assert kl.shape == (1,)
    assert kl[0] == pytest.approx((math.e - 1) / 2 + 2.0, rel=1e-6)


def test_bernoulli_nll_matches_hand_computed_cross_entropy():
    # Two pixels with p = 0.8 and p = 0.25; targets 1 and a grey 0.4.
    logits = np.array([[[[_logit(0.8)], [_logit(0.25)]]]], "float32")  # [1, 1, 2, 1]
    x = np.array([[[[1.0], [0.4]]]], "float32")
    expected = -math.log(0.8) - (0.4 * math.log(0.25) + 0.6 * math.log(0.75))
    nll = np.asarray(bernoulli_nll(x, logits))
    assert nll.shape == (1,)
    assert nll[0] == pytest.approx(expected, rel=1e-6)


def test_bernoulli_nll_is_finite_for_extreme_logits():
    logits = np.array([[[[200.0], [-200.0]]]], "float32")
    x = np.array([[[[0.0], [1.0]]]], "float32")
    np.testing.assert_allclose(np.asarray(bernoulli_nll(x, logits)), [400.0], rtol=1e-6)


def test_gaussian_nll_is_squared_error_plus_the_density_constant():
    # Means sigmoid(0) = 0.5 and 0.8; targets 1 and 0: squared error 0.25 + 0.64.
    logits = np.array([[[[0.0], [_logit(0.8)]]]], "float32")
    x = np.array([[[[1.0], [0.0]]]], "float32")
    expected = 0.25 + 0.64 + 2 * 0.5 * math.log(math.pi)  # -log N(x; mu, 1/2), 2 pixels
    assert np.asarray(gaussian_nll(x, logits))[0] == pytest.approx(expected, rel=1e-6)


def test_losses_sum_over_pixels_per_image():
    rng = np.random.default_rng(0)
    x = rng.random((4, 28, 28, 1)).astype("float32")
    logits = rng.normal(size=(4, 28, 28, 1)).astype("float32")
    per_image = np.asarray(bernoulli_nll(x, logits))
    assert per_image.shape == (4,)
    np.testing.assert_allclose(per_image[1], np.asarray(bernoulli_nll(x[1:2], logits[1:2]))[0],
                               rtol=1e-6)


def test_reconstruction_nll_dispatches_and_rejects_unknown_likelihoods():
    x = np.full((1, 2, 2, 1), 0.5, "float32")
    logits = np.zeros((1, 2, 2, 1), "float32")
    np.testing.assert_allclose(reconstruction_nll(x, logits, "bernoulli"),
                               bernoulli_nll(x, logits))
    np.testing.assert_allclose(reconstruction_nll(x, logits, "gaussian"),
                               gaussian_nll(x, logits))
    with pytest.raises(ValueError, match="likelihood: must be one of bernoulli, gaussian"):
        reconstruction_nll(x, logits, "laplace")
