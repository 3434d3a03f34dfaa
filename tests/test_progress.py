"""Progress bars: what they print on a terminal and in a log, and that they change no number."""

import io

import numpy as np

from mnist_vae import evaluation as ev
from mnist_vae import inference
from mnist_vae import progress as pg
from mnist_vae.classifier import build_classifier
from mnist_vae.config import ClassifierConfig, EvaluateConfig
from mnist_vae.prior import GaussianMixture, fit_mixture
from toy_models import ToyImageVAE


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_in_a_log_each_update_is_one_plain_line_with_the_time_left(monkeypatch):
    monkeypatch.setattr(pg, "LOG_INTERVAL_S", 0.0)
    log = io.StringIO()
    assert list(pg.progress(range(4), desc="IWAE", unit="batch", stream=log)) == [0, 1, 2, 3]
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) >= 2
    assert all(line.startswith("IWAE: ") and " left]" in line for line in lines)
    assert lines[0].startswith("IWAE:   0% 0/4 batch") and lines[-1].startswith("IWAE: 100% 4/4")
    assert len(set(lines)) == len(lines)  # the finished bar once


def test_in_a_log_a_step_shorter_than_the_interval_prints_nothing():
    log = io.StringIO()
    for _ in pg.progress(range(1000), desc="ELBO", stream=log):
        pass
    assert log.getvalue() == ""


def test_on_a_terminal_it_is_a_redrawn_bar():
    screen = Terminal()
    with pg.progress(desc="prior EM", total=3, unit="iteration", stream=screen) as bar:
        bar.update(3)
    assert "\r" in screen.getvalue() and "3/3" in screen.getvalue() and "|" in screen.getvalue()


def test_keras_shows_its_bar_on_a_terminal_and_a_line_per_epoch_in_a_log():
    assert pg.keras_verbose(Terminal()) == 1
    assert pg.keras_verbose(io.StringIO()) == 2


def _toy_test_set(n=60):
    rng = np.random.default_rng(3)
    return rng.random((n, 28, 28, 1)).astype(np.float32), np.arange(n) % 10


def test_evaluate_gives_the_same_numbers_with_and_without_bars(monkeypatch, capsys):
    monkeypatch.setattr(pg, "LOG_INTERVAL_S", 0.0)  # every step prints, however short
    grey, labels = _toy_test_set()
    classifier = build_classifier(ClassifierConfig(features=8))
    cfg = EvaluateConfig(iwae_samples=4, iwae_images=20, prior_samples=50, batch_size=16)
    shown = ev.evaluate(ToyImageVAE(latent_dim=3), classifier, grey, labels, None, cfg)
    log = capsys.readouterr().err
    for step in ("ELBO (bernoulli)", "IWAE k=4 (bernoulli)", "active units", "prior samples"):
        assert f"{step}: 100%" in log, step
    monkeypatch.setattr(inference, "progress", lambda iterable, **_: iterable)
    silent = ev.evaluate(ToyImageVAE(latent_dim=3), classifier, grey, labels, None, cfg)
    assert capsys.readouterr().err == ""
    for metrics in (shown, silent):
        del metrics["meta"]["seconds"]
    assert shown == silent


def test_the_em_bar_counts_iterations_and_leaves_the_fit_as_scikit_learn_makes_it(monkeypatch,
                                                                                 capsys):
    monkeypatch.setattr(pg, "LOG_INTERVAL_S", 0.0)
    from sklearn.mixture import GaussianMixture as SkMixture

    truth = GaussianMixture(np.log([0.3, 0.7]), np.array([[-3.0, 0.0], [2.0, 1.0]]),
                            np.stack([np.eye(2), 0.5 * np.eye(2)]))
    codes = truth.sample(2000, np.random.default_rng(4))
    fitted, facts = fit_mixture(codes, components=3, covariance="full", max_iter=100, seed=5)
    plain = SkMixture(3, covariance_type="full", max_iter=100, reg_covar=1e-6,
                      random_state=5).fit(codes)
    np.testing.assert_array_equal(fitted.means, plain.means_)
    np.testing.assert_array_equal(fitted.log_weights, np.log(plain.weights_))
    np.testing.assert_array_equal(fitted.scale_tril, np.linalg.cholesky(plain.covariances_))
    assert facts["iterations"] == plain.n_iter_ > 1
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("prior EM (3 components, stops when converged):")
    assert f" {plain.n_iter_}/100 iteration " in last

