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


def measure(config: str | None, setting: str, steps: int) -> tuple[float, float]:
    """Images/s and CPU ms per image of the second epoch of `steps` steps (the first traces).

    CPU time is what the load of other processes changes least: it compares candidates on a
    busy machine, and CPU seconds / cores bounds the wall time on quiet cores from below.
    """
    import keras
    import numpy as np

    from mnist_vae.inputs import training_batches
    from mnist_vae.overlays import params_with_overlay
    from mnist_vae.training import compiled_vae, configure_determinism

    params = params_with_overlay(config, ROOT / "params.yaml")
    deterministic, jit = SETTINGS[setting]
    cfg = dataclasses.replace(params.train, deterministic=deterministic, jit_compile=jit,
                              epochs=2, lr_schedule="constant")
    configure_determinism(cfg)
    images = np.random.default_rng(0).random((steps * cfg.batch_size, 28, 28, 1), "float32")
    model = compiled_vae(params.model, cfg, steps)
    times: list[tuple[float, float]] = []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda e, logs: times.append((time.perf_counter(), time.process_time())),
        on_epoch_end=lambda e, logs: times.append((time.perf_counter(), time.process_time())))
    model.fit(training_batches(images, cfg, params.data.binarize == "dynamic"), epochs=2,
              steps_per_epoch=steps, callbacks=[timer], verbose=0)
    images = steps * cfg.batch_size
    (wall0, cpu0), (wall1, cpu1) = times[2], times[3]
    return images / (wall1 - wall0), 1000 * (cpu1 - cpu0) / images


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
    results: dict[tuple, list[tuple[float, float]]] = {(c, s): [] for c in configs
                                                       for s in settings}
    for round_ in range(args.rounds):
        for key in results:
            out = subprocess.run(
                [sys.executable, __file__, "--steps", str(args.steps), "--child", json.dumps(key)],
                env=env, capture_output=True, text=True, check=True)
            results[key].append(tuple(json.loads(out.stdout.strip().splitlines()[-1])))
            rate, cpu = results[key][-1]
            print(f"round {round_ + 1}: {key[0] or 'params.yaml'} {key[1]}: {rate:.0f} images/s, "
                  f"{cpu:.3f} CPU ms/image", file=sys.stderr, flush=True)
    print(f"\nmedians of {args.rounds} rounds\n")
    print("| config | setting | images/s | CPU ms/image | CPU vs det |")
    print("|---|---|---|---|---|")
    for (config, setting), values in results.items():
        rate = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        base = statistics.median(v[1] for v in results.get((config, "det"), values))
        print(f"| {config or 'params.yaml'} | {setting} | {rate:.0f} | {cpu:.3f} | "
              f"{cpu / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
