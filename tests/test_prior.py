"""The prior p(z): densities checked against scipy, sampling moments, and the EM fit."""

import numpy as np
import pytest
from scipy import stats

from mnist_vae.prior import DIGITS, GaussianMixture, check_digit, fit_digit_mixtures, fit_mixture


def _two_blobs() -> GaussianMixture:
    """0.3 N([-3, 0], [[1, .5], [.5, 2]]) + 0.7 N([2, 1], diag(.25, 1)), in 2-D."""
    covs = np.array([[[1.0, 0.5], [0.5, 2.0]], [[0.25, 0.0], [0.0, 1.0]]])
    return GaussianMixture(np.log([0.3, 0.7]), np.array([[-3.0, 0.0], [2.0, 1.0]]),
                           np.linalg.cholesky(covs))


def test_standard_prior_is_n01_in_density_and_in_draws():
    prior = GaussianMixture.standard(4)
    z = np.random.default_rng(0).standard_normal((100, 4)) * 3
    np.testing.assert_allclose(prior.log_prob(z),
                               stats.multivariate_normal(np.zeros(4)).logpdf(z), rtol=1e-12)
    assert prior.is_standard and prior.components == 1 and prior.dim == 4
    np.testing.assert_array_equal(prior.sample(9, np.random.default_rng(5)),
                                  np.random.default_rng(5).standard_normal((9, 4)))


def test_mixture_log_prob_is_the_weighted_sum_of_its_gaussians():
    prior = _two_blobs()
    z = np.random.default_rng(1).normal(0, 3, (200, 2))
    covs = prior.scale_tril @ np.swapaxes(prior.scale_tril, 1, 2)
    expected = np.log(0.3 * stats.multivariate_normal(prior.means[0], covs[0]).pdf(z)
                      + 0.7 * stats.multivariate_normal(prior.means[1], covs[1]).pdf(z))
    np.testing.assert_allclose(prior.log_prob(z), expected, rtol=1e-10)
    assert not prior.is_standard


def test_copies_of_n01_are_n01():
    copies = GaussianMixture(np.log(np.full(3, 1 / 3)), np.zeros((3, 2)),
                             np.tile(np.eye(2), (3, 1, 1)))
    assert copies.is_standard
    z = np.random.default_rng(2).standard_normal((10, 2))
    np.testing.assert_allclose(copies.log_prob(z), GaussianMixture.standard(2).log_prob(z))


def test_mixture_draws_have_its_weights_means_and_covariances():
    prior = _two_blobs()
    z = prior.sample(200_000, np.random.default_rng(3))
    left = z[:, 0] < -0.5  # the components barely overlap along the first axis
    assert left.mean() == pytest.approx(0.3, abs=0.01)
    np.testing.assert_allclose(z[left].mean(axis=0), [-3.0, 0.0], atol=0.03)
    np.testing.assert_allclose(np.cov(z[~left], rowvar=False), [[0.25, 0], [0, 1]], atol=0.03)
    np.testing.assert_array_equal(prior.sample(50, np.random.default_rng(9)),
                                  prior.sample(50, np.random.default_rng(9)))


def test_em_recovers_a_known_mixture_and_beats_n01_on_its_codes():
    truth = _two_blobs()
    codes = truth.sample(4000, np.random.default_rng(4))
    fitted, facts = fit_mixture(codes, components=2, covariance="full", max_iter=100, seed=0)
    order = np.argsort(fitted.means[:, 0])
    np.testing.assert_allclose(fitted.means[order], truth.means, atol=0.1)
    np.testing.assert_allclose(np.exp(fitted.log_weights[order]), [0.3, 0.7], atol=0.02)
    assert fitted.log_prob(codes).mean() > GaussianMixture.standard(2).log_prob(codes).mean()
    assert facts["converged"] and facts["codes"] == 4000 and facts["components"] == 2


def test_diagonal_fit_gives_diagonal_factors():
    codes = _two_blobs().sample(2000, np.random.default_rng(5))
    fitted, _ = fit_mixture(codes, components=2, covariance="diag", max_iter=100, seed=0)
    off_diagonal = fitted.scale_tril * (1 - np.eye(2))
    assert fitted.scale_tril.shape == (2, 2, 2) and not off_diagonal.any()


def test_em_is_deterministic_for_a_seed():
    codes = _two_blobs().sample(1000, np.random.default_rng(6))
    a, _ = fit_mixture(codes, 3, "full", 50, seed=7)
    b, _ = fit_mixture(codes, 3, "full", 50, seed=7)
    np.testing.assert_array_equal(a.means, b.means)
    np.testing.assert_array_equal(a.scale_tril, b.scale_tril)


def test_more_components_than_codes_names_the_keys_to_change():
    with pytest.raises(ValueError, match=r"model\.prior\.components: 50 .* got 10; lower"):
        fit_mixture(np.zeros((10, 2)), 50, "full", 10, seed=0)


def test_weights_rounded_to_float32_still_make_a_distribution():
    # A saved model holds float32 weights, whose exponentials need not sum to 1 in float64.
    weights = np.random.default_rng(8).dirichlet(np.ones(50))
    log_weights = np.log(weights).astype(np.float32).astype(np.float64)
    assert np.exp(log_weights).sum() != 1.0
    prior = GaussianMixture(log_weights, np.zeros((50, 2)) + np.arange(50)[:, None],
                            np.tile(np.eye(2), (50, 1, 1)))
    assert prior.sample(10, np.random.default_rng(0)).shape == (10, 2)
    np.testing.assert_allclose(np.exp(prior.normalized_log_weights).sum(), 1.0, rtol=1e-15)


# --- p(z | digit) --------------------------------------------------------------------------

@pytest.mark.parametrize("digit", [0, 9, np.int64(7)])
def test_a_digit_is_a_whole_number_from_0_to_9(digit):
    assert check_digit(digit) == int(digit)


@pytest.mark.parametrize("bad, message", [(10, "0-9, got 10"), (-1, "0-9, got -1"),
                                          ("7", "whole number 0-9, got '7'"),
                                          (2.5, "whole number 0-9, got 2.5"),
                                          (True, "whole number 0-9, got True"),
                                          (None, "whole number 0-9, got None")])
def test_anything_else_is_refused_saying_what_was_wrong(bad, message):
    with pytest.raises(ValueError, match=message):
        check_digit(bad)


def test_each_digit_gets_a_mixture_of_its_own_codes():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(DIGITS), 200)
    codes = labels[:, None] * 10.0 + rng.standard_normal((len(labels), 2))  # digit d near 10d
    mixtures, facts = fit_digit_mixtures(codes, labels, 2, "full", 100, seed=0)
    assert len(mixtures) == DIGITS and facts["components_per_digit"] == 2
    for digit, mixture in enumerate(mixtures):
        draws = mixture.sample(500, np.random.default_rng(digit))
        np.testing.assert_allclose(draws.mean(axis=0), [10.0 * digit] * 2, atol=0.3)
        assert facts["per_digit"][str(digit)]["codes"] == 200


def test_a_digit_with_too_few_codes_is_named():
    labels = np.repeat(np.arange(DIGITS), 5)
    labels[labels == 3] = 4  # no code of digit 3
    with pytest.raises(ValueError, match=r"model\.prior\.components_per_digit: 2 .* got 0 for "
                                         r"digit 3; lower model\.prior\.components_per_digit"):
        fit_digit_mixtures(np.zeros((50, 2)), labels, 2, "full", 10, seed=0)


def test_a_temperature_scales_every_components_spread_and_keeps_the_means():
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(DIGITS), 300)
    codes = labels[:, None] * 10.0 + rng.standard_normal((len(labels), 2))
    plain, _ = fit_digit_mixtures(codes, labels, 1, "full", 100, seed=0)
    cool, facts = fit_digit_mixtures(codes, labels, 1, "full", 100, seed=0, temperature=0.5)
    assert facts["temperature"] == 0.5
    np.testing.assert_array_equal(cool[4].means, plain[4].means)
    np.testing.assert_allclose(cool[4].scale_tril, 0.5 * plain[4].scale_tril)
    draws = cool[4].sample(20_000, np.random.default_rng(3))
    np.testing.assert_allclose(draws.std(axis=0), 0.5 * plain[4].sample(
        20_000, np.random.default_rng(3)).std(axis=0), rtol=0.03)
