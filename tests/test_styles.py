"""Style transfer: the optimal-transport map between Gaussians, and redrawing toy digits."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_vae import styles
from mnist_vae.prior import GaussianMixture
from toy_models import BandDigitVAE, band_test_set


def _gaussian(mean, cov) -> GaussianMixture:
    return GaussianMixture(np.zeros(1), np.asarray([mean], float),
                           np.linalg.cholesky(np.asarray(cov, float))[None])


def test_moments_of_a_mixture_add_the_spread_between_its_components():
    mixture = GaussianMixture(np.log([0.5, 0.5]), np.array([[-1.0, 0.0], [1.0, 0.0]]),
                              np.stack([np.eye(2) * 0.5] * 2))
    mean, cov = styles.moments(mixture)
    np.testing.assert_allclose(mean, [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(cov, [[0.25 + 1.0, 0.0], [0.0, 0.25]], atol=1e-12)


def test_the_transport_map_carries_one_gaussian_onto_the_other():
    rng = np.random.default_rng(0)
    a_half, b_half = rng.standard_normal((2, 3, 3))
    cov_s, cov_t = a_half @ a_half.T + 0.1 * np.eye(3), b_half @ b_half.T + 0.1 * np.eye(3)
    source, target = _gaussian([1.0, 2.0, 3.0], cov_s), _gaussian([-1.0, 0.0, 5.0], cov_t)
    a, b = styles.transport_map(source, target)
    np.testing.assert_allclose(a, a.T, atol=1e-10)
    assert np.linalg.eigvalsh(a).min() > 0  # a monotone map: the optimal one (Brenier)
    np.testing.assert_allclose(a @ cov_s @ a.T, cov_t, atol=1e-8)
    np.testing.assert_allclose(a @ [1.0, 2.0, 3.0] + b, [-1.0, 0.0, 5.0], atol=1e-10)
    same, shift = styles.transport_map(source, source)
    np.testing.assert_allclose(same, np.eye(3), atol=1e-8)
    np.testing.assert_allclose(shift, 0.0, atol=1e-8)


def test_restyling_moves_codes_between_digits_and_the_temperature_pulls_them_in():
    model = BandDigitVAE()
    codes = np.array([[3.0, 0.02], [3.0, -0.01]])
    moved = styles.restyle_codes(model, codes, np.array([3, 3]), 8)
    np.testing.assert_allclose(moved, [[8.0, 0.02], [8.0, -0.01]], atol=1e-9)
    half = styles.restyle_codes(model, codes, np.array([3, 3]), 8, temperature=0.5)
    np.testing.assert_allclose(half, [[8.0, 0.01], [8.0, -0.005]], atol=1e-9)
    np.testing.assert_allclose(styles.restyle_codes(model, codes, np.array([3, 3]), 3), codes)


def test_a_style_sheet_redraws_every_image_as_every_digit():
    labels = np.array([0, 2, 5, 7])
    logits = BandDigitVAE().decode_logits(np.stack([labels, np.zeros(4)], axis=1))
    x = (1 / (1 + np.exp(-logits))).astype(np.float32)  # noise-free bands: codes exactly (d, 0)
    sheet = styles.style_sheet(BandDigitVAE(), x, labels)
    assert sheet.shape == (4, 11, 28, 28, 1)
    np.testing.assert_array_equal(sheet[:, 0], x)
    for digit in range(10):
        drawn = sheet[:, 1 + digit, ..., 0]
        rows = np.zeros(28, bool)
        rows[2 * digit:2 * digit + 2] = True
        assert drawn[:, rows].min() > 0.99 and drawn[:, ~rows].max() < 0.01


def test_restyle_refuses_a_model_without_digit_priors_and_mismatched_labels():
    class Plain(BandDigitVAE):
        draws_digits = False

    x, labels = band_test_set(1)
    with pytest.raises(ValueError, match="no per-digit prior"):
        styles.restyle(Plain(), x, labels, 1)
    with pytest.raises(ValueError, match="one label per image"):
        styles.restyle(BandDigitVAE(), x, labels[:3], 1)
    with pytest.raises(ValueError, match="digit must be 0-9"):
        styles.restyle(BandDigitVAE(), x, labels, 10)
