"""What the fitted prior buys: one trained VAE scored under its fitted mixture and under N(0, I).

    python benchmarks/prior_ablation.py [models/vae.keras] [--images 500] [--k 5000] [--seed 0]

Both priors are scored on the same seeded subset of the test images the evaluate stage bounds
(binarised with its seed when data.binarize is not none), with the same q samples: the encoder
and decoder are shared, so the difference is the prior's alone, paired image by image.
Prints JSON: the one-sample -ELBO and the k-sample IWAE NLL under each prior, and the gains.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

from mnist_vae import evaluation as ev
from mnist_vae.config import load_params
from mnist_vae.data import load_arrays
from mnist_vae.model import load_vae
from mnist_vae.prior import GaussianMixture


class UnderPrior:
    """A VAE seen through another p(z): the evaluation functions read only these attributes."""

    def __init__(self, vae: Any, prior: GaussianMixture):
        self.vae, self.prior = vae, prior
        self.latent_dim, self.likelihood = vae.latent_dim, vae.likelihood

    def encode(self, x):
        return self.vae.encode(x)

    def decode_logits(self, z):
        return self.vae.decode_logits(z)

    def prior_distribution(self) -> GaussianMixture:
        return self.prior


def scored_view(params) -> ev.View:
    """The test images the evaluate stage bounds with the IWAE: the view the model learned."""
    grey, binarized = ev.evaluation_sets(load_arrays(params.paths.data), params.data)
    return ev.build_views(params.model.likelihood, grey.x_test, binarized)[-1]


def score(model: Any, view: ev.View, k: int, max_batch: int, seed: int) -> dict[str, float]:
    start = time.perf_counter()
    terms = ev.elbo_terms(model, view, 500, seed)
    iwae = ev.iwae_nll(model, view, k, max_batch, seed + 1)
    return {"neg_elbo": float(np.mean(terms["neg_elbo"])), "kl": float(np.mean(terms["kl"])),
            "iwae_nll": float(np.mean(iwae)), "seconds": round(time.perf_counter() - start, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=None)
    parser.add_argument("--images", type=int, default=500, help="seeded test subset; 0 = all")
    parser.add_argument("--k", type=int, default=5000, help="IWAE importance samples")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    params = load_params()
    vae = load_vae(args.model or params.paths.model)
    fitted = vae.prior_distribution()
    if fitted.is_standard:
        print("prior_ablation: the model's prior is N(0, I); there is nothing to compare "
              "(train with model.prior.kind: mixture)", file=sys.stderr)
        return 2
    view = scored_view(params)
    subset = ev.iwae_subset(len(view.images), args.images, args.seed)
    view = ev.View(view.name, view.images[subset], view.nll)
    max_batch = params.evaluate.iwae_max_batch
    result = {"view": view.name, "images": len(subset), "k": args.k, "seed": args.seed,
              "mixture": score(vae, view, args.k, max_batch, args.seed),
              "standard": score(UnderPrior(vae, GaussianMixture.standard(vae.latent_dim)),
                                view, args.k, max_batch, args.seed)}
    result["gain"] = {key: result["standard"][key] - result["mixture"][key]
                      for key in ("neg_elbo", "kl", "iwae_nll")}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
