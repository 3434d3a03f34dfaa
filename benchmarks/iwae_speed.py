"""The k = 5000 IWAE evaluation: today's code paths against the previous one, in one run.

    python benchmarks/iwae_speed.py [--samples 5000] [--images 20] [--rounds 3] [--out FILE]
                                    [--model models/vae.keras] [--paths reference float32 bfloat16]

The model is the default architecture of params.yaml (untrained: speed does not depend on the
weights) with a seeded 50-component mixture prior, as `configs/long.yaml` evaluates it, on
seeded binary pixels; or, with --model, a trained VAE with its own prior on the first test
digits of the local MNIST mirror, binarised with a fixed seed (estimates near the real ones).
The paths: `reference` (main's `iwae_nll` before the speed work, the baseline), `float32`
(today's evaluation), `bfloat16` (`evaluate.iwae_precision: bfloat16`: bf16 decoding, the
heaviest samples of each image decoded again in float32) and, on request, `bfloat16_unrefined`
(bf16 alone: what the refinement is for); `--left-overs` adds bf16 refined to other left-over
weights than the pipeline's (what refining less would buy, and cost). Rounds interleave the
paths, so load from other processes hits them alike; the report gives each path's median
wall and CPU seconds, their ratios to the baseline's, and the mean and largest per-image
difference of its estimates from the baseline's in nats (same seed, same draws).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import linalg, special

from mnist_vae.files import write_json

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = 50
MNIST_TEST_IMAGES = ROOT.parent / "shared" / "datasets" / "mnist" / "t10k-images-idx3-ubyte.gz"


def reference_log_prob(prior: Any, z: np.ndarray) -> np.ndarray:
    """The previous GaussianMixture.log_prob: one triangular solve per component."""
    from mnist_vae.prior import LOG_2PI

    z = np.asarray(z, np.float64)
    if prior.is_standard:
        return -0.5 * np.sum(z**2 + LOG_2PI, axis=-1)
    per_component = np.empty((len(z), prior.components))
    for k in range(prior.components):
        tril = prior.scale_tril[k]
        y = linalg.solve_triangular(tril, (z - prior.means[k]).T, lower=True)
        log_det = np.sum(np.log(np.diagonal(tril)))
        per_component[:, k] = -0.5 * (np.sum(y**2, axis=0) + prior.dim * LOG_2PI) - log_det
    return special.logsumexp(per_component + prior.normalized_log_weights, axis=1)


def reference_iwae_nll(model: Any, view: Any, k: int, max_batch: int, seed: int) -> np.ndarray:
    """The previous iwae_nll: eager decoder calls, NumPy-tiled targets, per-component solves."""
    from mnist_vae.evaluation import iwae_plan, log_diag_normal_from_eps
    from mnist_vae.inference import batches, prior_of, to_numpy

    rng = np.random.default_rng(seed)
    prior = prior_of(model)
    n_images, n_samples = iwae_plan(k, max_batch)
    out = []
    for s in batches(len(view.images), n_images):
        x = view.images[s]
        b = len(x)
        mean, log_var = (to_numpy(t).astype(np.float64) for t in model.encode(x))
        log_w = np.empty((k, b))
        for c in batches(k, n_samples):
            m = c.stop - c.start
            eps = rng.standard_normal((m, b, mean.shape[-1]))
            z = mean + np.exp(0.5 * log_var) * eps
            logits = model.decode_logits(z.reshape(m * b, -1).astype(np.float32))
            targets = np.tile(x, (m,) + (1,) * (x.ndim - 1))
            log_px_z = -to_numpy(view.nll(targets, logits)).astype(np.float64).reshape(m, b)
            log_pz = reference_log_prob(prior, z.reshape(m * b, -1)).reshape(m, b)
            log_w[c] = log_px_z + log_pz - log_diag_normal_from_eps(eps, log_var)
        out.append(-(special.logsumexp(log_w, axis=0) - math.log(k)))
    return np.concatenate(out)


def _estimate(precision: str, left_over: float | None = None) -> Any:
    """A path timing `iwae_estimate` in `precision` (and a left-over weight for bfloat16)."""
    def run(model: Any, view: Any, k: int, max_batch: int, seed: int) -> Any:
        from mnist_vae.evaluation import REFINE_LEFT_OVER, iwae_estimate

        return iwae_estimate(model, view, k, max_batch, seed, precision,
                             REFINE_LEFT_OVER if left_over is None else left_over)
    return run


# the previous path (the baseline); today's float32; bfloat16 refined in float32 as
# `evaluate.iwae_precision: bfloat16` runs it; bfloat16 with nothing refined (not offered)
PATHS = {"reference": reference_iwae_nll, "float32": _estimate("float32"),
         "bfloat16": _estimate("bfloat16"), "bfloat16_unrefined": _estimate("bfloat16", 1.0)}


def seeded_mixture(dim: int, components: int, seed: int) -> Any:
    """A well-conditioned random Gaussian mixture, the shape of the fitted prior."""
    from mnist_vae.prior import GaussianMixture

    rng = np.random.default_rng(seed)
    a = rng.normal(size=(components, dim, dim)) * 0.3 + np.eye(dim)
    return GaussianMixture(rng.normal(size=components), rng.normal(size=(components, dim)),
                           np.linalg.cholesky(a @ np.swapaxes(a, 1, 2)))


def benchmark_inputs(model_path: Path | None, n_images: int) -> tuple[Any, np.ndarray]:
    """(model, binary images): the untrained default with a seeded prior on seeded pixels, or
    a trained model on the first test digits binarised with seed 0."""
    from mnist_vae.config import load_params
    from mnist_vae.data import binarize, scale
    from mnist_vae.idx import parse_idx_gz
    from mnist_vae.model import build_vae, load_vae

    if model_path is None:
        params = load_params(ROOT / "params.yaml")
        model = build_vae(params.model)
        model.set_prior(seeded_mixture(params.model.latent_dim, COMPONENTS, seed=0))
        rng = np.random.default_rng(1)
        return model, (rng.random((n_images, 28, 28, 1)) < 0.2).astype("float32")
    digits = parse_idx_gz(MNIST_TEST_IMAGES.read_bytes(), MNIST_TEST_IMAGES.name, ndim=3)
    return load_vae(model_path), binarize(scale(digits[:n_images]), seed=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", type=Path, default=None, help="a trained .keras VAE")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS)[:3],
                        help="code paths to time, the first the baseline (default: %(default)s)")
    parser.add_argument("--left-overs", type=float, nargs="+", default=[],
                        help="also time bfloat16 refined down to each of these left-over weights "
                             "(paths bfloat16_left<w>; the pipeline's is REFINE_LEFT_OVER)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from mnist_vae import losses
    from mnist_vae.config import load_params
    from mnist_vae.evaluation import View
    from mnist_vae.precision import cpu_facts

    model, images = benchmark_inputs(args.model, args.images)
    view = View("bernoulli_binarized", images, losses.bernoulli_nll)
    max_batch = load_params(ROOT / "params.yaml").evaluate.iwae_max_batch
    paths = {name: PATHS[name] for name in args.paths}
    paths |= {f"bfloat16_left{w:g}": _estimate("bfloat16", w) for w in args.left_overs}
    for run in paths.values():  # warm-up: trace graphs, load kernels
        run(model, View(view.name, images[:1], view.nll), 100, max_batch, 0)
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    cpu_seconds: dict[str, list[float]] = {name: [] for name in paths}
    results: dict[str, Any] = {}
    for r in range(args.rounds):
        for name, run in paths.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            results[name] = run(model, view, args.samples, max_batch, 7)
            seconds[name].append(time.perf_counter() - start)
            cpu_seconds[name].append(time.process_time() - cpu_start)
            print(f"round {r + 1} {name}: {seconds[name][-1]:.1f} s "
                  f"({cpu_seconds[name][-1]:.1f} CPU s)", flush=True)
    report = {
        "date": dt.date.today().isoformat(), "cpu": cpu_facts()["model"], "cores": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0], "samples": args.samples, "images": args.images,
        "rounds": args.rounds, "max_batch": max_batch,
        "model": str(args.model) if args.model else "untrained default, seeded mixture prior",
        "prior_components": model.prior_distribution().components,
        "baseline": args.paths[0], "seconds": seconds, "cpu_seconds": cpu_seconds,
        **comparison(args.paths[0], seconds, cpu_seconds, results),
    }
    print(json.dumps(report, indent=2))
    if args.out:
        write_json(args.out, report)
    return 0


def comparison(baseline: str, seconds: dict[str, list[float]],
               cpu_seconds: dict[str, list[float]], results: dict[str, Any]) -> dict[str, Any]:
    """Each path against the baseline: ratios of median wall and CPU seconds (> 1: faster),
    per-round wall ratios, and how far its estimates are from the baseline's, in nats."""
    nll = {name: getattr(result, "nll", result) for name, result in results.items()}
    out: dict[str, Any] = {"median_seconds": {}, "median_cpu_seconds": {}, "paths": {}}
    for name in seconds:
        out["median_seconds"][name] = statistics.median(seconds[name])
        out["median_cpu_seconds"][name] = statistics.median(cpu_seconds[name])
        diff = nll[name] - nll[baseline]
        out["paths"][name] = {
            "wall_ratio": statistics.median(seconds[baseline]) / statistics.median(seconds[name]),
            "cpu_ratio": (statistics.median(cpu_seconds[baseline])
                          / statistics.median(cpu_seconds[name])),
            "round_ratios": [a / b for a, b in zip(seconds[baseline], seconds[name],
                                                   strict=True)],
            "mean_nll": float(np.mean(nll[name])),
            "mean_diff_nats": float(np.mean(diff)),
            "max_abs_diff_nats": float(np.max(np.abs(diff))),
            "p99_abs_diff_nats": float(np.quantile(np.abs(diff), 0.99)),
        }
        if hasattr(results[name], "refined_fraction"):
            out["paths"][name] |= {
                "refined_fraction": results[name].refined_fraction,
                "bf16_max_error_nats": results[name].bf16_max_error,
                "max_shift_nats": results[name].max_shift_nats}
    return out


if __name__ == "__main__":
    raise SystemExit(main())
