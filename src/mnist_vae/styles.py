"""Style transfer: a written digit redrawn as another, by optimal transport between digit priors.

The decoder sees only z, so a digit's "style" is where its code sits inside its digit's code
distribution. Restyling image x of digit c as digit d encodes x (the posterior mean z), then
moves z with the optimal-transport (Monge) map between Gaussians moment-matched to p(z | c)
and p(z | d): z' = mu_d + A (z - mu_c), A = S_c^-1/2 (S_c^1/2 S_d S_c^1/2)^1/2 S_c^-1/2.
Of all maps carrying the one Gaussian onto the other, it moves codes least on average
(Knott & Smith 1984), so a code's place in c's distribution (bold, slanted, small) becomes the
nearest matching place in d's. Like a drawing from p(z | d), the moved code's
offset from mu_d is then scaled by the model's `prior.digit_temperature` (1.0: the plain map,
under which restyling to its own digit is the identity).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import linalg

from mnist_vae.inference import decode_means, encode
from mnist_vae.prior import DIGITS, GaussianMixture, check_digit


def moments(mixture: GaussianMixture) -> tuple[np.ndarray, np.ndarray]:
    """Mean [d] and covariance [d, d] of a Gaussian mixture."""
    weights = np.exp(mixture.normalized_log_weights)
    mean = weights @ mixture.means
    centred = mixture.means - mean
    within = np.einsum("kij,klj->kil", mixture.scale_tril, mixture.scale_tril)
    cov = np.einsum("k,kij->ij", weights, within + centred[:, :, None] * centred[:, None, :])
    return mean, (cov + cov.T) / 2


def transport_map(source: GaussianMixture, target: GaussianMixture
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) with z' = A z + b, the optimal-transport map between the two mixtures'
    moment-matched Gaussians."""
    mu_s, cov_s = moments(source)
    mu_t, cov_t = moments(target)
    root = np.real(linalg.sqrtm(cov_s))
    inverse_root = np.linalg.inv(root)
    middle = np.real(linalg.sqrtm(root @ cov_t @ root))
    a = inverse_root @ middle @ inverse_root
    a = (a + a.T) / 2  # symmetric in exact arithmetic
    return a, mu_t - a @ mu_s


def drawing_temperature(model: Any) -> float:
    """The model's `prior.digit_temperature` (1.0 for a model without a config)."""
    config = getattr(model, "model_config", None)
    return config.prior.digit_temperature if config is not None else 1.0


def restyle_codes(model: Any, codes: np.ndarray, labels: np.ndarray, digit: int,
                  temperature: float | None = None) -> np.ndarray:
    """Codes [N, d] of digits `labels` moved to where `digit`'s codes sit in the same style;
    `temperature` (default: the model's `prior.digit_temperature`) scales the offset from
    the digit's mean, as it scales the spread of its drawings."""
    digit = check_digit(digit)
    if temperature is None:
        temperature = drawing_temperature(model)
    target = model.prior_distribution(digit)
    centre = moments(target)[0]
    moved = np.empty_like(codes, dtype=np.float64)
    for source in range(DIGITS):
        mine = labels == source
        if mine.any():
            a, b = transport_map(model.prior_distribution(source), target)
            moved[mine] = centre + temperature * (codes[mine] @ a.T + b - centre)
    return moved


def restyle(model: Any, images: np.ndarray, labels: np.ndarray, digit: int,
            batch_size: int = 500, temperature: float | None = None) -> np.ndarray:
    """Images [N, 28, 28, 1] of digits `labels`, redrawn as `digit` in their own style
    (decoder means, float32 [N, 28, 28, 1]). The model must carry p(z | digit)."""
    if not getattr(model, "draws_digits", False):
        raise ValueError("this model has no per-digit prior, so it cannot redraw a style as "
                         "another digit; train it with model.prior.conditional: true")
    labels = np.asarray(labels)
    if len(labels) != len(images):
        raise ValueError(f"one label per image: got {len(images)} images, {len(labels)} labels")
    codes, _ = encode(model, np.asarray(images, np.float32), batch_size)
    moved = restyle_codes(model, codes, labels, digit, temperature)
    return decode_means(model, moved, batch_size)


def style_sheet(model: Any, images: np.ndarray, labels: np.ndarray,
                batch_size: int = 500) -> np.ndarray:
    """[N, 11, 28, 28, 1]: each image, then it redrawn as 0, 1, ..., 9."""
    columns = [np.asarray(images, np.float32)]
    columns += [restyle(model, images, labels, digit, batch_size) for digit in range(DIGITS)]
    return np.stack(columns, axis=1)
