"""The prior p(z) of the generative model: N(0, I), or a Gaussian mixture fitted after training.

A VAE trained against N(0, I) encodes the training digits into a region that does not fill
the prior: draws from the empty parts decode to blurs. Fitting a Gaussian mixture to codes
z ~ q(z | x) of the training images, by maximum likelihood, maximises the ELBO's
E_x E_q[log p(z)] over the prior with the encoder and decoder fixed, which tightens the bound
by however much better than N(0, I) it scores the codes, and it puts new samples where the
decoder learned to draw ("ex-post density estimation": Ghosh et al. 2020; the two-stage VAE of
Dai & Wipf 2019).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

from mnist_vae.progress import progress

LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class GaussianMixture:
    """sum_k w_k N(z; mean_k, L_k L_k^T), in float64; K = 1, mean 0, L = I is N(0, I)."""

    log_weights: np.ndarray  # [K]
    means: np.ndarray  # [K, d]
    scale_tril: np.ndarray  # [K, d, d], lower-triangular Cholesky factors of the covariances

    @classmethod
    def standard(cls, dim: int) -> GaussianMixture:
        return cls(np.zeros(1), np.zeros((1, dim)), np.eye(dim)[None])

    @property
    def components(self) -> int:
        return len(self.log_weights)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def normalized_log_weights(self) -> np.ndarray:
        """log w_k summing to exactly 1 in float64 (stored weights are float32)."""
        return self.log_weights - special.logsumexp(self.log_weights)

    @property
    def is_standard(self) -> bool:
        """Every component is N(0, I), so the mixture is: the KL to it has a closed form."""
        return not self.means.any() and np.array_equal(
            self.scale_tril, np.broadcast_to(np.eye(self.dim), self.scale_tril.shape))

    def whitening(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(weights [d, K*d], shift [K, d], log_det [K]) with L_k^-1 (z - mean_k) for every k
        as (z @ weights).reshape(N, K, d) - shift: one matrix product, much faster than K solves."""
        inverse = np.linalg.inv(self.scale_tril)  # [K, d, d]
        shift = np.einsum("kij,kj->ki", inverse, self.means)
        log_det = np.sum(np.log(np.diagonal(self.scale_tril, axis1=1, axis2=2)), axis=1)
        return inverse.reshape(-1, self.dim).T, shift, log_det

    def log_prob(self, z: np.ndarray) -> np.ndarray:
        """log p(z) for rows z [N, d]."""
        z = np.asarray(z, np.float64)
        if self.is_standard:
            return -0.5 * np.sum(z**2 + LOG_2PI, axis=-1)
        weights, shift, log_det = self.whitening()
        y = (z @ weights).reshape(len(z), self.components, -1) - shift
        per_component = -0.5 * (np.einsum("nkd,nkd->nk", y, y) + self.dim * LOG_2PI) - log_det
        return special.logsumexp(per_component + self.normalized_log_weights, axis=1)

    def tempered(self, temperature: float) -> GaussianMixture:
        """Every component's spread times `temperature` (< 1: draws nearer the means)."""
        return GaussianMixture(self.log_weights, self.means, self.scale_tril * temperature)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n draws [n, d]; for N(0, I) exactly rng.standard_normal((n, d))."""
        eps = rng.standard_normal((n, self.dim))
        if self.is_standard:
            return eps
        which = rng.choice(self.components, size=n, p=np.exp(self.normalized_log_weights))
        return self.means[which] + np.einsum("nij,nj->ni", self.scale_tril[which], eps)


def require_enough_codes(codes: int, components: int, origin: str = "",
                         key: str = "model.prior.components") -> None:
    """EM needs at least one code per component; `origin` says where the codes come from."""
    if codes < components:
        raise ValueError(
            f"{key}: {components} components need at least as many codes, "
            f"got {codes}{origin}; lower {key} or raise data.train_limit"
        )


def fit_mixture(codes: np.ndarray, components: int, covariance: str, max_iter: int,
                seed: int) -> tuple[GaussianMixture, dict[str, Any]]:
    """Maximum-likelihood mixture of `codes` [N, d] by EM (scikit-learn), and facts of the fit."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture as SkMixture

    class EMWithProgress(SkMixture):
        """scikit-learn's EM, advancing a bar after each iteration (its per-iteration hook)."""

        def _print_verbose_msg_iter_end(self, n_iter, diff_ll):
            bar.update()
            super()._print_verbose_msg_iter_end(n_iter, diff_ll)

    require_enough_codes(len(codes), components)
    start = time.perf_counter()
    sk = EMWithProgress(components, covariance_type=covariance, max_iter=max_iter,
                        reg_covar=1e-6, random_state=seed)
    with (warnings.catch_warnings(),
          progress(desc=f"prior EM ({components} components, stops when converged)",
                   total=max_iter, unit="iteration") as bar):
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported in the facts instead
        sk.fit(codes)
    covariances = sk.covariances_
    if covariance == "diag":
        covariances = np.stack([np.diag(c) for c in covariances])
    mixture = GaussianMixture(np.log(sk.weights_), sk.means_.astype(np.float64),
                              np.linalg.cholesky(covariances))
    facts = {"components": components, "covariance": covariance, "codes": len(codes),
             "iterations": int(sk.n_iter_), "converged": bool(sk.converged_),
             "seconds": round(time.perf_counter() - start, 2)}
    return mixture, facts


# --- p(z | digit): one mixture per digit, for drawing the digit a person asks for -----------

DIGITS = 10


def check_digit(value: Any) -> int:
    """`value` as a digit 0-9, or a ValueError saying what was wrong (no bools, floats or text)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"digit must be a whole number 0-9, got {value!r}")
    if not 0 <= value < DIGITS:
        raise ValueError(f"digit must be 0-9, got {value}")
    return int(value)


def fit_digit_mixtures(codes: np.ndarray, labels: np.ndarray, components: int, covariance: str,
                       max_iter: int, seed: int, temperature: float = 1.0
                       ) -> tuple[list[GaussianMixture], dict[str, Any]]:
    """p(z | d) for d = 0..9: a mixture fitted by EM to the codes of the images labelled d,
    every component's spread then times `temperature`."""
    mixtures, per_digit = [], {}
    for digit in range(DIGITS):
        mine = codes[labels == digit]
        require_enough_codes(len(mine), components, f" for digit {digit}",
                             "model.prior.components_per_digit")
        mixture, facts = fit_mixture(mine, components, covariance, max_iter, seed + digit)
        mixtures.append(mixture.tempered(temperature))
        per_digit[str(digit)] = {k: facts[k] for k in ("codes", "iterations", "converged")}
    facts = {"components_per_digit": components, "covariance": covariance,
             "temperature": temperature, "per_digit": per_digit}
    return mixtures, facts
