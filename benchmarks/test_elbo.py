"""Test-set negative ELBO of a saved VAE: Bernoulli on grey pixels, nats per image.

    python benchmarks/test_elbo.py [models/vae.keras] [--samples 1] [--seed 0]

Per image: BCE(x, decode_logits(z)) summed over 784 pixels with z ~ q(z | x) (one sample, or
the mean over --samples), plus KL(q || p) to the model's prior (analytic for N(0, I), Monte Carlo
at the same z for a fitted mixture); the mean over the 10,000 test images.
This is the usual convention for grey MNIST (pytorch/examples' VAE reports the same quantity).
"""

from __future__ import annotations

import argparse
import json
import sys

import keras
import numpy as np

from mnist_vae.config import load_params
from mnist_vae.data import load_splits
from mnist_vae.evaluation import kl_estimate, prior_of
from mnist_vae.losses import bernoulli_nll
from mnist_vae.model import load_vae


def negative_elbo(vae, x: np.ndarray, samples: int, seed: int) -> dict[str, float]:
    """Mean over images of E_q[-log p(x|z)] (Monte Carlo) + KL(q || p)."""
    mean, log_var = (np.asarray(t, np.float64) for t in vae.encode(x))
    prior = prior_of(vae)
    rec, kl = np.zeros(len(x)), np.zeros(len(x))
    for s in range(samples):
        eps = np.asarray(keras.random.normal(mean.shape, seed=seed + s), np.float64)
        z = (mean + np.exp(0.5 * log_var) * eps).astype(np.float32)
        kl += kl_estimate(prior, mean, log_var, eps)
        for i in range(0, len(x), 1000):
            rec[i:i + 1000] += np.asarray(bernoulli_nll(x[i:i + 1000],
                                                        vae.decode_logits(z[i:i + 1000])))
    rec, kl = rec / samples, kl / samples
    return {"neg_elbo": float(np.mean(rec + kl)), "reconstruction": float(np.mean(rec)),
            "kl": float(np.mean(kl)), "images": len(x), "samples": samples}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=None)
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    params = load_params()
    splits = load_splits(params.paths.data, params.data)
    vae = load_vae(args.model or params.paths.model)
    print(json.dumps(negative_elbo(vae, splits.x_test, args.samples, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
