"""What style transfer keeps and reads as the target: one trained VAE, several temperatures.

    python benchmarks/style_transfer.py [models/vae.keras] [models/classifier.keras]
        [--images 100] [--temperatures 1.0 0.8 0.6]

Redraws the first `--images` test images of each digit as every other digit
(`styles.restyle_codes`) and judges them exactly as the evaluate stage does
(`evaluation.style_quality`, the pipeline's classifier): agreement overall and worst digit,
ink correlation (strokes keep their weight), against two references measured in the same run:
the plain reconstructions (the ceiling) and fresh drawings of the target digit from
p(z | digit) (no style kept). Prints one JSON object per variant, then the table.
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
from mnist_vae.config import load_params
from mnist_vae.data import load_arrays
from mnist_vae.model import load_vae
from mnist_vae.prior import GaussianMixture


class FreshDrawings:
    """A VAE whose `encode` forgets the image: every code is a fresh draw from p(z | label),
    then restyled; the "no style kept" reference."""

    def __init__(self, vae: Any, labels: np.ndarray, seed: int):
        self.vae, self.labels, self.rng = vae, labels, np.random.default_rng(seed)
        self.draws_digits, self.latent_dim = True, vae.latent_dim

    def prior_distribution(self, digit: int | None = None) -> GaussianMixture:
        return self.vae.prior_distribution(digit)

    def encode(self, x):
        codes = np.stack([self.vae.prior_distribution(int(d)).sample(1, self.rng)[0]
                          for d in self.labels[:len(x)]])
        self.labels = self.labels[len(x):]
        return codes, np.zeros_like(codes)

    def decode_logits(self, z):
        return self.vae.decode_logits(z)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="models/vae.keras")
    parser.add_argument("classifier", nargs="?", default="models/classifier.keras")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.8, 0.6])
    args = parser.parse_args()
    params = load_params()
    cfg = dataclasses.replace(params.evaluate, style_images=args.images)
    vae, classifier = load_vae(args.model), load_classifier(args.classifier)
    grey, _ = ev.evaluation_sets(load_arrays(params.paths.data), params.data)
    x, labels = grey.x_test, grey.y_test
    picked = np.concatenate([np.flatnonzero(labels == d)[:args.images] for d in range(10)])
    rows = []
    variants = [(f"restyled, temperature {t}", vae, t) for t in args.temperatures]
    variants.append(("fresh drawing of the target (no style)",
                     FreshDrawings(vae, labels[picked], cfg.seed), 1.0))
    for name, model, temperature in variants:
        start = time.perf_counter()
        result = ev.style_quality(model, classifier, x, labels, cfg, temperature)
        worst = min(result["per_digit"], key=result["per_digit"].get)
        row = {"variant": name, "agreement": round(result["agreement"], 3),
               "worst_digit": f"{worst}: {result['agreement_min']:.3f}",
               "ink_correlation": round(result["ink_correlation"], 3),
               "ink_correlation_reconstruction": round(
                   result["ink_correlation_reconstruction"], 3),
               "seconds": round(time.perf_counter() - start, 1)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("\n| variant | agreement | worst digit | ink correlation |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['variant']} | {row['agreement']:.3f} | {row['worst_digit']} | "
              f"{row['ink_correlation']:.3f} |")
    print(f"\nplain reconstructions' ink correlation: {rows[0]['ink_correlation_reconstruction']}")


if __name__ == "__main__":
    main()
