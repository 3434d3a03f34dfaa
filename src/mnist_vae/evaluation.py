"""What the VAE learned, in numbers: test-set likelihood bounds and measured sample quality.

Every likelihood is in nats per image (summed over pixels). Each "view" scores the test set
one way: `bernoulli` (grey pixels as Bernoulli targets, the convention that makes any two
models comparable) always, plus the likelihood and data the model was trained with when that
differs (`gaussian`, `bernoulli_binarized`, ...). The functions take any object with the VAE's
`encode(x) -> (mean, log_var)` and `decode_logits(z) -> logits` methods, so hand-made models with
known distributions can check the arithmetic. A model's prior is its `prior_distribution()`,
N(0, I) when it has none.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
from scipy import special

from mnist_vae import losses
from mnist_vae.classifier import Predictions
from mnist_vae.classifier import predict as classifier_predict
from mnist_vae.config import DataConfig, EvaluateConfig
from mnist_vae.data import Splits, split
from mnist_vae.inference import (
    DECODE_ROWS,
    LogLikelihood,
    batches,
    decode_means,
    encode,
    image_logits,
    log_likelihood_fn,
    log_prior_fn,
    prior_of,
    to_numpy,
)
from mnist_vae.precision import cpu_facts
from mnist_vae.prior import LOG_2PI, GaussianMixture
from mnist_vae.styles import restyle_codes

NUM_CLASSES = 10

NllFn = Callable[[Any, Any], Any]  # (targets, logits) -> per-image negative log-likelihood


@dataclass(frozen=True)
class View:
    """One way of scoring the test set: what the encoder sees and the likelihood of it."""

    name: str
    images: np.ndarray
    nll: NllFn


def bits_per_dim(nats: float, dims: int) -> float:
    """Nats per image -> bits per pixel: nats / (dims ln 2)."""
    return float(nats) / (dims * math.log(2.0))


def kl_estimate(prior: GaussianMixture, mean: np.ndarray, log_var: np.ndarray,
                eps: np.ndarray) -> np.ndarray:
    """KL(q(z|x) || p(z)) per row: closed form for N(0, I), else the one-sample Monte Carlo
    log q(z|x) - log p(z) at z = mean + sigma * eps (unbiased)."""
    if prior.is_standard:
        return to_numpy(losses.kl_to_standard_normal(mean, log_var)).astype(np.float64)
    z = mean + np.exp(0.5 * log_var) * eps
    return log_diag_normal_from_eps(eps, log_var) - prior.log_prob(z)


def log_diag_normal_from_eps(eps: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """log N(mean + sigma*eps; mean, sigma^2) summed over the last axis (exact, no division)."""
    return -0.5 * np.sum(eps**2 + log_var + LOG_2PI, axis=-1)


def elbo_terms(
    model: Any, view: View, batch_size: int, seed: int, grey: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Per-image reconstruction NLL (one seeded z ~ q(z|x)), KL (`kl_estimate`) and -ELBO.

    With `grey`, also the summed squared error between those grey images and the decoder
    means at the same z: the article's quantity.
    """
    rng = np.random.default_rng(seed)
    prior = prior_of(model)
    rec, kl, sse = [], [], []
    for s in batches(len(view.images), batch_size, f"ELBO ({view.name})"):
        x = view.images[s]
        mean, log_var = (to_numpy(t).astype(np.float64) for t in model.encode(x))
        eps = rng.standard_normal(mean.shape)
        z = mean + np.exp(0.5 * log_var) * eps
        logits = image_logits(model, z.astype(np.float32), x)
        rec.append(to_numpy(view.nll(x, logits)).astype(np.float64))
        kl.append(kl_estimate(prior, mean, log_var, eps))
        if grey is not None:
            err = grey[s].astype(np.float64) - to_numpy(tf.sigmoid(logits)).astype(np.float64)
            sse.append(np.sum(err.reshape(len(err), -1) ** 2, axis=1))
    terms = {"rec_nll": np.concatenate(rec), "kl": np.concatenate(kl)}
    terms["neg_elbo"] = terms["rec_nll"] + terms["kl"]
    if grey is not None:
        terms["sse"] = np.concatenate(sse)
    return terms


def iwae_plan(k: int, max_batch: int) -> tuple[int, int]:
    """(images, samples) per decoder call so that images x samples <= max_batch."""
    images = max(1, max_batch // k)
    samples = min(k, max(1, max_batch // images))
    return images, samples


# bfloat16 decoding: the heaviest samples of each image, down to this fraction of its weight
# left over, are decoded again in float32. bf16's error reaches the estimate only through what
# is left: at most that fraction times e^error - 1; measured, a few thousandths of a nat
REFINE_LEFT_OVER = 0.03


@dataclass(frozen=True)
class IwaeEstimate:
    """Per-image IWAE NLL and, for a bfloat16 decoder, what its float32 refinement did."""

    nll: np.ndarray
    refined_fraction: float = 1.0  # samples whose log p(x|z) is float32 (all for float32)
    bf16_max_error: float | None = 0.0  # largest |bf16 - float32| log p(x|z) on refined samples
    max_shift_nats: float | None = 0.0  # bound on any image's shift from bf16 left in, at that
    #                                     error (None: nothing refined, nothing known)


def iwae_nll(model: Any, view: View, k: int, max_batch: int, seed: int) -> np.ndarray:
    """Per-image -log p(x) estimated with k importance samples from q(z|x) (Burda et al.).

    -log mean_i exp(log p(x|z_i) + log p(z_i) - log q(z_i|x)), by logsumexp. With k = 1 it is
    a one-sample -ELBO; it can only decrease (in expectation) as k grows.
    """
    return iwae_estimate(model, view, k, max_batch, seed).nll


def iwae_estimate(model: Any, view: View, k: int, max_batch: int, seed: int,
                  precision: str = "float32",
                  left_over: float = REFINE_LEFT_OVER) -> IwaeEstimate:
    """`iwae_nll` with its refinement facts. "bfloat16" decodes every sample in bf16, then
    the heaviest again in float32 until `left_over` of each image's weight is left (1: none)."""
    rng = np.random.default_rng(seed)
    log_prior = log_prior_fn(prior_of(model))
    exact = log_likelihood_fn(model, view.nll)
    fast = exact if precision == "float32" else log_likelihood_fn(model, view.nll, precision)
    n_images, n_samples = iwae_plan(k, max_batch)
    out, refined, errors, shifts = [], 0, [], []
    for s in batches(len(view.images), n_images, f"IWAE k={k} ({view.name})"):
        x = view.images[s]
        b = len(x)
        mean, log_var = (to_numpy(t).astype(np.float64) for t in model.encode(x))
        z = np.empty((k, b, mean.shape[-1]))
        log_prior_ratio = np.empty((k, b))  # log p(z) - log q(z|x)
        log_w = np.empty((k, b))
        for c in batches(k, n_samples):
            m = c.stop - c.start
            eps = rng.standard_normal((m, b, mean.shape[-1]))
            z[c] = mean + np.exp(0.5 * log_var) * eps
            log_prior_ratio[c] = (log_prior(z[c].reshape(m * b, -1)).reshape(m, b)
                                  - log_diag_normal_from_eps(eps, log_var))
            log_w[c] = decoded_log_likelihood(fast, z[c], x) + log_prior_ratio[c]
        if fast is not exact and left_over < 1:
            facts = refine_heaviest(log_w, log_prior_ratio, z, x, exact, left_over)
            refined += facts[0]
            errors.append(facts[1])
            shifts.append(facts[2])
        out.append(-(special.logsumexp(log_w, axis=0) - math.log(k)))
    nll = np.concatenate(out)
    if fast is exact:
        return IwaeEstimate(nll)
    return IwaeEstimate(nll, refined / (k * len(nll)), max(errors, default=None),
                        max(shifts, default=None))


def refine_heaviest(log_w: np.ndarray, log_prior_ratio: np.ndarray, z: np.ndarray,
                    x: np.ndarray, exact: LogLikelihood,
                    left_over: float = REFINE_LEFT_OVER) -> tuple[int, float, float]:
    """Recompute in place, with `exact`, the log-weights [k, b] of each image's heaviest samples
    until less than `left_over` of its weight is left; (samples recomputed, largest error
    seen, bound on the shift of any image's estimate from what is left)."""
    sample, image, remaining = heaviest(log_w, left_over)
    log_px_z = np.concatenate([exact(z[sample[c], image[c]].astype(np.float32), x[image[c]])
                               for c in batches(len(sample), DECODE_ROWS)])
    new = log_px_z + log_prior_ratio[sample, image]
    error = float(np.max(np.abs(new - log_w[sample, image])))
    log_w[sample, image] = new
    return len(sample), error, float(np.max(np.log1p(remaining * np.expm1(error))))


def heaviest(log_w: np.ndarray, left_over: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each image's fewest heaviest samples of log-weights [k, b] that leave less than
    `left_over` of its weight (all of them when it is 0 or less): (sample, image) index pairs,
    and the fraction each image leaves."""
    order = np.argsort(-log_w, axis=0, kind="stable")
    weights = np.exp(np.take_along_axis(log_w, order, axis=0) - log_w.max(axis=0))
    left = 1.0 - np.cumsum(weights, axis=0) / weights.sum(axis=0)
    if left_over > 0:
        counts = 1 + np.sum(left[:-1] >= left_over, axis=0)  # [b]
    else:  # rounding can leave a running total above the whole, so "below 0" is not asked
        counts = np.full(log_w.shape[1], len(log_w))
    rank, image = np.nonzero(np.arange(len(log_w))[:, None] < counts)
    return order[rank, image], image, left[counts - 1, np.arange(log_w.shape[1])]


def decoded_log_likelihood(log_px_z: LogLikelihood, z: np.ndarray, x: np.ndarray) -> np.ndarray:
    """log p(x | z) [m, b] for latents z [m, b, d], decoded DECODE_ROWS latents at a time."""
    m, b, _ = z.shape
    per_call = max(1, DECODE_ROWS // b)
    return np.concatenate([log_px_z(z[c].reshape(-1, z.shape[-1]).astype(np.float32), x)
                           .reshape(-1, b) for c in batches(m, per_call)])


def active_units(means: np.ndarray, threshold: float) -> tuple[int, np.ndarray]:
    """Units whose encoder mean varies across images: Cov_x(E_q[z_u]) > threshold (Burda)."""
    activity = np.var(means, axis=0)
    return int(np.sum(activity > threshold)), activity


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray,
                     cov2: np.ndarray) -> float:
    """||mu1-mu2||^2 + Tr(C1 + C2 - 2 (C1 C2)^(1/2)): the 2-Wasserstein distance^2 of Gaussians.

    Tr((C1 C2)^(1/2)) is taken as Tr((R C2 R)^(1/2)) with R = C1^(1/2): symmetric eigenvalues
    only, so rank-deficient covariances (an untrained classifier's features) cannot break it.
    """
    diff = mu1 - mu2
    root1 = _psd_sqrt(cov1)
    middle = np.linalg.eigvalsh(root1 @ cov2 @ root1)
    trace_covmean = np.sqrt(np.clip(middle, 0.0, None)).sum()
    value = diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_covmean
    return float(max(value, 0.0))


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a covariance (negative rounding noise clipped to 0)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of feature rows."""
    features = np.asarray(features, np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_between(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two sets of feature rows."""
    return frechet_distance(*feature_stats(a), *feature_stats(b))


def class_entropy(probs: np.ndarray) -> tuple[float, np.ndarray]:
    """Entropy of the predicted-class histogram / ln 10 (1 = every digit equally often)."""
    counts = np.bincount(np.argmax(probs, axis=1), minlength=NUM_CLASSES)
    p = counts / counts.sum()
    nz = p[p > 0]
    return float(-np.sum(nz * np.log(nz)) / math.log(NUM_CLASSES)), p


def recognisable(probs: np.ndarray, confidence: float) -> float:
    """Fraction of images whose top class has probability >= confidence."""
    return float(np.mean(np.max(probs, axis=1) >= confidence))


def prior_samples(model: Any, n: int, seed: int, batch_size: int) -> np.ndarray:
    """Decoder means of n seeded draws z ~ p(z)."""
    z = prior_of(model).sample(n, np.random.default_rng(seed))
    return decode_means(model, z, batch_size, desc="prior samples")


def digit_samples(model: Any, digit: int, n: int, seed: int, batch_size: int) -> np.ndarray:
    """Decoder means of n seeded draws z ~ p(z | digit): what `vae.sample(..., digit=)` draws."""
    z = model.prior_distribution(digit).sample(n, np.random.default_rng(seed))
    return decode_means(model, z, batch_size)


def digit_quality(model: Any, classifier: Any, test: Predictions, labels: np.ndarray,
                  cfg: EvaluateConfig) -> dict[str, Any]:
    """How well the model draws the digit asked for, judged by the classifier.

    agreement: the fraction of samples asked for d that the classifier reads as d; frechet:
    the Frechet distance between them and the test images of d (frechet_floor: between two
    halves of those test images, the distance of a perfect model).
    """
    per_digit: dict[str, dict[str, float]] = {}
    for digit in range(NUM_CLASSES):
        drawn = classifier_predict(classifier, digit_samples(
            model, digit, cfg.digit_samples, cfg.seed + digit, cfg.batch_size))
        own = test.features[labels == digit]
        halves = np.random.default_rng(cfg.seed).permutation(len(own))
        per_digit[str(digit)] = {
            "agreement": float(np.mean(np.argmax(drawn.probs, axis=1) == digit)),
            "recognisable": recognisable(drawn.probs, cfg.confidence),
            "frechet": frechet_between(drawn.features, own),
            "frechet_floor": frechet_between(own[halves[:len(own) // 2]],
                                             own[halves[len(own) // 2:]]),
        }
    agreements = [d["agreement"] for d in per_digit.values()]
    return {"agreement": float(np.mean(agreements)), "agreement_min": float(min(agreements)),
            "frechet_mean": float(np.mean([d["frechet"] for d in per_digit.values()])),
            "per_digit": per_digit}


def ink(images: np.ndarray) -> np.ndarray:
    """Ink mass per image (summed intensity): how thick and large the strokes are."""
    return np.asarray(images, np.float64).reshape(len(images), -1).sum(axis=1)


def style_quality(model: Any, classifier: Any, x: np.ndarray, labels: np.ndarray,
                  cfg: EvaluateConfig, temperature: float | None = None) -> dict[str, Any]:
    """How well `styles.restyle` redraws test images as other digits, in their own style.

    agreement: the fraction of the first `style_images` test images of each other digit,
    redrawn as d, that the classifier reads as d. ink_correlation: over every pair of a source
    digit c and a target d != c, the correlation between the ink of c's images and of their
    redrawings as d, averaged (thick strokes should stay thick: 0 for a fresh drawing of d);
    ink_correlation_reconstruction: the same for the plain reconstructions (the decoder's
    ceiling). `temperature`: restyle_codes's (default: the model's).
    """
    idx = np.concatenate([np.flatnonzero(labels == d)[:cfg.style_images]
                          for d in range(NUM_CLASSES)])
    x, labels = x[idx], labels[idx]
    codes, _ = encode(model, x, cfg.batch_size)
    source_ink = ink(x)
    mine = [labels == c for c in range(NUM_CLASSES)]
    reconstruction_ink = ink(decode_means(model, codes, cfg.batch_size))
    per_digit, correlations = {}, []
    for digit in range(NUM_CLASSES):
        redrawn = decode_means(model, restyle_codes(model, codes, labels, digit, temperature),
                               cfg.batch_size)
        others = labels != digit
        read = np.argmax(classifier_predict(classifier, redrawn[others]).probs, axis=1)
        per_digit[str(digit)] = float(np.mean(read == digit))
        redrawn_ink = ink(redrawn)
        correlations += [_correlation(source_ink[m], redrawn_ink[m])
                         for c, m in enumerate(mine) if c != digit]
    return {"agreement": float(np.mean(list(per_digit.values()))),
            "agreement_min": min(per_digit.values()),
            "ink_correlation": float(np.mean(correlations)),
            "ink_correlation_reconstruction": float(np.mean(
                [_correlation(source_ink[m], reconstruction_ink[m]) for m in mine])),
            "per_digit": per_digit}


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; 0 when either side does not vary (nothing to keep)."""
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def sample_quality(
    samples: Predictions, test: Predictions, confidence: float, seed: int
) -> dict[str, Any]:
    """Classifier-judged quality of samples, with the test set's own numbers as reference."""
    entropy, fractions = class_entropy(samples.probs)
    halves = np.random.default_rng(seed).permutation(len(test.features))
    half = len(halves) // 2
    return {
        "recognisable": recognisable(samples.probs, confidence),
        "class_entropy": entropy,
        "frechet": frechet_between(samples.features, test.features),
        "frechet_floor": frechet_between(test.features[halves[:half]],
                                         test.features[halves[half:]]),
        "test_recognisable": recognisable(test.probs, confidence),
        "test_class_entropy": class_entropy(test.probs)[0],
        "class_fraction": {str(d): float(f) for d, f in enumerate(fractions)},
    }


def _summary(terms: dict[str, np.ndarray], dims: int) -> dict[str, float]:
    neg_elbo = float(np.mean(terms["neg_elbo"]))
    return {
        "rec_nll": float(np.mean(terms["rec_nll"])),
        "kl": float(np.mean(terms["kl"])),
        "neg_elbo": neg_elbo,
        "bits_per_dim": bits_per_dim(neg_elbo, dims),
    }


def _iwae_summary(iwae: np.ndarray, neg_elbo_subset: np.ndarray, dims: int) -> dict[str, float]:
    iwae_mean = float(np.mean(iwae))
    return {
        "iwae_nll": iwae_mean,
        "iwae_bits_per_dim": bits_per_dim(iwae_mean, dims),
        "neg_elbo_iwae_subset": float(np.mean(neg_elbo_subset)),
    }


def _per_class(neg_elbo: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    return {str(d): (float(np.mean(neg_elbo[labels == d])) if np.any(labels == d) else None)
            for d in range(NUM_CLASSES)}


def iwae_subset(n: int, size: int, seed: int) -> np.ndarray:
    """A seeded random subset of the test set (its two halves differ in difficulty)."""
    if size == 0 or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:size])


def evaluate_likelihood(
    model: Any, views: list[View], grey: np.ndarray, labels: np.ndarray, cfg: EvaluateConfig
) -> tuple[dict, dict, dict, dict]:
    """(test, per_class, seconds, iwae_facts): every view's ELBO numbers, the IWAE of the views
    `cfg.iwae_views` names (k = 5000 on every image is too slow to repeat per view), SSE,
    active units; the precision the IWAE decoded in and, for bf16, what its refinement did."""
    dims = int(np.prod(grey.shape[1:]))
    test: dict[str, Any] = {}
    per_class: dict[str, Any] = {}
    seconds = {"elbo": 0.0, "iwae": 0.0}
    subset = iwae_subset(len(grey), cfg.iwae_images, cfg.seed)
    precision = iwae_precision(cfg.iwae_precision)
    refinement: dict[str, Any] = {}
    for view in views:
        start = time.perf_counter()
        terms = elbo_terms(model, view, cfg.batch_size, cfg.seed,
                           grey=grey if view is views[0] else None)
        seconds["elbo"] += time.perf_counter() - start
        test[view.name] = _summary(terms, dims)
        per_class[view.name] = _per_class(terms["neg_elbo"], labels)
        if cfg.iwae_views == "all" or view is views[-1]:
            start = time.perf_counter()
            sub = View(view.name, view.images[subset], view.nll)
            iwae = iwae_estimate(model, sub, cfg.iwae_samples, cfg.iwae_max_batch,
                                 cfg.seed + 1, precision)
            seconds["iwae"] += time.perf_counter() - start
            test[view.name] |= _iwae_summary(iwae.nll, terms["neg_elbo"][subset], dims)
            refinement[view.name] = _refinement_facts(iwae)
        if "sse" in terms:
            test["sse"] = float(np.mean(terms["sse"]))
    start = time.perf_counter()
    means, _ = encode(model, views[-1].images, cfg.batch_size, desc="active units")
    test["active_units"], _ = active_units(means, cfg.active_threshold)
    test["latent_dim"] = int(means.shape[1])
    seconds["active_units"] = time.perf_counter() - start
    iwae_facts = {"asked": cfg.iwae_precision, "used": precision} | refinement
    return test, per_class, seconds, iwae_facts


def iwae_precision(asked: str) -> str:
    """`evaluate.iwae_precision` on this machine: auto is bfloat16 where the CPU has native
    bf16 (emulated bf16 is slower than float32), else float32."""
    if asked != "auto":
        return asked
    return "bfloat16" if cpu_facts()["bf16_flags"] else "float32"


def _refinement_facts(iwae: IwaeEstimate) -> dict[str, float | None]:
    return {"refined_fraction": round(iwae.refined_fraction, 6),
            "bf16_max_error_nats": iwae.bf16_max_error,
            "max_shift_nats": iwae.max_shift_nats}


# --- the whole evaluation ----------------------------------------------------------------


def gaussian_nll_constant(dims: int) -> float:
    """What turns the article's summed squared error into the gaussian NLL (losses.gaussian_nll,
    variance 1/2): dims * ln(2 pi sigma^2) / 2 = 392 ln(pi) = 448.7 nats for 784 pixels."""
    return 0.5 * dims * math.log(2.0 * math.pi * losses.GAUSSIAN_VARIANCE)


def likelihood_nll(likelihood: str) -> NllFn:
    """The per-image NLL the model was trained with, as a normalised density."""
    if likelihood not in losses.LIKELIHOODS:
        raise ValueError(f"unknown likelihood {likelihood!r}; expected one of {losses.LIKELIHOODS}")
    return lambda x, logits: losses.reconstruction_nll(x, logits, likelihood)


def evaluation_sets(arrays: dict[str, np.ndarray], cfg: DataConfig,
                    ) -> tuple[Splits, np.ndarray | None]:
    """The grey splits, and the seeded binary test images a model trained on binarised pixels
    learned (None for grey training): the `grey` and `binarized` arguments of `evaluate`."""
    grey = split(arrays, dataclasses.replace(cfg, binarize="none"))
    if cfg.binarize == "none":
        return grey, None
    return grey, split(arrays, dataclasses.replace(cfg, binarize="static")).x_test


def build_views(likelihood: str, grey: np.ndarray, binarized: np.ndarray | None) -> list[View]:
    """`bernoulli` on grey pixels first (comparable across models), then, when different, the
    likelihood and data the model was trained with (last: active units are measured on it)."""
    views = [View("bernoulli", grey, losses.bernoulli_nll)]
    name = likelihood + ("_binarized" if binarized is not None else "")
    if name != "bernoulli":
        trained = binarized if binarized is not None else grey
        views.append(View(name, trained, likelihood_nll(likelihood)))
    return views


def evaluate(
    model: Any,
    classifier: Any,
    grey: np.ndarray,
    labels: np.ndarray,
    binarized: np.ndarray | None,
    cfg: EvaluateConfig,
) -> dict[str, Any]:
    """Likelihood bounds, per class, sample quality, and `meta`: the protocol and timings."""
    start = time.perf_counter()
    views = build_views(model.likelihood, grey, binarized)
    test, per_class, seconds, iwae_facts = evaluate_likelihood(model, views, grey, labels, cfg)
    t = time.perf_counter()
    samples = prior_samples(model, cfg.prior_samples, cfg.seed, cfg.batch_size)
    test_predictions = classifier_predict(classifier, grey)
    quality = sample_quality(
        classifier_predict(classifier, samples), test_predictions, cfg.confidence, cfg.seed,
    )
    seconds["samples"] = time.perf_counter() - t
    digits = None
    if getattr(model, "draws_digits", False):
        t = time.perf_counter()
        digits = digit_quality(model, classifier, test_predictions, labels, cfg)
        seconds["digits"] = time.perf_counter() - t
        t = time.perf_counter()
        digits["styles"] = style_quality(model, classifier, grey, labels, cfg)
        seconds["styles"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - start
    prior = prior_of(model)
    meta = {
        "likelihood": model.likelihood,
        "prior_components": prior.components,
        "kl_estimator": "analytic" if prior.is_standard else "monte_carlo_1",
        "trained_view": views[-1].name,
        "test_images": int(len(grey)),
        "iwae_samples": cfg.iwae_samples,
        "iwae_images": int(len(iwae_subset(len(grey), cfg.iwae_images, cfg.seed))),
        "iwae_precision": iwae_facts,
        "prior_samples": cfg.prior_samples,
        "digit_samples": cfg.digit_samples if digits else 0,
        "style_images": cfg.style_images if digits else 0,
        "gaussian_nll_constant": gaussian_nll_constant(int(np.prod(grey.shape[1:]))),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }
    metrics = {"test": test, "per_class": per_class, "samples": quality, "meta": meta}
    return metrics | ({"digits": digits} if digits else {})
