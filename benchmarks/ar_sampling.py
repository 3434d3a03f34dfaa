"""Drawing digits from the local autoregressive head: per-pixel steps against the whole head.

    PYTHONPATH=src:. .venv/bin/python -m benchmarks.ar_sampling [--model DIR/local_ar.keras]
        [--digits 100] [--rounds 3] [--out FILE.json]

A digit is drawn in 784 steps, one pixel each. The baseline runs the whole head (a causal
convolution of all 784 pixels) at every step, as the definition reads; `LocalARHead.sample`
computes only the drawn pixel's logit. Both draw from the same latents with the same uniforms,
so the report also says whether they drew the very same digits. Without `--model` the
head is an untrained one with random residual weights: the work per step does not depend on
the weights.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from benchmarks.ar_decoder import OVERLAY, build
from mnist_vae.autoregressive import LocalARHead
from mnist_vae.files import write_json
from mnist_vae.model import VAE, load_vae
from mnist_vae.overlays import params_with_overlay
from mnist_vae.precision import cpu_facts

ROOT = Path(__file__).resolve().parents[1]


def drawn_by_the_whole_head(head: LocalARHead, hidden, base, uniforms: np.ndarray):
    """The definition: run the whole head on the pixels drawn so far, draw the next pixel."""
    x = np.zeros((*np.shape(base)[:3], 1), "float32")
    probs = np.zeros_like(x)
    for i in range(x.shape[1]):
        for j in range(x.shape[2]):
            probs[:, i, j, 0] = np.asarray(ops.sigmoid(head(hidden, base, x)))[:, i, j, 0]
            x[:, i, j, 0] = uniforms[:, i, j] < probs[:, i, j, 0]
    return x, probs


def with_random_residual(head: LocalARHead, seed: int) -> LocalARHead:
    """The head with seeded random weights in its residual's output layer (zero when new), so
    the pixels before each one count as they do once trained."""
    rng = np.random.default_rng(seed)
    head.out.set_weights([rng.normal(size=w.shape).astype("float32")
                          for w in head.out.get_weights()])
    return head


def benchmark_model(path: Path | None) -> VAE:
    """The saved model, or an untrained one whose residual (zero at the start) is random."""
    if path is not None:
        return load_vae(path)
    keras.utils.set_random_seed(0)
    model = build("local_ar", params_with_overlay(ROOT / "params.yaml", OVERLAY))
    with_random_residual(model.ar_head, seed=0)
    return model


def timed(draw, rounds: int) -> tuple[list[float], Any]:
    seconds, result = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        result = draw()
        seconds.append(time.perf_counter() - start)
    return seconds, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="a saved local_ar .keras model")
    parser.add_argument("--digits", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.model is not None and not args.model.is_file():
        print(f"error: no such model: {args.model}; train one with `python -m "
              "benchmarks.ar_decoder --models local_ar --save-dir DIR`", file=sys.stderr)
        return 1
    model = benchmark_model(args.model)
    if not model.is_autoregressive:
        print(f"error: {args.model} has no autoregressive head, so it draws all pixels at once; "
              "give a local_ar model", file=sys.stderr)
        return 1
    z = np.random.default_rng(1).normal(size=(args.digits, model.latent_dim)).astype("float32")
    hidden, base = model.features(z, training=False)
    head, uniforms = model.ar_head, np.random.default_rng(2).random(tuple(base.shape)[:3])
    paths = {"whole_head": lambda: drawn_by_the_whole_head(head, hidden, base, uniforms),
             "per_pixel": lambda: head.sample(hidden, base, uniforms)}
    seconds, drawn = {}, {}
    for name, draw in paths.items():
        seconds[name], drawn[name] = timed(draw, args.rounds)
        print(f"{name}: {statistics.median(seconds[name]):.2f} s for {args.digits} digits",
              flush=True)
    report = {
        "date": dt.date.today().isoformat(), "cpu": cpu_facts()["model"], "cores": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0], "digits": args.digits, "rounds": args.rounds,
        "model": str(args.model) if args.model else "untrained, random residual",
        "seconds": seconds, "baseline": "whole_head",
        "speedup": statistics.median(seconds["whole_head"]) / statistics.median(
            seconds["per_pixel"]),
        "same_digits": bool(np.array_equal(drawn["whole_head"][0], drawn["per_pixel"][0])),
        "max_probability_difference": float(np.max(np.abs(
            drawn["whole_head"][1] - drawn["per_pixel"][1]))),
        "drawn_ink": float(drawn["per_pixel"][0].mean()),
    }
    print(f"per pixel: {report['speedup']:.0f}x faster on {report['cpu']}, the same digits: "
          f"{'yes' if report['same_digits'] else 'NO'}")
    if args.out:
        write_json(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
