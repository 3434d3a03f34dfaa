"""Metric arithmetic on hand-made models whose densities are known in closed form."""

import dataclasses
import json
import math

import numpy as np
import pytest

from mlflow_helpers import tiny_autoregressive_vae, tiny_params
from mnist_vae import evaluation as ev
from mnist_vae import losses
from mnist_vae.classifier import Predictions, build_classifier
from mnist_vae.classifier import predict as classifier_predict
from mnist_vae.config import (
    ClassifierConfig,
    DataConfig,
    DecoderConfig,
    EncoderConfig,
    EvaluateConfig,
    ModelConfig,
)
from mnist_vae.data import binarize as binarize_images
from mnist_vae.data import scale
from mnist_vae.files import write_json
from mnist_vae.model import build_vae
from toy_models import (
    BandDigitVAE,
    ConstantVAE,
    LinearGaussianVAE,
    ShiftedPriorVAE,
    ToyImageVAE,
    band_classifier,
    band_test_set,
)

LN2 = math.log(2.0)


def _linear_view(model, x):
    return ev.View("linear", x, model.nll)


# --- bits/dim, KL and NLL of known distributions ------------------------------------------


def test_bits_per_dim_converts_nats_per_image():
    assert ev.bits_per_dim(784 * LN2, 784) == pytest.approx(1.0)
    assert ev.bits_per_dim(100.0, 784) == pytest.approx(100.0 / (784 * LN2))


def test_elbo_terms_match_hand_computed_kl_and_bernoulli_nll():
    # q = N([1, 2], diag(1, 4)): KL = 0.5 * ((1 + 1 - 1 - 0) + (4 + 4 - 1 - ln 4)) = 4 - ln 2.
    # Logits 0 give p = 1/2 per pixel: BCE is ln 2 per pixel for any grey target.
    model = ConstantVAE(mean=[1.0, 2.0], log_var=[0.0, math.log(4.0)], logit=0.0)
    grey = np.random.default_rng(0).random((7, 28, 28, 1)).astype(np.float32)
    terms = ev.elbo_terms(model, ev.build_views("bernoulli", grey, None)[0], 3, seed=0,
                          grey=grey)
    np.testing.assert_allclose(terms["kl"], 4.0 - LN2, rtol=1e-6)
    np.testing.assert_allclose(terms["rec_nll"], 784 * LN2, rtol=1e-5)
    np.testing.assert_allclose(terms["neg_elbo"], 784 * LN2 + 4.0 - LN2, rtol=1e-5)
    expected_sse = np.sum((grey.reshape(7, -1).astype(np.float64) - 0.5) ** 2, axis=1)
    np.testing.assert_allclose(terms["sse"], expected_sse, rtol=1e-5)


def test_an_autoregressive_models_reconstruction_term_reads_the_image_through_its_head():
    model = tiny_autoregressive_vae(seed=5)
    x = (np.random.default_rng(1).random((4, 28, 28, 1)) < 0.3).astype(np.float32)
    view = ev.View("bernoulli_binarized", x, losses.bernoulli_nll)
    terms = ev.elbo_terms(model, view, 4, seed=3)
    mean, log_var = (np.asarray(t, np.float64) for t in model.encode(x))
    z = mean + np.exp(0.5 * log_var) * np.random.default_rng(3).standard_normal(mean.shape)
    logits = model.image_logits(z.astype(np.float32), x)
    np.testing.assert_allclose(terms["rec_nll"], losses.bernoulli_nll(x, logits).numpy(),
                               rtol=1e-5)


def test_gaussian_view_is_sse_plus_the_stated_constant():
    # All-black images, decoder mean 1/2: SSE = 784/4 = 196; the Gaussian with variance 1/2
    # adds 392 ln(pi) nats (stated in metrics as meta.gaussian_nll_constant).
    model = ConstantVAE(mean=[0.0], log_var=[0.0], logit=0.0, likelihood="gaussian")
    grey = np.zeros((4, 28, 28, 1), np.float32)
    views = ev.build_views("gaussian", grey, None)
    assert [v.name for v in views] == ["bernoulli", "gaussian"]
    assert ev.gaussian_nll_constant(784) == pytest.approx(392 * math.log(math.pi))
    gauss = ev.elbo_terms(model, views[1], 4, seed=0)
    np.testing.assert_allclose(gauss["rec_nll"], 196.0 + 392 * math.log(math.pi), rtol=1e-6)
    np.testing.assert_allclose(gauss["kl"], 0.0, atol=1e-12)


@pytest.mark.parametrize("binarize", ["none", "static", "dynamic"])
def test_evaluation_sets_are_grey_plus_the_seeded_binary_images_the_model_learned(binarize):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (40, 28, 28), dtype=np.uint8),
              "y_train": rng.integers(0, 10, 40),
              "x_test": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
              "y_test": rng.integers(0, 10, 12)}
    cfg = DataConfig(val_size=10, test_limit=8, binarize=binarize)
    grey, binarized = ev.evaluation_sets(arrays, cfg)
    expected_grey = scale(arrays["x_test"][:8])
    np.testing.assert_array_equal(grey.x_test, expected_grey)
    if binarize == "none":
        assert binarized is None
    else:
        np.testing.assert_array_equal(binarized,
                                      binarize_images(expected_grey, cfg.split_seed + 2))


def test_views_follow_the_training_likelihood_and_data():
    grey = np.zeros((2, 28, 28, 1), np.float32)
    binary = np.ones_like(grey)
    assert [v.name for v in ev.build_views("bernoulli", grey, None)] == ["bernoulli"]
    views = ev.build_views("bernoulli", grey, binary)
    assert [v.name for v in views] == ["bernoulli", "bernoulli_binarized"]
    assert views[0].images is grey and views[1].images is binary
    assert [v.name for v in ev.build_views("gaussian", grey, binary)] == [
        "bernoulli", "gaussian_binarized"]
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'"):
        ev.likelihood_nll("poisson")


# --- the importance-weighted bound ---------------------------------------------------------


def test_iwae_with_the_exact_posterior_is_the_exact_log_likelihood():
    # Every importance weight equals p(x) when q is the true posterior, for any k and chunking.
    model = LinearGaussianVAE()
    x = model.sample_x(50)
    truth = model.true_nll(x)
    for k, max_batch in [(1, 1000), (7, 3), (64, 1000)]:
        got = ev.iwae_nll(model, _linear_view(model, x), k, max_batch, seed=0)
        np.testing.assert_allclose(got, truth, rtol=1e-4, atol=1e-4)


def test_iwae_bounds_tighten_with_k_and_stay_above_the_true_nll():
    # A deliberately wrong q: -log p(x) <= -IWAE_500 <= -IWAE_50 <= -IWAE_5 <= -ELBO.
    model = LinearGaussianVAE(shift=0.7, log_var_offset=1.0)
    x = model.sample_x(2000)
    view = _linear_view(model, x)
    true_nll = model.true_nll(x).mean()
    exact_neg_elbo = model.exact_neg_elbo(x).mean()
    neg_elbo = ev.elbo_terms(model, view, 500, seed=0)["neg_elbo"].mean()
    iwae = {k: ev.iwae_nll(model, view, k, 50000, seed=1).mean() for k in (1, 5, 50, 500)}
    assert neg_elbo == pytest.approx(exact_neg_elbo, abs=0.1)
    assert iwae[1] == pytest.approx(exact_neg_elbo, abs=0.15)  # k = 1 is a one-sample ELBO
    assert exact_neg_elbo > iwae[5] > iwae[50] > iwae[500] > true_nll
    assert iwae[500] - true_nll < 0.2 * (exact_neg_elbo - true_nll)


def test_elbo_with_exact_posterior_is_unbiased_for_the_nll():
    model = LinearGaussianVAE()
    x = model.sample_x(4000)
    terms = ev.elbo_terms(model, _linear_view(model, x), 500, seed=0)
    np.testing.assert_allclose(model.exact_neg_elbo(x), model.true_nll(x), rtol=1e-9)
    assert terms["neg_elbo"].mean() == pytest.approx(model.true_nll(x).mean(), abs=0.05)


def test_a_fitted_prior_enters_the_elbo_iwae_and_samples():
    # With the exact posterior, log p(x|z) + log p(z) - log q(z|x) = log p(x) for every z: the
    # one-sample -ELBO (Monte Carlo KL against the mixture) and IWAE are exact per image.
    model = ShiftedPriorVAE(LinearGaussianVAE(), shift=[3.0, -1.0], scale=[0.5, 2.0])
    x = model.base.sample_x(50)
    view = _linear_view(model, x)
    terms = ev.elbo_terms(model, view, 7, seed=0)
    np.testing.assert_allclose(terms["neg_elbo"], model.base.true_nll(x), rtol=1e-6)  # float32 z
    np.testing.assert_allclose(ev.iwae_nll(model, view, 5, 1000, seed=0),
                               model.base.true_nll(x), rtol=1e-6)
    z = model.prior.sample(20000, np.random.default_rng(0))
    np.testing.assert_allclose(z.mean(axis=0), [3.0, -1.0], atol=0.05)
    np.testing.assert_allclose(z.std(axis=0), [0.5, 2.0], rtol=0.03)


def test_monte_carlo_kl_is_unbiased_for_the_closed_form():
    # q = N(mu, diag(v)) against p = N(m, diag(S)): KL has a closed form to compare with.
    prior = ShiftedPriorVAE(LinearGaussianVAE(), shift=[1.0, 0.0], scale=[2.0, 0.5]).prior
    rng = np.random.default_rng(0)
    mean, log_var = np.array([[0.5, 0.3]] * 200_000), np.log(np.array([[0.8, 0.1]] * 200_000))
    kl = ev.kl_estimate(prior, mean, log_var, rng.standard_normal(mean.shape))
    var, prior_var = np.exp(log_var[0]), np.array([4.0, 0.25])
    exact = 0.5 * np.sum(var / prior_var + (np.array([1.0, 0.0]) - mean[0]) ** 2 / prior_var
                         - 1.0 + np.log(prior_var / var))
    assert kl.mean() == pytest.approx(exact, abs=0.01)


def test_iwae_plan_bounds_images_times_samples():
    assert ev.iwae_plan(100, 10000) == (100, 100)
    assert ev.iwae_plan(5000, 10000) == (2, 5000)
    assert ev.iwae_plan(7, 3) == (1, 3)
    assert ev.iwae_plan(20000, 10000) == (1, 10000)


def test_iwae_subset_is_seeded_and_sized():
    a = ev.iwae_subset(1000, 100, seed=3)
    assert len(a) == 100 and len(set(a)) == 100 and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(a, ev.iwae_subset(1000, 100, seed=3))
    assert not np.array_equal(a, ev.iwae_subset(1000, 100, seed=4))
    np.testing.assert_array_equal(ev.iwae_subset(50, 0, seed=0), np.arange(50))
    np.testing.assert_array_equal(ev.iwae_subset(50, 80, seed=0), np.arange(50))


# --- active units ---------------------------------------------------------------------------


def test_active_units_counts_dimensions_whose_mean_varies_beyond_the_threshold():
    rng = np.random.default_rng(0)
    n = 20000
    means = np.stack([
        rng.normal(0, 1.0, n),        # active (variance 1)
        np.full(n, 3.0),              # collapsed to a constant
        rng.normal(0, 0.05, n),       # variance 0.0025 < 0.01: inactive
        rng.normal(2, 0.2, n),        # variance 0.04 > 0.01: active
    ], axis=1)
    count, activity = ev.active_units(means, 0.01)
    assert count == 2
    np.testing.assert_allclose(activity, [1.0, 0.0, 0.0025, 0.04], rtol=0.05, atol=1e-9)


def test_active_units_of_a_synthetic_encoder():
    # ToyImageVAE with 4 latents: two depend on the image, two are constants.
    model = ToyImageVAE(latent_dim=4)
    x = np.random.default_rng(0).random((300, 28, 28, 1)).astype(np.float32) ** 3
    means, _ = ev.encode(model, x, batch_size=64)
    assert ev.active_units(means, 1e-6)[0] == 2


# --- Frechet distance ------------------------------------------------------------------------


def _closed_form_w2(mu1, cov1, mu2, cov2):
    """Squared 2-Wasserstein distance via the symmetric form (C1^1/2 C2 C1^1/2)^1/2."""
    def psd_sqrt(c):
        w, v = np.linalg.eigh(c)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    r1 = psd_sqrt(cov1)
    cross = psd_sqrt(r1 @ cov2 @ r1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1 + cov2 - 2 * cross))


def test_frechet_of_one_dimensional_gaussians_is_mean_and_std_gap():
    d = ev.frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]]))
    assert d == pytest.approx((1 + 2) ** 2 + (2 - 3) ** 2)


def test_frechet_matches_closed_form_for_non_commuting_covariances():
    cov1 = np.array([[2.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 0.5]])
    cov2 = np.array([[1.0, -0.4, 0.2], [-0.4, 3.0, 0.0], [0.2, 0.0, 0.7]])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([0.5, -1.0, 2.0])
    expected = _closed_form_w2(mu1, cov1, mu2, cov2)
    assert ev.frechet_distance(mu1, cov1, mu2, cov2) == pytest.approx(expected, rel=1e-8)
    rng = np.random.default_rng(0)
    a = rng.multivariate_normal(mu1, cov1, 200000)
    b = rng.multivariate_normal(mu2, cov2, 200000)
    assert ev.frechet_between(a, b) == pytest.approx(expected, rel=0.02)


def test_frechet_of_a_set_with_itself_is_zero():
    feats = np.random.default_rng(0).standard_normal((500, 16)) @ np.diag(np.arange(1, 17))
    assert ev.frechet_between(feats, feats) == pytest.approx(0.0, abs=1e-6)


def test_frechet_survives_singular_covariances():
    # Fewer rows than features: rank-deficient covariances, sqrtm must still give a number.
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 32)), rng.standard_normal((5, 32)) + 1.0
    d = ev.frechet_between(a, b)
    assert np.isfinite(d) and d > 0


def test_frechet_of_dead_features_is_the_mean_gap():
    # An untrained classifier: most features are 0 for every image, one set is constant.
    rng = np.random.default_rng(1)
    a = np.zeros((50, 64))
    a[:, :3] = rng.standard_normal((50, 3))
    b = np.full((50, 64), 0.5)
    d = ev.frechet_between(a, b)
    mu, cov = ev.feature_stats(a)
    assert d == pytest.approx(np.sum((mu - 0.5) ** 2) + np.trace(cov), rel=1e-9)


# --- sample-quality summaries ---------------------------------------------------------------


def test_class_entropy_is_one_when_uniform_and_zero_for_a_single_class():
    uniform = np.eye(10)[np.arange(1000) % 10]
    assert ev.class_entropy(uniform)[0] == pytest.approx(1.0)
    single = np.eye(10)[np.full(50, 3)]
    entropy, fractions = ev.class_entropy(single)
    assert entropy == 0.0 and fractions[3] == 1.0
    two = np.eye(10)[np.arange(100) % 2]  # two classes equally: ln 2 / ln 10
    assert ev.class_entropy(two)[0] == pytest.approx(LN2 / math.log(10))


def test_recognisable_counts_confident_predictions():
    probs = np.array([[0.95] + [0.05 / 9] * 9, [0.5, 0.5] + [0.0] * 8, [0.0] * 9 + [0.9]])
    assert ev.recognisable(probs, 0.9) == pytest.approx(2 / 3)


def test_sample_quality_reports_reference_numbers_from_the_test_set():
    rng = np.random.default_rng(0)
    test = Predictions(probs=np.eye(10)[np.arange(400) % 10], features=rng.normal(size=(400, 4)))
    samples = Predictions(probs=np.eye(10)[np.zeros(300, int)] * 0.5 + 0.05,
                          features=rng.normal(2.0, 1.0, size=(300, 4)))
    q = ev.sample_quality(samples, test, confidence=0.9, seed=0)
    assert q["recognisable"] == 0.0 and q["test_recognisable"] == 1.0
    assert q["class_entropy"] == 0.0 and q["test_class_entropy"] == pytest.approx(1.0)
    assert q["class_fraction"]["0"] == 1.0 and sum(q["class_fraction"].values()) == 1.0
    assert q["frechet"] == pytest.approx(16.0, rel=0.15)  # mean gap 2 in 4 dims
    assert q["frechet_floor"] < 0.3


# --- the whole evaluation ------------------------------------------------------------------


def _toy_test_set(n=60):
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 10
    images = rng.random((n, 28, 28, 1)) * (labels[:, None, None, None] + 1) / 10
    images[:, :14] *= rng.random((n, 1, 1, 1))  # top half brighter or darker: a 2nd feature
    return images.astype(np.float32), labels


def test_per_class_neg_elbo_is_the_mean_over_that_digit():
    # Class d is an all-(d/10) image; decoder mean 1/2 -> SSE = 784 (d/10 - 1/2)^2, KL = 0.
    labels = np.repeat(np.arange(10), 3)
    grey = np.repeat((labels / 10.0)[:, None, None, None], 28, 1).repeat(28, 2).astype(np.float32)
    model = ConstantVAE(mean=[0.0], log_var=[0.0], logit=0.0, likelihood="gaussian")
    cfg = EvaluateConfig(iwae_samples=2, iwae_images=0, batch_size=7)
    test, per_class, _, _ = ev.evaluate_likelihood(model, ev.build_views("gaussian", grey, None),
                                                grey, labels, cfg)
    for d in range(10):
        expected = 784 * (d / 10 - 0.5) ** 2 + 392 * math.log(math.pi)
        assert per_class["gaussian"][str(d)] == pytest.approx(expected, rel=1e-5)
        assert per_class["bernoulli"][str(d)] == pytest.approx(784 * LN2, rel=1e-5)
    assert test["gaussian"]["rec_nll"] - test["sse"] == pytest.approx(
        ev.gaussian_nll_constant(784), rel=1e-6)


EXPECTED_KEYS = {
    "test": {"bernoulli", "sse", "active_units", "latent_dim"},
    "test.bernoulli": {"rec_nll", "kl", "neg_elbo", "bits_per_dim", "iwae_nll",
                       "iwae_bits_per_dim", "neg_elbo_iwae_subset"},
    "samples": {"recognisable", "class_entropy", "frechet", "frechet_floor",
                "test_recognisable", "test_class_entropy", "class_fraction"},
    "meta": {"likelihood", "trained_view", "test_images", "iwae_samples", "iwae_images",
             "prior_samples", "digit_samples", "style_images", "prior_components",
             "kl_estimator", "iwae_precision",
             "gaussian_nll_constant", "seconds"},
    "meta.seconds": {"elbo", "iwae", "active_units", "samples", "total"},
}


def test_evaluate_writes_a_stable_readable_key_set(tmp_path):
    grey, labels = _toy_test_set()
    model = ToyImageVAE(latent_dim=3)
    classifier = build_classifier(ClassifierConfig(features=8))
    cfg = EvaluateConfig(iwae_samples=4, iwae_images=20, prior_samples=50, batch_size=16)
    metrics = ev.evaluate(model, classifier, grey, labels, None, cfg)
    assert set(metrics) == {"test", "per_class", "samples", "meta"}
    for dotted, keys in EXPECTED_KEYS.items():
        node = metrics
        for part in dotted.split("."):
            node = node[part]
        assert set(node) == keys, dotted
    assert set(metrics["per_class"]["bernoulli"]) == {str(d) for d in range(10)}
    assert metrics["meta"]["iwae_images"] == 20 and metrics["meta"]["test_images"] == 60
    b = metrics["test"]["bernoulli"]
    assert b["neg_elbo"] == pytest.approx(b["rec_nll"] + b["kl"])
    assert b["bits_per_dim"] == pytest.approx(b["neg_elbo"] / (784 * LN2))
    assert metrics["test"]["active_units"] == 2  # the toy's third latent is a constant
    path = tmp_path / "metrics" / "eval.json"
    write_json(path, metrics)
    assert json.loads(path.read_text()) == json.loads(json.dumps(metrics))
    assert [p.name for p in path.parent.iterdir()] == ["eval.json"]  # no temp file left


def test_evaluate_adds_the_binarised_view_when_the_model_learned_binary_pixels():
    grey, labels = _toy_test_set(30)
    binary = (grey > 0.3).astype(np.float32)
    cfg = EvaluateConfig(iwae_samples=2, iwae_images=10, prior_samples=20, batch_size=16)
    metrics = ev.evaluate(ToyImageVAE(), build_classifier(ClassifierConfig(features=8)),
                          grey, labels, binary, cfg)
    assert set(metrics["test"]) == EXPECTED_KEYS["test"] | {"bernoulli_binarized"}
    assert metrics["meta"]["trained_view"] == "bernoulli_binarized"
    assert (metrics["test"]["bernoulli_binarized"]["neg_elbo"]
            != metrics["test"]["bernoulli"]["neg_elbo"])


def test_iwae_views_trained_bounds_only_the_view_the_model_learned():
    grey, labels = _toy_test_set(30)
    binary = (grey > 0.3).astype(np.float32)
    classifier = build_classifier(ClassifierConfig(features=8))
    runs = {
        views: ev.evaluate(ToyImageVAE(), classifier, grey, labels, binary,
                           EvaluateConfig(iwae_samples=2, iwae_images=10, prior_samples=20,
                                          batch_size=16, iwae_views=views))
        for views in ("all", "trained")
    }
    trained = runs["trained"]["test"]
    assert set(trained["bernoulli"]) == {"rec_nll", "kl", "neg_elbo", "bits_per_dim"}
    assert set(trained["bernoulli_binarized"]) == EXPECTED_KEYS["test.bernoulli"]
    # the same seeds: skipping the grey view's bound changes no number that remains
    assert trained["bernoulli_binarized"] == runs["all"]["test"]["bernoulli_binarized"]
    assert trained["bernoulli"].items() <= runs["all"]["test"]["bernoulli"].items()


# --- the real VAE ----------------------------------------------------------------------------


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_evaluate_runs_on_a_real_vae_of_either_likelihood(likelihood):
    tiny = ModelConfig(
        latent_dim=3, likelihood=likelihood,
        encoder=EncoderConfig(filters=(4, 8), kernel_sizes=(3, 3), strides=(2, 2)),
        decoder=DecoderConfig(reshape=(7, 7, 4), filters=(8, 4), kernel_sizes=(3, 3),
                              strides=(2, 2)),
    )
    grey, labels = _toy_test_set(40)
    cfg = EvaluateConfig(iwae_samples=3, iwae_images=10, prior_samples=30, batch_size=16)
    metrics = ev.evaluate(build_vae(tiny), build_classifier(ClassifierConfig(features=8)),
                          grey, labels, None, cfg)
    assert metrics["meta"]["trained_view"] == likelihood
    for view in metrics["test"].values():
        if isinstance(view, dict):
            assert all(math.isfinite(v) for v in view.values())
    if likelihood == "gaussian":
        gap = metrics["test"]["gaussian"]["rec_nll"] - metrics["test"]["sse"]
        assert gap == pytest.approx(392 * math.log(math.pi), rel=1e-5)


# --- drawing the digit asked for ---------------------------------------------------------------


def test_digit_agreement_is_the_fraction_read_as_the_digit_asked_for():
    grey, labels = band_test_set()
    classifier = band_classifier()
    test = classifier_predict(classifier, grey)
    cfg = EvaluateConfig(digit_samples=30, batch_size=16)
    good = ev.digit_quality(BandDigitVAE(), classifier, test, labels, cfg)
    assert good["agreement"] == good["agreement_min"] == 1.0
    bad = ev.digit_quality(BandDigitVAE(wrong={3: 8}), classifier, test, labels, cfg)
    assert bad["per_digit"]["3"]["agreement"] == 0.0 and bad["agreement_min"] == 0.0
    assert bad["agreement"] == pytest.approx(0.9)
    # drawing an 8 when asked for a 3 is far from the 3s; the other digits keep their numbers
    assert bad["per_digit"]["3"]["frechet"] > 10 * good["per_digit"]["3"]["frechet"] + 1
    assert bad["per_digit"]["5"] == good["per_digit"]["5"]
    assert good["frechet_mean"] == pytest.approx(
        np.mean([d["frechet"] for d in good["per_digit"].values()]))


class ThickBandVAE(BandDigitVAE):
    """Band d drawn 1-5 rows thick, the thickness (the "style") set by z_1; `forgetful`
    draws every band 2 rows thick whatever z_1 says."""

    def __init__(self, forgetful: bool = False):
        super().__init__()
        self.forgetful = forgetful

    def prior_distribution(self, digit=None):
        from mnist_vae.prior import GaussianMixture
        if digit is None:
            return GaussianMixture.standard(2)
        return GaussianMixture(np.zeros(1), np.array([[float(digit), 0.0]]),
                               np.diag([0.01, 1.0])[None])

    def decode_logits(self, z):
        logits = np.full((len(z), 28, 28, 1), -8.0, np.float32)
        for image, (band, style) in zip(logits, np.asarray(z, np.float64), strict=True):
            rows = 2 if self.forgetful else int(np.clip(np.round(style), -2, 2)) + 3
            start = 2 * int(np.clip(np.round(band), 0, 9))
            image[start:start + rows] = 8.0
        return logits

    def encode(self, x):
        bright = np.asarray(x).reshape(len(x), 28, 28).mean(axis=2) > 0.5
        mean = np.stack([np.argmax(bright, axis=1) / 2.0, bright.sum(axis=1) - 3.0], axis=1)
        return mean, np.full_like(mean, -4.0)


def test_style_quality_reads_the_target_digit_and_whether_the_strokes_kept_their_weight():
    labels = np.repeat(np.arange(10), 12)
    thickness = np.random.default_rng(0).integers(-2, 3, len(labels))
    logits = ThickBandVAE().decode_logits(np.stack([labels, thickness], axis=1))
    x = (1 / (1 + np.exp(-logits))).astype(np.float32)
    cfg = EvaluateConfig(style_images=10, batch_size=16)
    keeps = ev.style_quality(ThickBandVAE(), band_classifier(), x, labels, cfg)
    assert keeps["ink_correlation"] == pytest.approx(1.0, abs=1e-6)
    assert keeps["ink_correlation_reconstruction"] == pytest.approx(1.0, abs=1e-6)
    forgets = ev.style_quality(ThickBandVAE(forgetful=True), band_classifier(), x, labels, cfg)
    assert forgets["ink_correlation"] == 0.0  # every redrawing has the same ink
    assert forgets["agreement"] == forgets["agreement_min"] == 1.0  # 2-row bands read right
    assert set(forgets["per_digit"]) == {str(d) for d in range(10)}


def test_style_agreement_is_the_fraction_of_redrawings_read_as_the_target():
    labels = np.repeat(np.arange(10), 10)
    logits = BandDigitVAE().decode_logits(np.stack([labels, np.zeros(len(labels))], axis=1))
    x = (1 / (1 + np.exp(-logits))).astype(np.float32)  # noise-free: codes exactly (d, 0)
    cfg = EvaluateConfig(style_images=10, batch_size=16)
    good = ev.style_quality(BandDigitVAE(), band_classifier(), x, labels, cfg)
    assert good["agreement"] == good["agreement_min"] == 1.0
    bad = ev.style_quality(BandDigitVAE(wrong={3: 8}), band_classifier(), x, labels, cfg)
    assert bad["per_digit"]["3"] == 0.0 and bad["agreement_min"] == 0.0


def test_evaluate_measures_digits_only_for_a_model_that_draws_them():
    grey, labels = band_test_set(10)
    cfg = EvaluateConfig(iwae_samples=2, iwae_images=10, prior_samples=20, digit_samples=10,
                         batch_size=16)
    drawn = ev.evaluate(BandDigitVAE(), band_classifier(), grey, labels, None, cfg)
    assert set(drawn["digits"]["per_digit"]) == {str(d) for d in range(10)}
    assert drawn["meta"]["digit_samples"] == 10 and "digits" in drawn["meta"]["seconds"]
    assert set(drawn["digits"]["styles"]) == {"agreement", "agreement_min", "ink_correlation",
                                              "ink_correlation_reconstruction", "per_digit"}
    assert drawn["meta"]["style_images"] == 100 and "styles" in drawn["meta"]["seconds"]
    plain = ev.evaluate(ToyImageVAE(), band_classifier(), grey, labels, None, cfg)
    assert "digits" not in plain and plain["meta"]["digit_samples"] == 0
    assert plain["meta"]["style_images"] == 0


# --- the IWAE's fast path against straightforward and previous implementations ---------------


TINY_VAE = tiny_params().model


@pytest.fixture(scope="module")
def vae_with_mixture():
    from benchmarks.iwae_speed import seeded_mixture

    model = build_vae(TINY_VAE)
    model.set_prior(seeded_mixture(TINY_VAE.latent_dim, model.prior.components, seed=3))
    return model


def _binary_images(n, seed=0):
    return (np.random.default_rng(seed).random((n, 28, 28, 1)) < 0.3).astype("float32")


def _reference_iwae(model, x, k, seed):
    """Image by image in float64 with SciPy densities; the draws of a one-chunk plan."""
    from scipy import special, stats

    rng = np.random.default_rng(seed)
    mean, log_var = (np.asarray(t, np.float64) for t in model.encode(x))
    eps = rng.standard_normal((k, len(x), mean.shape[1]))
    prior = model.prior_distribution()
    out = []
    for i in range(len(x)):
        z = mean[i] + np.exp(0.5 * log_var[i]) * eps[:, i]
        logits = np.asarray(model.decode_logits(z.astype("float32")), np.float64).reshape(k, -1)
        t = x[i].reshape(-1).astype(np.float64)
        log_px = -np.sum(np.logaddexp(0, -logits) * t + np.logaddexp(0, logits) * (1 - t), 1)
        log_pz = special.logsumexp(
            [w + stats.multivariate_normal(mu, tril @ tril.T).logpdf(z)
             for w, mu, tril in zip(prior.normalized_log_weights, prior.means, prior.scale_tril,
                                    strict=True)],
            axis=0)
        log_q = stats.multivariate_normal(mean[i], np.diag(np.exp(log_var[i]))).logpdf(z)
        out.append(math.log(k) - special.logsumexp(log_px + log_pz - log_q))
    return np.array(out)


@pytest.mark.parametrize("decode_rows", [1000, 7])
def test_iwae_matches_a_straightforward_float64_reference(vae_with_mixture, monkeypatch,
                                                          decode_rows):
    monkeypatch.setattr(ev, "DECODE_ROWS", decode_rows)  # 7: many decoder calls per chunk
    x = _binary_images(4)
    got = ev.iwae_nll(vae_with_mixture, ev.View("bernoulli", x, losses.bernoulli_nll),
                      k=50, max_batch=200, seed=5)
    np.testing.assert_allclose(got, _reference_iwae(vae_with_mixture, x, 50, seed=5), atol=1e-3)


@pytest.mark.parametrize(("k", "max_batch"), [(45, 40), (30, 70), (20, 1000)])
def test_iwae_per_image_equals_the_previous_code_path(vae_with_mixture, k, max_batch):
    from benchmarks.iwae_speed import reference_iwae_nll

    view = ev.View("bernoulli", _binary_images(5, seed=1), losses.bernoulli_nll)
    np.testing.assert_allclose(ev.iwae_nll(vae_with_mixture, view, k, max_batch, seed=2),
                               reference_iwae_nll(vae_with_mixture, view, k, max_batch, seed=2),
                               rtol=0, atol=1e-4)


def test_iwae_is_the_same_number_for_the_same_seed(vae_with_mixture):
    view = ev.View("bernoulli", _binary_images(3, seed=4), losses.bernoulli_nll)
    first = ev.iwae_nll(vae_with_mixture, view, k=40, max_batch=50, seed=9)
    np.testing.assert_array_equal(ev.iwae_nll(vae_with_mixture, view, k=40, max_batch=50, seed=9),
                                  first)
    assert not np.array_equal(ev.iwae_nll(vae_with_mixture, view, k=40, max_batch=50, seed=10),
                              first)


# --- bfloat16 decoding, refined in float32 where the weight is --------------------------------


def test_heaviest_picks_each_images_fewest_samples_below_the_left_over():
    log_w = np.log(np.array([[0.15, 0.25], [0.5, 0.25], [0.05, 0.25], [0.3, 0.25]]))
    sample, image, left = ev.heaviest(log_w, left_over=0.1)
    # image 0: 0.5, 0.3 and 0.15 leave 0.05; image 1: three quarters still leave 0.25, so all
    assert sorted(zip(image.tolist(), sample.tolist(), strict=True)) == [
        (0, 0), (0, 1), (0, 3), (1, 0), (1, 1), (1, 2), (1, 3)]
    np.testing.assert_allclose(left, [0.05, 0.0], atol=1e-12)


@pytest.mark.parametrize("left_over", [0.0, -1.0])
def test_heaviest_with_nothing_to_leave_picks_every_sample_despite_rounding(left_over):
    # one image's 500 weights whose running total, summed in another order, ends above the whole
    log_w = 5 * np.random.default_rng(30).normal(size=(500, 1))
    sample, image, _ = ev.heaviest(log_w, left_over)
    assert sorted(sample.tolist()) == list(range(500)) and set(image.tolist()) == {0}


def test_refine_heaviest_recomputes_the_samples_holding_the_weight():
    log_w = np.log(np.array([[0.6, 0.1], [0.3, 0.1], [0.0999, 0.1], [0.0001, 0.7]]))
    ratio = np.zeros_like(log_w)
    z = np.arange(8, dtype=np.float64).reshape(4, 2, 1)  # z[i, j] names sample i of image j
    x = np.zeros((2, 1))
    seen = []

    def exact(z_rows, x_rows):
        seen.extend(int(v) for v in z_rows[:, 0])
        return np.full(len(z_rows), np.log(0.5))

    count, error, shift = ev.refine_heaviest(log_w, ratio, z, x, exact, left_over=1e-3)
    # image 0: 0.6 + 0.3 + 0.0999 leaves 1e-4 < 1e-3; image 1: all four (0.1 each is left)
    assert sorted(seen) == [0, 1, 2, 3, 4, 5, 7] and count == 7
    assert log_w[0, 0] == log_w[3, 1] == np.log(0.5) and log_w[3, 0] == np.log(0.0001)
    assert error == pytest.approx(np.log(0.5) - np.log(0.0999))
    assert 0 < shift < 1e-3  # image 0's 1e-4 left over, at that error


def test_bfloat16_iwae_keeps_the_float32_estimate_within_its_stated_bound(vae_with_mixture):
    view = ev.View("bernoulli", _binary_images(4, seed=6), losses.bernoulli_nll)
    exact = ev.iwae_estimate(vae_with_mixture, view, k=200, max_batch=400, seed=3)
    fast = ev.iwae_estimate(vae_with_mixture, view, k=200, max_batch=400, seed=3,
                            precision="bfloat16")
    assert exact.refined_fraction == 1.0 and exact.max_shift_nats == 0.0
    assert 0 < fast.refined_fraction < 1 and fast.bf16_max_error > 0
    assert fast.max_shift_nats < 0.01
    np.testing.assert_allclose(fast.nll, exact.nll, rtol=0, atol=fast.max_shift_nats + 1e-4)


def test_bfloat16_iwae_refining_everything_is_the_float32_estimate(vae_with_mixture):
    view = ev.View("bernoulli", _binary_images(3, seed=7), losses.bernoulli_nll)
    fast = ev.iwae_estimate(vae_with_mixture, view, k=60, max_batch=100, seed=4,
                            precision="bfloat16", left_over=0.0)
    assert fast.refined_fraction == 1.0
    np.testing.assert_allclose(fast.nll, ev.iwae_nll(vae_with_mixture, view, 60, 100, seed=4),
                               rtol=1e-6)


def test_bfloat16_iwae_unrefined_says_it_knows_no_bound(vae_with_mixture):
    view = ev.View("bernoulli", _binary_images(3, seed=7), losses.bernoulli_nll)
    raw = ev.iwae_estimate(vae_with_mixture, view, k=60, max_batch=100, seed=4,
                           precision="bfloat16", left_over=1.0)
    assert raw.refined_fraction == 0.0
    assert raw.bf16_max_error is None and raw.max_shift_nats is None
    exact = ev.iwae_nll(vae_with_mixture, view, 60, 100, seed=4)
    assert not np.array_equal(raw.nll, exact)
    np.testing.assert_allclose(raw.nll, exact, atol=1.0)


@pytest.mark.parametrize(("flags", "used"), [([], "float32"), (["avx512_bf16"], "bfloat16"),
                                             (["amx_bf16"], "bfloat16")])
def test_auto_iwae_precision_is_bfloat16_only_on_native_bf16(monkeypatch, flags, used):
    monkeypatch.setattr(ev, "cpu_facts", lambda: {"model": "test CPU", "bf16_flags": flags})
    assert ev.iwae_precision("auto") == used
    assert ev.iwae_precision("float32") == "float32"
    assert ev.iwae_precision("bfloat16") == "bfloat16"


def test_evaluate_records_the_iwae_precision_and_its_refinement(vae_with_mixture):
    grey, labels = _binary_images(6, seed=8), np.arange(6) % 10
    cfg = EvaluateConfig(iwae_samples=50, iwae_images=0, batch_size=6, iwae_max_batch=100,
                         iwae_precision="bfloat16")
    views = ev.build_views("bernoulli", grey, None)
    test, _, _, facts = ev.evaluate_likelihood(vae_with_mixture, views, grey, labels, cfg)
    assert facts["asked"] == facts["used"] == "bfloat16"
    assert 0 < facts["bernoulli"]["refined_fraction"] <= 1
    assert facts["bernoulli"]["max_shift_nats"] < 0.01
    exact_cfg = dataclasses.replace(cfg, iwae_precision="float32")
    exact, _, _, exact_facts = ev.evaluate_likelihood(vae_with_mixture, views, grey, labels,
                                                      exact_cfg)
    assert exact_facts["bernoulli"]["refined_fraction"] == 1.0
    assert test["bernoulli"]["iwae_nll"] == pytest.approx(exact["bernoulli"]["iwae_nll"],
                                                          abs=0.01)
