"""Training throughput: 1 process (train.distribute: none) vs N local multi_worker processes.

    PYTHONPATH=src python benchmarks/multiworker_speed.py [--workers 2] [--images 2000]
                                                        [--epochs 3] [--rounds 1]

Each run trains the default model on the same images and global batch (params.yaml) through
`training.train`, in fresh processes (workers on 127.0.0.1, free ports). Throughput is the
chief's: global-batch images per second of training time (first-epoch tracing included), and
the steady state from the last epoch alone; ratios are against the one-process run of the
same round. Needs data/mnist.npz (`dvc repro download`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from mnist_vae.distribute import tf_config  # noqa: E402
from scripts.train_multiworker import free_ports, stop_workers  # noqa: E402


def worker(images: int, epochs: int, distribute: str) -> None:
    """Train once; print the chief's facts as one JSON line."""
    from mnist_vae.config import parse_params, read_params_mapping
    from mnist_vae.data import load_splits
    from mnist_vae.training import EpochBookkeeper, train

    raw = read_params_mapping(ROOT / "params.yaml")
    raw["data"].update(train_limit=images)
    raw["model"]["prior"]["kind"] = "standard"  # the benchmark times training, not the EM fit
    raw["model"]["prior"]["conditional"] = False
    raw["train"].update(epochs=epochs, patience=epochs, distribute=distribute)
    params = parse_params(raw)
    epoch_ends: list[float] = []
    original = EpochBookkeeper.on_epoch_end

    def timed(self, epoch, logs=None):
        epoch_ends.append(time.perf_counter())
        original(self, epoch, logs)

    EpochBookkeeper.on_epoch_end = timed
    splits = load_splits(ROOT / params.paths.data, params.data)
    with tempfile.TemporaryDirectory() as checkpoints:
        result = train(splits, params.data, params.model, params.train, checkpoints, verbose=0)
    facts = result.facts
    last_epoch_s = epoch_ends[-1] - epoch_ends[-2] if len(epoch_ends) > 1 else float("nan")
    print("FACTS " + json.dumps({
        "images_per_s": facts["images_per_s"], "train_time_s": facts["train_time_s"],
        "steady_images_per_s": round(facts["steps_per_epoch"] * params.train.batch_size
                                     / last_epoch_s, 1),
        "best_val_loss": round(facts["best_val_loss"], 2)}), flush=True)


def run(workers: int, images: int, epochs: int) -> dict:
    """One measurement: `workers` processes (1 = train.distribute none)."""
    kind = "none" if workers == 1 else "multi_worker"
    addresses = [f"127.0.0.1:{p}" for p in free_ports(workers)]
    procs = []
    for index in range(workers):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        if kind == "multi_worker":
            env["TF_CONFIG"] = tf_config(addresses, index)
        procs.append(subprocess.Popen(
            [sys.executable, __file__, "--worker", kind, "--images", str(images), "--epochs",
             str(epochs)], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
    try:
        out = procs[0].communicate(timeout=3600)[0]
        for p in procs[1:]:
            p.wait(timeout=600)
    finally:
        stop_workers(procs)
    if procs[0].returncode:
        raise SystemExit(f"multiworker_speed: the {workers}-worker run failed")
    return json.loads(next(line for line in out.splitlines() if line.startswith("FACTS "))[6:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--worker", choices=("none", "multi_worker"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.images, args.epochs, args.worker)
        return 0
    cpu = next((line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    print(f"CPU: {cpu}, {os.cpu_count()} cores; {args.images} images, {args.epochs} epochs")
    print("| round | workers | images/s (all epochs) | ratio | images/s (last epoch) | ratio "
          "| best val loss |")
    print("|---|---|---|---|---|---|---|")
    for round_ in range(1, args.rounds + 1):
        base = run(1, args.images, args.epochs)
        for n, facts in ((1, base), (args.workers, run(args.workers, args.images, args.epochs))):
            print(f"| {round_} | {n} | {facts['images_per_s']:.0f} | "
                  f"{facts['images_per_s'] / base['images_per_s']:.2f} | "
                  f"{facts['steady_images_per_s']:.0f} | "
                  f"{facts['steady_images_per_s'] / base['steady_images_per_s']:.2f} | "
                  f"{facts['best_val_loss']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
