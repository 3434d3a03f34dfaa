"""Training throughput (images/s) of the VAE under speed settings, measured side by side.

    python benchmarks/train_speed.py [--config configs/x.yaml ...] [--settings det,fast,xla]
                                     [--rounds 3] [--steps 60]

Each (config, setting) runs in a fresh subprocess (op determinism is process-wide). Rounds
interleave all runs, so load from other processes hits them alike; the table shows the median
and each setting's ratio to `det` (the default: op determinism on, no XLA).
Settings: det = deterministic, no XLA; fast = op determinism off; xla = off + jit_compile.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"det": (True, False), "fast": (False, False), "xla": (False, True)}


def measure(config: str | None, setting: str, steps: int) -> float:
    """Images/s of the second epoch of `steps` steps (the first includes tracing)."""
    import keras
    import numpy as np

    from mnist_vae.config import load_overlay, merge_overlay, parse_params, read_params_mapping
    from mnist_vae.training import compiled_vae, configure_determinism, training_batches

    raw = read_params_mapping(ROOT / "params.yaml")
    params = parse_params(merge_overlay(raw, load_overlay(config)) if config else raw)
    deterministic, jit = SETTINGS[setting]
    cfg = dataclasses.replace(params.train, deterministic=deterministic, jit_compile=jit,
                              epochs=2, lr_schedule="constant")
    configure_determinism(cfg)
    images = np.random.default_rng(0).random((steps * cfg.batch_size, 28, 28, 1), "float32")
    model = compiled_vae(params.model, cfg, steps)
    times: list[float] = []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda e, logs: times.append(time.perf_counter()),
        on_epoch_end=lambda e, logs: times.append(time.perf_counter()))
    model.fit(training_batches(images, cfg, params.data.binarize == "dynamic"), epochs=2,
              steps_per_epoch=steps, callbacks=[timer], verbose=0)
    return steps * cfg.batch_size / (times[3] - times[2])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", default=[],
                        help="an overlay of params.yaml (repeatable); params.yaml itself always")
    parser.add_argument("--settings", default="det,fast,xla")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        config, setting = json.loads(args.child)
        print(json.dumps(measure(config, setting, args.steps)))
        return 0

    configs = [None, *args.config]
    settings = args.settings.split(",")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    results: dict[tuple, list[float]] = {(c, s): [] for c in configs for s in settings}
    for round_ in range(args.rounds):
        for key in results:
            out = subprocess.run(
                [sys.executable, __file__, "--steps", str(args.steps), "--child", json.dumps(key)],
                env=env, capture_output=True, text=True, check=True)
            results[key].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {round_ + 1}: {key[0] or 'params.yaml'} {key[1]}: "
                  f"{results[key][-1]:.0f} images/s", file=sys.stderr, flush=True)
    print(f"\n| config | setting | images/s (median of {args.rounds}) | vs det |")
    print("|---|---|---|---|")
    for (config, setting), values in results.items():
        median = statistics.median(values)
        base = statistics.median(results.get((config, "det"), values))
        print(f"| {config or 'params.yaml'} | {setting} | {median:.0f} | {median / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
