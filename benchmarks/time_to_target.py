"""Training images each variant of the default model needs to reach a validation -ELBO target.

    python benchmarks/time_to_target.py [--target 106.9] [--max-epochs 2] [--probe-steps 43]
                                        [--variant NAME:[configs/x.yaml,]key=value,... ...]

`make bench` times ours against the pytorch/examples MLP's own 10-epoch validation -ELBO (106.9
nats in the 2026-11-27 reference run). This asks, without the baselines, what changes of the
training settings cut the images ours needs to get there: each variant trains in a fresh
process through `training.train` (its 20-epoch schedule and KL warm-up as in a full run) and
is probed every `--probe-steps` steps on the whole validation split (the fit's own validation
loss, N(0, I) prior); images to target are read off linearly between probes. Images do not
depend on the machine's load; seconds are images / the variant's own images/s, probes excluded.
A variant may name a config overlay (configs/*.yaml, merged over params.yaml) to change the
model too: `--variant fast:configs/fast.yaml`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ["default:", "no-warmup:kl_warmup_epochs=0",
            "no-warmup-lr4e-3:kl_warmup_epochs=0,learning_rate=0.004",
            "bf16-no-warmup:kl_warmup_epochs=0,precision=mixed_bfloat16"]


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def run_variant(changes: dict, target: float, max_epochs: int, probe_steps: int,
                overlay: str | None = None) -> dict:
    """Train until the validation -ELBO reaches `target` (or `max_epochs`); the probe curve."""
    import keras
    import numpy as np

    from mnist_vae.data import load_splits
    from mnist_vae.inputs import validation_images
    from mnist_vae.overlays import params_with_overlay
    from mnist_vae.training import train

    os.chdir(ROOT)
    params = params_with_overlay(overlay)
    cfg = dataclasses.replace(params.train, **changes)
    model_cfg = dataclasses.replace(params.model, prior=dataclasses.replace(
        params.model.prior, kind="standard", conditional=False))  # no prior fit: not timed
    splits = load_splits(params.paths.data, params.data)
    x_val = validation_images(splits, params.data)
    curve: list[tuple[int, float]] = []
    clock = {"probe_s": 0.0, "start": 0.0}

    class Probe(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            clock["start"] = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            step = int(self.model.optimizer.iterations.numpy())
            if step % probe_steps:
                return
            started = time.perf_counter()
            loss = self.model.evaluate(x_val, batch_size=500, verbose=0, return_dict=True)["loss"]
            clock["probe_s"] += time.perf_counter() - started
            curve.append((step * cfg.batch_size, float(loss)))
            if loss <= target or step * cfg.batch_size >= max_epochs * len(splits.x_train):
                self.model.stop_training = True

    with tempfile.TemporaryDirectory() as scratch:
        train(splits, params.data, model_cfg, cfg, Path(scratch) / "ckpt",
              callbacks=(Probe(),), verbose=0)
    seconds = time.perf_counter() - clock["start"] - clock["probe_s"]
    images_seen = curve[-1][0] if curve else 0
    reached = next((i for i, (_, loss) in enumerate(curve) if loss <= target), None)
    images = None
    if reached is not None:
        images = curve[0][0]
        if reached > 0:
            (i0, l0), (i1, l1) = curve[reached - 1], curve[reached]
            images = i0 + (l0 - target) / (l0 - l1) * (i1 - i0)
    return {"curve": curve, "images_to_target": images,
            "images_per_s": images_seen / max(seconds, 1e-9), "train_images": len(splits.x_train),
            "precision": cfg.precision, "val_loss_end": curve[-1][1] if curve else np.nan}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=106.9)
    parser.add_argument("--max-epochs", type=float, default=2.0)
    parser.add_argument("--probe-steps", type=int, default=43)
    parser.add_argument("--variant", action="append", default=None,
                        help="NAME:[overlay.yaml,]key=value,...: train-section keys of params.yaml "
                             "(repeatable)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child = json.loads(args.child)
        print(json.dumps(run_variant(child["changes"], args.target, args.max_epochs,
                                     args.probe_steps, child["overlay"])))
        return 0
    rows = []
    for spec in args.variant or VARIANTS:
        name, _, sets = spec.partition(":")
        parts = [s for s in sets.split(",") if s]
        overlay = next((s for s in parts if s.endswith(".yaml")), None)
        changes = {k: _value(v) for k, _, v in (s.partition("=") for s in parts if s != overlay)}
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TF_CPP_MIN_LOG_LEVEL": "3"}
        out = subprocess.run(
            [sys.executable, __file__, "--target", str(args.target), "--max-epochs",
             str(args.max_epochs), "--probe-steps", str(args.probe_steps),
             "--child", json.dumps({"changes": changes, "overlay": overlay})],
            env=env, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name}: {json.dumps({k: v for k, v in result.items() if k != 'curve'})}",
              file=sys.stderr, flush=True)
        rows.append((name, sets, result))
    base = rows[0][2]["images_to_target"]
    print(f"\nTarget: validation -ELBO <= {args.target} nats; images read off probes every "
          f"{args.probe_steps} steps.\n")
    print("| variant | train settings | images to target | vs first | images/s | seconds |")
    print("|---|---|---|---|---|---|")
    for name, sets, r in rows:
        images = r["images_to_target"]
        if images is None:
            print(f"| {name} | {sets or '(params.yaml)'} | not reached "
                  f"({r['val_loss_end']:.1f} at the end) | | {r['images_per_s']:.0f} | |")
            continue
        ratio = f"{images / base:.2f}" if base else ""
        print(f"| {name} | {sets or '(params.yaml)'} | {images:,.0f} | {ratio} | "
              f"{r['images_per_s']:.0f} | {images / r['images_per_s']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
