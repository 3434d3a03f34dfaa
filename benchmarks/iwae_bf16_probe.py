"""Would a bfloat16 decoder keep the k = 5000 IWAE estimate? One run, the same seeded draws.

    python benchmarks/iwae_bf16_probe.py --model models/vae.keras [--images 30] [--out FILE]

Scores the first test digits of the local MNIST mirror (binarised with seed 0) with a trained
VAE twice: `iwae_nll` as the evaluate stage runs it (float32 decoder), then with the decoder
cloned under Keras' `mixed_bfloat16` policy (bf16 arithmetic, float32 weights, logits cast
back to float32 before the likelihood). The report gives the mean estimate of each, their
difference and the largest per-image difference in nats, and both times: the evidence for
keeping or dropping bf16 in the evaluation (the protocol allows 0.01 nats).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.iwae_speed import benchmark_inputs, cpu_model

ROOT = Path(__file__).resolve().parents[1]


class Bf16Decoding:
    """The model's encoder and prior with its decoder computing in bfloat16."""

    def __init__(self, model: Any):
        import keras

        clone = keras.models.clone_model(model.decoder, clone_function=lambda layer: type(
            layer).from_config(layer.get_config() | {"dtype": "mixed_bfloat16"}))
        clone.set_weights(model.decoder.get_weights())
        z = keras.Input((model.latent_dim,))
        as_float32 = keras.layers.Activation("linear", dtype="float32")
        self.decoder = keras.Model(z, as_float32(clone(z)))
        self.encode, self.latent_dim = model.encode, model.latent_dim
        self.prior_distribution = model.prior_distribution

    def decode_logits(self, z):
        return self.decoder(z, training=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a trained .keras VAE")
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from mnist_vae import evaluation, inference, losses
    from mnist_vae.config import load_params

    model, images = benchmark_inputs(args.model, args.images)
    view = evaluation.View("bernoulli_binarized", images, losses.bernoulli_nll)
    max_batch = load_params(ROOT / "params.yaml").evaluate.iwae_max_batch
    estimates, seconds = {}, {}
    for name, scored in (("float32", model), ("bfloat16", Bf16Decoding(model))):
        if name == "bfloat16":  # the phase rewrite reads float32 kernels: keep the bf16 clone
            inference.phase_logits = lambda decoder: None
        evaluation.iwae_nll(scored, evaluation.View(view.name, images[:1], view.nll), 100,
                            max_batch, 0)  # warm-up
        start = time.perf_counter()
        estimates[name] = evaluation.iwae_nll(scored, view, args.samples, max_batch, 7)
        seconds[name] = time.perf_counter() - start
        print(f"{name}: {seconds[name]:.1f} s, mean {estimates[name].mean():.4f} nats", flush=True)
    diff = estimates["bfloat16"] - estimates["float32"]
    report = {
        "date": dt.date.today().isoformat(), "cpu": cpu_model(), "cores": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0], "model": str(args.model),
        "samples": args.samples, "images": args.images, "seconds": seconds,
        "mean_nll": {name: float(e.mean()) for name, e in estimates.items()},
        "mean_diff_nats": float(diff.mean()), "max_abs_diff_nats": float(np.abs(diff).max()),
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
