"""What each choice of p(z | digit) buys: one trained VAE drawing digits under several fits.

    python benchmarks/digit_prior_ablation.py [models/vae.keras] [--samples 1000] [--seed 0]
        [--only default k5 ...] [--save models/vae-digits.keras]

Fits p(z | d) to the codes of the training images labelled d, as training does, in variants
(components per digit, full or diagonal covariance, codes z ~ q(z|x) or posterior means, a
temperature scaling every component's spread at sampling time), and judges each exactly as
the evaluate stage does (`evaluation.digit_quality`, the pipeline's classifier): agreement
overall and worst digit, mean per-digit Frechet distance. The encoder and decoder are shared,
so differences are the prior's alone. Prints one JSON object per variant, then the table.
`--save` writes the model with the params' p(z | digit) installed, fitted exactly as the train
stage fits it (same codes, same seeds), without retraining: a model trained before p(z | digit)
existed can then be evaluated, and its unconditional numbers compared with its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from typing import Any

import numpy as np

from mnist_vae import evaluation as ev
from mnist_vae.classifier import load_classifier
from mnist_vae.classifier import predict as classifier_predict
from mnist_vae.config import load_params
from mnist_vae.data import load_arrays, load_splits
from mnist_vae.model import load_vae
from mnist_vae.prior import GaussianMixture, fit_digit_mixtures
from mnist_vae.training import prior_fit_images, sample_codes

# (name, codes, components per digit, covariance, temperature)
VARIANTS = [
    ("k10", "sample", 10, "full", 1.0),
    ("k1", "sample", 1, "full", 1.0),
    ("k5", "sample", 5, "full", 1.0),
    ("k20", "sample", 20, "full", 1.0),
    ("diag", "sample", 10, "diag", 1.0),
    ("means", "mean", 10, "full", 1.0),
    ("means-t0.9", "mean", 10, "full", 0.9),
    ("means-t0.8", "mean", 10, "full", 0.8),
    ("t0.9", "sample", 10, "full", 0.9),
    ("t0.8", "sample", 10, "full", 0.8),
    ("t0.7", "sample", 10, "full", 0.7),
    ("t0.6", "sample", 10, "full", 0.6),
    ("t0.5", "sample", 10, "full", 0.5),
]


class DrawingWith:
    """A VAE seen through other per-digit mixtures: what `digit_quality` reads."""

    def __init__(self, vae: Any, mixtures: list[GaussianMixture]):
        self.vae, self.mixtures = vae, mixtures

    def prior_distribution(self, digit: int) -> GaussianMixture:
        return self.mixtures[digit]

    def decode_logits(self, z):
        return self.vae.decode_logits(z)


def save_with_digit_prior(vae: Any, params: Any, codes: np.ndarray, labels: np.ndarray,
                          path: str) -> None:
    """The same encoder, decoder and p(z), plus p(z | digit) as the train stage fits it."""
    from mnist_vae.model import build_vae
    from mnist_vae.training import save_model

    cfg = params.model.prior
    model = build_vae(params.model)
    model.encoder.set_weights(vae.encoder.get_weights())
    model.decoder.set_weights(vae.decoder.get_weights())
    model.set_prior(vae.prior_distribution())
    mixtures, facts = fit_digit_mixtures(codes, labels, cfg.components_per_digit, cfg.covariance,
                                         cfg.fit_iterations, params.train.seed,
                                         cfg.digit_temperature)
    model.set_digit_prior(mixtures)
    save_model(model, path)
    print(json.dumps({"saved": path, **facts}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=None)
    parser.add_argument("--samples", type=int, default=1000, help="samples per digit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="variant names (default: all)")
    parser.add_argument("--save", help="write the model with the params' p(z | digit) here")
    args = parser.parse_args()
    params = load_params()
    vae = load_vae(args.model or params.paths.model)
    classifier = load_classifier(params.paths.classifier)
    splits = load_splits(params.paths.data, params.data)
    grey, _ = ev.test_sets(load_arrays(params.paths.data), params.data)
    test = classifier_predict(classifier, grey.x_test)
    images = prior_fit_images(splits, params.data)
    codes = {"sample": sample_codes(vae, images, 1, np.random.default_rng(params.train.seed)),
             "mean": np.asarray(vae.encode(images)[0], np.float64)}
    if args.save:
        save_with_digit_prior(vae, params, codes["sample"], splits.y_train, args.save)
    cfg = dataclasses.replace(params.evaluate, digit_samples=args.samples, seed=args.seed)
    fits: dict[tuple, list[GaussianMixture]] = {}
    rows = []
    for name, source, k, covariance, temperature in VARIANTS:
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        key = (source, k, covariance)
        if key not in fits:
            fits[key], _ = fit_digit_mixtures(codes[source], splits.y_train, k, covariance,
                                              params.model.prior.fit_iterations, params.train.seed)
        mixtures = [m.tempered(temperature) for m in fits[key]]
        quality = ev.digit_quality(DrawingWith(vae, mixtures), classifier, test, grey.y_test, cfg)
        row = {"variant": name, "codes": source, "components_per_digit": k,
               "covariance": covariance, "temperature": temperature,
               "agreement": round(quality["agreement"], 4),
               "agreement_min": round(quality["agreement_min"], 4),
               "worst_digit": min(quality["per_digit"],
                                  key=lambda d: quality["per_digit"][d]["agreement"]),
               "frechet_mean": round(quality["frechet_mean"], 3),
               "per_digit_agreement": {d: round(v["agreement"], 4)
                                       for d, v in quality["per_digit"].items()},
               "seconds": round(time.perf_counter() - start, 1)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("\n| variant | codes | K/digit | cov | T | agreement | worst digit | mean Frechet |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['codes']} | {r['components_per_digit']} | "
              f"{r['covariance']} | {r['temperature']} | {r['agreement']:.4f} | "
              f"{r['worst_digit']}: {r['agreement_min']:.4f} | {r['frechet_mean']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
