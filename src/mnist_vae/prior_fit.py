"""Fitting the prior after training: a Gaussian mixture on codes z ~ q(z|x) (see prior.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from mnist_vae.config import PriorConfig
from mnist_vae.prior import GaussianMixture, fit_mixture, require_enough_codes


def check_prior_fit(cfg: PriorConfig, train_images: int) -> None:
    """The mixture's fit, checked before training rather than after it."""
    if cfg.kind == "mixture":
        require_enough_codes(train_images * cfg.fit_samples, cfg.components,
                             f" from {train_images} training images x {cfg.fit_samples}")



def sample_codes(model: Any, images: np.ndarray, per_image: int,
                 rng: np.random.Generator) -> np.ndarray:
    """`per_image` draws z ~ q(z|x) for every image: samples of the aggregate posterior."""
    mean, log_var = (np.asarray(t, np.float64) for t in model.encode(images))
    return np.concatenate([mean + np.exp(0.5 * log_var) * rng.standard_normal(mean.shape)
                           for _ in range(per_image)])


def fit_prior(model: Any, images: np.ndarray, val_images: np.ndarray, cfg: PriorConfig,
              seed: int) -> dict[str, Any]:
    """With `mixture`, replace N(0, I) by a Gaussian mixture fitted to codes z ~ q(z|x) of
    `images` (see prior.py). Returns what the fit did and the mean log p of the training codes
    and of validation codes, under the mixture and under N(0, I): a mixture that overfits
    (too many components for the data) scores the validation codes far below the training ones.
    """
    if cfg.kind == "standard":
        return {"kind": "standard"}
    rng = np.random.default_rng(seed)
    codes = sample_codes(model, images, cfg.fit_samples, rng)
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
