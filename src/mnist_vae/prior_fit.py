"""Fitting the priors after training: Gaussian mixtures on codes z ~ q(z|x) (see prior.py),
p(z) over all images and, with `conditional`, p(z | digit) over each digit's images."""

from __future__ import annotations

from typing import Any

import numpy as np

from mnist_vae.config import PriorConfig
from mnist_vae.prior import (
    DIGITS,
    GaussianMixture,
    fit_digit_mixtures,
    fit_mixture,
    require_enough_codes,
)


def check_prior_fit(cfg: PriorConfig, train_images: int) -> None:
    """The mixtures' fits, checked before training rather than after it."""
    if cfg.kind == "mixture":
        require_enough_codes(train_images * cfg.fit_samples, cfg.components,
                             f" from {train_images} training images x {cfg.fit_samples}")
    if cfg.conditional:  # each digit is about a tenth of the images
        require_enough_codes(train_images * cfg.fit_samples // DIGITS, cfg.components_per_digit,
                             f" per digit from {train_images} training images x "
                             f"{cfg.fit_samples}", "model.prior.components_per_digit")


def sample_codes(model: Any, images: np.ndarray, per_image: int,
                 rng: np.random.Generator) -> np.ndarray:
    """`per_image` draws z ~ q(z|x) for every image: samples of the aggregate posterior."""
    mean, log_var = (np.asarray(t, np.float64) for t in model.encode(images))
    return np.concatenate([mean + np.exp(0.5 * log_var) * rng.standard_normal(mean.shape)
                           for _ in range(per_image)])


def fit_prior(model: Any, images: np.ndarray, val_images: np.ndarray, cfg: PriorConfig,
              seed: int, labels: np.ndarray | None = None) -> dict[str, Any]:
    """With `mixture`, replace N(0, I) by a Gaussian mixture fitted to codes z ~ q(z|x) of
    `images` (see prior.py). Returns what the fit did and the mean log p of the training codes
    and of validation codes, under the mixture and under N(0, I): a mixture that overfits
    (too many components for the data) scores the validation codes far below the training ones.
    With `conditional`, then also fit p(z | digit) to the same codes grouped by `labels`; it
    draws no random numbers of its own, so p(z) and every unconditional number stay the same.
    """
    if cfg.kind == "standard" and not cfg.conditional:
        return {"kind": "standard"}
    rng = np.random.default_rng(seed)
    codes = sample_codes(model, images, cfg.fit_samples, rng)
    facts = {"kind": "standard"} if cfg.kind == "standard" else _fit_mixture_prior(
        model, codes, val_images, cfg, seed, rng)
    if cfg.conditional:
        if labels is None:
            raise ValueError("model.prior.conditional: the per-digit prior needs the labels")
        if cfg.digit_codes == "mean":  # the encoder's means: no random numbers drawn
            codes = np.asarray(model.encode(images)[0], np.float64)
        else:
            labels = np.tile(labels, cfg.fit_samples)
        mixtures, digit_facts = fit_digit_mixtures(
            codes, labels, cfg.components_per_digit, cfg.covariance, cfg.fit_iterations, seed,
            cfg.digit_temperature)
        model.set_digit_prior(mixtures)
        facts["digits"] = digit_facts
    return facts


def _fit_mixture_prior(model: Any, codes: np.ndarray, val_images: np.ndarray,
                       cfg: PriorConfig, seed: int, rng: np.random.Generator) -> dict[str, Any]:
    """p(z) := the mixture fitted to `codes`, and its facts (see `fit_prior`)."""
    mixture, facts = fit_mixture(codes, cfg.components, cfg.covariance, cfg.fit_iterations, seed)
    model.set_prior(mixture)
    val_codes = sample_codes(model, val_images, 1, rng)
    standard = GaussianMixture.standard(model.latent_dim)
    mean_log_prob = {
        f"{name}_log_prob{suffix}": round(float(np.mean(prior.log_prob(z))), 4)
        for name, z in (("codes", codes), ("val_codes", val_codes))
        for suffix, prior in (("", mixture), ("_standard", standard))
    }
    return {"kind": "mixture", **facts, **mean_log_prob}
