"""Training speed of the VAE under speed settings, side by side, and its quality at equal epochs.

    python benchmarks/train_speed.py [--config configs/x.yaml ...] [--settings det,bf16]
                                     [--rounds 3] [--steps 60]   (--rounds 0: no speed runs)
                                     [--quality-epochs 5 [--quality-config configs/ci.yaml]]
                                     [--report benchmarks/results/DATE-train-speed.md]

Speed: each (config, setting) runs in a fresh subprocess (op determinism is process-wide) on the
same training images; rounds interleave all runs, so load from other processes hits them alike;
the table shows medians and each setting's ratio to `det` (the default). Quality: with
`--quality-epochs E`, each setting trains E epochs (cosine over E) through the pipeline's own
`training.train` on the same split, and reports the validation -ELBO at epoch E as trained and
of the saved float32 model (best epoch, fitted prior).
Settings: det = float32, op determinism, no XLA (the default); bf16 = det in mixed_bfloat16;
fast = float32, op determinism off; xla = off + jit_compile.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mnist_vae.files import atomic_path

ROOT = Path(__file__).resolve().parents[1]
# setting -> (deterministic, jit_compile, precision)
SETTINGS = {"det": (True, False, "float32"), "bf16": (True, False, "mixed_bfloat16"),
            "fast": (False, False, "float32"), "xla": (False, True, "float32")}


def _params(config: str | None):
    from mnist_vae.overlays import params_with_overlay

    return params_with_overlay(config, ROOT / "params.yaml")


def _train_cfg(params, setting: str, **changes):
    deterministic, jit, precision = SETTINGS[setting]
    return dataclasses.replace(params.train, deterministic=deterministic, jit_compile=jit,
                               precision=precision, **changes)


def _training_images(params, n: int):
    """The first n training images of the split (random pixels when the data is not built)."""
    import numpy as np

    from mnist_vae.data import load_splits

    data = ROOT / params.paths.data
    if not data.is_file():
        return np.random.default_rng(0).random((n, 28, 28, 1), "float32"), "random pixels"
    x = load_splits(data, params.data).x_train
    return x[np.arange(n) % len(x)], f"the first {n:,} training images of {params.paths.data}"


def measure(config: str | None, setting: str, steps: int) -> dict:
    """Images/s and CPU ms per image of the second epoch of `steps` steps (the first traces).

    CPU time is what the load of other processes changes least: it compares candidates on a
    busy machine, and CPU seconds / cores bounds the wall time on quiet cores from below.
    """
    import keras

    from mnist_vae.inputs import training_batches
    from mnist_vae.training import compiled_vae, configure_determinism

    params = _params(config)
    cfg = _train_cfg(params, setting, epochs=2, lr_schedule="constant")
    configure_determinism(cfg)
    images, source = _training_images(params, steps * cfg.batch_size)
    model = compiled_vae(params.model, cfg, steps, cfg.precision)
    times: list[tuple[float, float]] = []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda e, logs: times.append((time.perf_counter(), time.process_time())),
        on_epoch_end=lambda e, logs: times.append((time.perf_counter(), time.process_time())))
    model.fit(training_batches(images, cfg, params.data.binarize == "dynamic"), epochs=2,
              steps_per_epoch=steps, callbacks=[timer], verbose=0)
    n = steps * cfg.batch_size
    (wall0, cpu0), (wall1, cpu1) = times[2], times[3]
    return {"images_per_s": n / (wall1 - wall0), "cpu_ms_per_image": 1000 * (cpu1 - cpu0) / n,
            "data": source}


def quality(config: str | None, setting: str, epochs: int) -> dict:
    """Train `epochs` epochs through training.train; validation -ELBO as trained and shipped."""
    import numpy as np

    from mnist_vae.data import load_splits
    from mnist_vae.evaluation import View, elbo_terms, likelihood_nll
    from mnist_vae.inputs import validation_images
    from mnist_vae.training import train

    params = _params(config)
    cfg = _train_cfg(params, setting, epochs=epochs, patience=epochs + 1)
    splits = load_splits(ROOT / params.paths.data, params.data)
    with tempfile.TemporaryDirectory() as scratch:
        result = train(splits, params.data, params.model, cfg, Path(scratch) / "ckpt", verbose=0)
    val = View("validation", validation_images(splits, params.data),
               likelihood_nll(params.model.likelihood))
    shipped = elbo_terms(result.model, val, 500, params.evaluate.seed)["neg_elbo"]
    return {"val_loss_at_epoch": result.history[-1]["val/loss"],
            "best_val_loss": result.facts["best_val_loss"],
            "shipped_val_neg_elbo": float(np.mean(shipped)),
            "train_images_per_s": result.facts["images_per_s"],
            "train_time_s": result.facts["train_time_s"],
            "train_images": result.facts["train_images"], "epochs": epochs}


def _child(args, key: list, kind: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, __file__, "--steps", str(args.steps), "--quality-epochs",
         str(args.quality_epochs), "--child", json.dumps([kind, *key])],
        env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{kind} run {key} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _speed_table(speed: dict, settings: list[str], args) -> list[str]:
    """Medians of the speed rounds and their ratios against the first setting."""
    base_setting = settings[0]
    lines = [f"Speed: medians of {args.rounds} interleaved rounds, {args.steps} timed steps "
             f"after a traced warm-up epoch, on {speed[(None, base_setting)][0]['data']}; "
             f"ratios against `{base_setting}` (> 1: faster).", "",
             "| config | setting | images/s | CPU ms/image | images/s ratio | CPU time ratio |",
             "|---|---|---|---|---|---|"]
    for (config, setting), values in speed.items():
        rate = statistics.median(v["images_per_s"] for v in values)
        cpu = statistics.median(v["cpu_ms_per_image"] for v in values)
        base = speed[(config, base_setting)]
        base_rate = statistics.median(v["images_per_s"] for v in base)
        base_cpu = statistics.median(v["cpu_ms_per_image"] for v in base)
        lines.append(f"| {config or 'params.yaml'} | {setting} | {rate:.0f} | {cpu:.3f} | "
                     f"{rate / base_rate:.2f} | {base_cpu / cpu:.2f} |")
    return lines


def _machine() -> str:
    from mnist_vae.precision import cpu_facts

    cpu = cpu_facts()
    flags = ", ".join(cpu["bf16_flags"]) or "no native bf16"
    return f"{cpu['model']} ({flags}), {os.cpu_count()} cores, load average " \
           f"{os.getloadavg()[0]:.1f} at the start"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", default=[],
                        help="an overlay of params.yaml (repeatable); params.yaml itself always")
    parser.add_argument("--settings", default="det,bf16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--quality-epochs", type=int, default=0,
                        help="also train this many epochs per setting (0: speed only)")
    parser.add_argument("--quality-config", default=None,
                        help="overlay for the quality runs (e.g. configs/ci.yaml); default "
                             "params.yaml's data")
    parser.add_argument("--report", help="also write the tables to this markdown file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, config, setting = json.loads(args.child)
        out = (measure(config, setting, args.steps) if kind == "speed"
               else quality(config, setting, args.quality_epochs))
        print(json.dumps(out))
        return 0

    settings = args.settings.split(",")
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        parser.error(f"--settings: unknown {unknown[0]!r}; choose from {', '.join(SETTINGS)}")
    lines = [f"Machine: {_machine()}; python {platform.python_version()}.", ""]
    print(lines[0], file=sys.stderr)
    configs = [None, *args.config]
    speed: dict[tuple, list[dict]] = {(c, s): [] for c in configs for s in settings}
    for round_ in range(args.rounds):
        for key in speed:
            speed[key].append(_child(args, list(key), "speed"))
            last = speed[key][-1]
            print(f"round {round_ + 1}: {key[0] or 'params.yaml'} {key[1]}: "
                  f"{last['images_per_s']:.0f} images/s, {last['cpu_ms_per_image']:.3f} CPU "
                  f"ms/image", file=sys.stderr, flush=True)
    base_setting = settings[0]
    if args.rounds:
        lines += _speed_table(speed, settings, args)
    if args.quality_epochs:
        results = {}
        for setting in settings:
            results[setting] = _child(args, [args.quality_config, setting], "quality")
            print(f"quality {setting}: {results[setting]}", file=sys.stderr, flush=True)
        base = results[base_setting]
        lines += ["", f"Quality at equal epochs: {args.quality_epochs} epochs (cosine over them) "
                  f"on {base['train_images']:,} training images "
                  f"({args.quality_config or 'params.yaml'}), validation -ELBO in nats; "
                  f"differences against `{base_setting}`.", "",
                  "| setting | val -ELBO at the last epoch, as trained | best | shipped float32 "
                  "model (fitted prior) | difference | training images/s | training s |",
                  "|---|---|---|---|---|---|---|"]
        for setting, r in results.items():
            lines.append(f"| {setting} | {r['val_loss_at_epoch']:.2f} | {r['best_val_loss']:.2f} "
                         f"| {r['shipped_val_neg_elbo']:.2f} | "
                         f"{r['shipped_val_neg_elbo'] - base['shipped_val_neg_elbo']:+.2f} | "
                         f"{r['train_images_per_s']:.0f} | {r['train_time_s']:.0f} |")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if args.report:
        with atomic_path(args.report) as tmp:
            tmp.write_text(f"# Training speed, {time.strftime('%Y-%m-%d')}\n\nCommand: `python "
                           f"benchmarks/train_speed.py {' '.join(sys.argv[1:])}`\n\n{text}",
                           encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
