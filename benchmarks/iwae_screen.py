"""Can a linearised decoder screen the k = 5000 IWAE samples instead of bf16? Measured: no.

    python benchmarks/iwae_screen.py [--samples 5000] [--images 20] [--model models/vae.keras]
                                     [--left-overs 0.03 0.01 0.003] [--out FILE]

Each image's decoder logits are expanded to first order around its posterior mean (one
forward-mode Jacobian, d directions), and every sample's log p(x|z) is read off those logits:
a matrix product instead of a decoder pass. Then, as `evaluate.iwae_precision: bfloat16` does
with bf16, each image's heaviest samples by that surrogate are decoded in float32 until less
than the left-over of its surrogate weight is left. The report: the surrogate's error per
sample, the seconds of each part, and per left-over the fraction decoded and the largest
per-image difference from the all-float32 estimate on the same draws (the protocol allows 0.01).
Inputs as in `iwae_speed.py`: the untrained default on seeded pixels, or --model on real digits.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import special

from mnist_vae.files import write_json


def taylor_logits_fn(decoder: Any) -> Any:
    """mu [b, d] -> (logits at mu [b, p], their Jacobian in z [b, d, p]), forward-mode."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def expand(mu):
        b, d = tf.shape(mu)[0], tf.shape(mu)[1]
        z = tf.repeat(mu, d, axis=0)
        with tf.autodiff.ForwardAccumulator(z, tf.tile(tf.eye(d), [b, 1])) as acc:
            logits = decoder(z, training=False)
        jacobian = tf.reshape(acc.jvp(logits), [b, d, -1])
        return tf.reshape(decoder(mu, training=False), [b, -1]), jacobian

    return lambda mu: tuple(t.numpy() for t in expand(tf.constant(mu, tf.float32)))


def surrogate_log_likelihood_fn(nll: Any) -> Any:
    """(delta [k, d], logits at the mean [p], Jacobian [d, p], x [p]) -> log p(x | z) [k] from
    the linearised logits."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def surrogate(delta, logits0, jacobian, x):
        logits = logits0[None] + tf.matmul(delta, jacobian)
        return -nll(tf.broadcast_to(x[None], tf.shape(logits)), logits)

    def run(delta, logits0, jacobian, x):
        return surrogate(tf.constant(delta, tf.float32), logits0, jacobian,
                         tf.constant(x.reshape(-1), tf.float32)).numpy().astype(np.float64)
    return run


def screened_estimate(exact_log_w: np.ndarray, surrogate_log_w: np.ndarray,
                      left_over: float) -> tuple[np.ndarray, np.ndarray]:
    """(per-image NLL, samples decoded per image) when each image's heaviest samples by the
    surrogate [k, b] take their exact log-weight until less than `left_over` of its surrogate
    weight is left, the rest keeping the surrogate's."""
    from mnist_vae.evaluation import heaviest

    k, b = exact_log_w.shape
    sample, image, _ = heaviest(surrogate_log_w, left_over)
    mixed = surrogate_log_w.copy()
    mixed[sample, image] = exact_log_w[sample, image]
    return -(special.logsumexp(mixed, axis=0) - math.log(k)), np.bincount(image, minlength=b)


def measure(model: Any, images: np.ndarray, k: int, seed: int,
            left_overs: list[float]) -> dict[str, Any]:
    """Exact and surrogate log-weights on the same draws, timed, and the screened estimates."""
    from mnist_vae import losses
    from mnist_vae.evaluation import decoded_log_likelihood, log_diag_normal_from_eps
    from mnist_vae.inference import log_likelihood_fn, log_prior_fn, prior_of, to_numpy

    exact = log_likelihood_fn(model, losses.bernoulli_nll)
    surrogate = surrogate_log_likelihood_fn(losses.bernoulli_nll)
    expand = taylor_logits_fn(model.decoder)
    rng = np.random.default_rng(seed)
    mean, log_var = (to_numpy(t).astype(np.float64) for t in model.encode(images))
    b, d = mean.shape
    eps = rng.standard_normal((k, b, d))
    z = mean + np.exp(0.5 * log_var) * eps
    log_prior_ratio = (log_prior_fn(prior_of(model))(z.reshape(k * b, d)).reshape(k, b)
                       - log_diag_normal_from_eps(eps, log_var))
    seconds = {}
    start = time.perf_counter()
    exact_ll = decoded_log_likelihood(exact, z, images)
    seconds["float32_decoding"] = time.perf_counter() - start
    start = time.perf_counter()
    logits0, jacobian = expand(mean)
    seconds["jacobians"] = time.perf_counter() - start
    start = time.perf_counter()
    surrogate_ll = np.stack([surrogate(z[:, i] - mean[i], logits0[i], jacobian[i], images[i])
                             for i in range(b)], axis=1)
    seconds["surrogate"] = time.perf_counter() - start
    exact_log_w, surrogate_log_w = exact_ll + log_prior_ratio, surrogate_ll + log_prior_ratio
    reference = -(special.logsumexp(exact_log_w, axis=0) - math.log(k))
    error = np.abs(surrogate_ll - exact_ll)
    screens = {}
    for left_over in left_overs:
        nll, counts = screened_estimate(exact_log_w, surrogate_log_w, left_over)
        screens[str(left_over)] = {
            "decoded_fraction": float(counts.mean() / k),
            "largest_image_decoded_fraction": float(counts.max() / k),
            "max_abs_diff_nats": float(np.max(np.abs(nll - reference))),
            "mean_diff_nats": float(np.mean(nll - reference))}
    return {"seconds": seconds, "mean_nll_float32": float(reference.mean()),
            "at_the_mean_abs_error": float(np.max(np.abs(
                surrogate(np.zeros((1, d)), logits0[0], jacobian[0], images[0])
                - exact(mean[:1].astype(np.float32), images[:1])))),
            "surrogate_abs_error_quantiles": dict(zip(
                ["median", "p90", "p99", "max"],
                map(float, np.quantile(error, [0.5, 0.9, 0.99, 1.0])), strict=True)),
            "screens": screens}


def main() -> int:
    from benchmarks.iwae_speed import benchmark_inputs
    from mnist_vae.precision import cpu_facts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--model", type=Path, default=None, help="a trained .keras VAE")
    parser.add_argument("--left-overs", type=float, nargs="+", default=[0.03, 0.01, 0.003])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    model, images = benchmark_inputs(args.model, args.images)
    measure(model, images[:1], 10, 0, [1.0])  # warm-up: trace the graphs
    report = {"date": dt.date.today().isoformat(), "cpu": cpu_facts()["model"],
              "cores": os.cpu_count(), "load_avg_1min": os.getloadavg()[0],
              "samples": args.samples, "images": args.images,
              "model": str(args.model) if args.model else "untrained default, seeded prior",
              **measure(model, images, args.samples, 7, args.left_overs)}
    print(json.dumps(report, indent=2))
    if args.out:
        write_json(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
