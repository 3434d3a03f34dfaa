"""Benchmark our VAE against the public MNIST VAE examples, in one run on one machine.

    python -m benchmarks.run [--budget 600] [--models ours article keras_io pytorch_mlp]
    python -m benchmarks.run --smoke          # a tiny end-to-end run that proves the harness

Each model trains in its own process for the same budget of training time on the same split,
its validation -ELBO probed along the way; then it is scored with the evaluate stage's metrics.
Writes benchmarks/results/<date>[-label].json and .md; with --readme, a reference run (full
data, 600 s) also refreshes the Benchmark block of docs/benchmark.md. `make bench` runs this.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import compare, report
from benchmarks.overhead import measure_overhead
from benchmarks.settings import (
    BASELINES,
    FAST_SUBJECT,
    MODELS,
    PYTORCH_MLP,
    SLOW_BASELINES,
    SUBJECT,
    Settings,
)
from mnist_vae.files import atomic_path, atomic_paths

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
WORK_DIR = REPO / "benchmarks" / ".work"
ALL_MODELS = list(MODELS)
SMOKE = {"budget": 20.0, "train_limit": 5000, "test_limit": 1000, "val_size": 1000,
         "iwae_images": 200, "iwae_samples": 20, "prior_samples": 1000, "classifier_epochs": 1}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--budget", type=float, default=compare.REFERENCE_BUDGET_S,
                   help="seconds of training per model, probes excluded (default: %(default)s)")
    p.add_argument("--models", nargs="+", choices=ALL_MODELS, default=ALL_MODELS)
    p.add_argument("--smoke", action="store_true",
                   help="tiny data, budget and evaluation: proves the harness end to end")
    p.add_argument("--label", default=None, help="suffix of the results files (smoke runs: smoke)")
    p.add_argument("--train-limit", type=int, help="override data.train_limit")
    p.add_argument("--test-limit", type=int, help="override data.test_limit")
    p.add_argument("--val-size", type=int, help="override data.val_size")
    p.add_argument("--iwae-images", type=int, help="override evaluate.iwae_images")
    p.add_argument("--iwae-samples", type=int, help="override evaluate.iwae_samples")
    p.add_argument("--prior-samples", type=int, help="override evaluate.prior_samples")
    p.add_argument("--classifier", type=Path, default=None,
                   help="a trained classifier (.keras); default: models/classifier.keras if "
                        "present, else one trained for this run")
    p.add_argument("--classifier-epochs", type=int, help="epochs when training the classifier")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads per model for TensorFlow and torch (default 0: their own "
                        "default, every core); 1 is steadier on a machine shared with others")
    p.add_argument("--no-overhead", action="store_true", help="skip the dvc repro timings")
    p.add_argument("--overhead-repo", type=Path, default=REPO,
                   help="the built repository whose `dvc repro` is timed (default: this one)")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--readme", type=Path, default=None,
                   help="refresh this page's Benchmark block (reference runs only)")
    args = p.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            if key == "budget":
                if args.budget == compare.REFERENCE_BUDGET_S:
                    args.budget = value
            elif getattr(args, key) is None:
                setattr(args, key, value)
        args.label = args.label or "smoke"
    return args


def overrides(args: argparse.Namespace, keys: list[str]) -> dict:
    return {k: getattr(args, k) for k in keys if getattr(args, k) is not None}


# The vector and matrix units that set our speed against the MLP's: one model name ("AMD EPYC")
# covers CPUs with and without AVX-512, which train several times apart
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_features(cpuinfo: str | Path = "/proc/cpuinfo") -> list[str] | None:
    """Which of SPEED_FLAGS the CPU reports (None where /proc/cpuinfo cannot be read)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    flags = next((set(line.partition(":")[2].split()) for line in text.splitlines()
                  if line.partition(":")[0].strip() == "flags"), set())
    return [f for f in SPEED_FLAGS if f in flags]


def machine() -> dict:
    """What the numbers were measured on."""
    from mnist_vae.precision import cpu_facts

    cpu = cpu_facts()["model"]
    try:
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except OSError:
        mem_kib = 0
    versions = {"python": platform.python_version()}
    for package in ("tensorflow", "keras", "torch", "numpy", "dvc"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu, "cpu_features": cpu_features(),
        "logical_cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gib": mem_kib / 2**20, "platform": platform.platform(), "versions": versions,
        "load_average": os.getloadavg(),
    }


def print_report(fields: dict, out: Path | None) -> None:
    """`fields` with today's date and this machine, as JSON on stdout and, given `out`, there."""
    text = json.dumps({"date": dt.date.today().isoformat(), "machine": machine(), **fields},
                      indent=2)
    print(text)
    if out:
        with atomic_path(out) as tmp:
            tmp.write_text(text + "\n", encoding="utf-8")


def git_revision() -> dict:
    def git(*a):
        done = subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--",
                                                                  "src", "params.yaml", "configs",
                                                                  "benchmarks"))}


def subprocess_env(threads: int) -> dict:
    """Child processes import this checkout's code (not another editable install)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    if threads > 0:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_child(args: list[str], log: Path, threads: int) -> int:
    command = [sys.executable, "-m", "benchmarks.measure", *args]
    with log.open("w") as out:
        return subprocess.run(command, cwd=REPO, env=subprocess_env(threads), stdout=out,
                              stderr=subprocess.STDOUT).returncode


def tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def measure_model(name: str, settings_path: Path, work: Path, threads: int) -> dict:
    """One model in a fresh process; failures become a result with the log's tail."""
    if name == PYTORCH_MLP and importlib.util.find_spec("torch") is None:
        return {"name": name, "status": "skipped",
                "note": "torch not installed (`pip install -e '.[bench]'`)"}
    out, log = work / f"{name}.json", work / f"{name}.log"
    print(f"[bench] {name}: training (log: {log})", flush=True)
    code = run_child([name, str(settings_path), str(out)], log, threads)
    if code != 0 or not out.is_file():
        print(f"[bench] {name}: FAILED (exit {code})\n{tail(log)}", flush=True)
        return {"name": name, "status": "failed", "note": f"exit {code}", "log_tail": tail(log)}
    result = json.loads(out.read_text())
    print(f"[bench] {name}: {result['train']['images_per_s']:.0f} images/s, "
          f"test -ELBO {result['final']['test_neg_elbo']:.1f}", flush=True)
    return result


def ensure_classifier(args, settings: Settings, settings_path: Path, work: Path) -> Path:
    """The judge of sample quality: --classifier, else the pipeline's when no data or classifier
    override applies, else one trained for these settings (kept for the next run with them)."""
    if args.classifier:
        return args.classifier.resolve()
    built = REPO / "models" / "classifier.keras"
    if built.is_file() and not settings.data and not settings.classifier:
        return built
    key = json.dumps({"data": settings.data, "classifier": settings.classifier}, sort_keys=True)
    path = WORK_DIR / f"classifier-{hashlib.sha256(key.encode()).hexdigest()[:12]}.keras"
    if path.is_file():
        return path
    print(f"[bench] training the digit classifier -> {path}", flush=True)
    code = run_child(["--train-classifier", str(settings_path), str(path)],
                     work / "classifier.log", args.threads)
    if code != 0:
        raise SystemExit(f"classifier training failed:\n{tail(work / 'classifier.log')}")
    return path


def reference_run(args, settings: dict, models: dict) -> tuple[bool, str]:
    """Whether these are the numbers the README shows: every model measured at 600 s on the
    full data with the pipeline's evaluation; if not, why."""
    reasons = []
    if args.budget != compare.REFERENCE_BUDGET_S:
        reasons.append(f"budget {args.budget:g} s")
    if settings["data"] or settings["evaluate"] or settings["classifier"]:
        reasons.append("data or evaluation overridden")
    if set(args.models) != set(ALL_MODELS):
        reasons.append("not every model")
    reasons += [f"{name} {r.get('status')}" for name, r in models.items()
                if r.get("status") != "ok"]
    return not reasons, ", ".join(reasons)


def assemble(args, settings: dict, models: dict, overhead: dict, sizes: dict) -> dict:
    """Results with the cross-model figures (times to targets, ratios, bars) computed; a run
    that is not a reference run is always labelled (`partial` unless --label says otherwise),
    so its files never pass for one."""
    ok, why = reference_run(args, settings, models)
    label = args.label or (None if ok else "partial")
    iwae_k = next((m["final"]["iwae_k"] for m in models.values() if m.get("status") == "ok"),
                  None)
    return {
        "schema": 1,
        "date": dt.date.today().isoformat(),
        "label": label,
        "reference_run": ok,
        "why_not_reference": why,
        "settings": settings,
        "data_sizes": sizes,
        "machine": machine(),
        "git": git_revision(),
        "iwae_k": iwae_k,
        "subject": SUBJECT,
        "fast_subject": FAST_SUBJECT,
        "baselines": BASELINES,
        "models": models,
        "time_to_targets": compare.times_to_targets(models, BASELINES),
        "ratios": compare.ratios_against(models, SUBJECT, BASELINES),
        "fast_ratios": compare.ratios_against(models, FAST_SUBJECT, BASELINES),
        "bars": compare.bars(models, SUBJECT, PYTORCH_MLP, SLOW_BASELINES, FAST_SUBJECT),
        "overhead": overhead,
    }


def samples_picture(models: dict, work: Path, path: Path) -> str | None:
    """One row of prior samples per model, labelled: what the numbers look like."""
    rows = {name: work / f"{name}.samples.npy" for name, r in models.items()
            if r.get("status") == "ok" and (work / f"{name}.samples.npy").is_file()}
    if not rows:
        return None
    import numpy as np  # noqa: PLC0415 (rendering pulls in TensorFlow: only when needed)

    from mnist_vae.rendering import compose, save_png  # noqa: PLC0415

    tiles = np.stack([np.load(p)[..., 0] for p in rows.values()])
    save_png(compose(tiles, scale=2, gutter=2, row_labels=list(rows)), path)
    return path.name


def results_stem(results: dict) -> str:
    return results["date"] + (f"-{results['label']}" if results.get("label") else "")


def write_results(results: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = results_stem(results)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    with atomic_paths(json_path, md_path) as (json_tmp, md_tmp):
        json_tmp.write_text(json.dumps(results, indent=1) + "\n")
        md_tmp.write_text("# " + report.render(results, heading="#").lstrip("# ") + "\n")
    return json_path, md_path


def require_data() -> None:
    """Fail before any model trains when the pipeline's MNIST file is missing."""
    from mnist_vae.config import load_params  # noqa: PLC0415

    path = REPO / load_params(REPO / "params.yaml").paths.data
    if not path.is_file():
        raise SystemExit(f"benchmark: {path} is missing; run `dvc repro download` (with "
                         "MNIST_VAE_SOURCE=<local mirror> on an offline machine) first")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    require_data()
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK_DIR, prefix="run-") as tmp:
        work = Path(tmp)
        settings = Settings(
            budget_s=args.budget,
            data=overrides(args, ["train_limit", "test_limit", "val_size"]),
            evaluate=overrides(args, ["iwae_images", "iwae_samples", "prior_samples"]),
            classifier=({"epochs": args.classifier_epochs} if args.classifier_epochs else {}),
            threads=args.threads,
        )
        settings_path = work / "settings.json"
        settings.to_json(settings_path)
        classifier = ensure_classifier(args, settings, settings_path, work)
        settings = dataclasses.replace(settings, classifier_path=str(classifier))
        settings.to_json(settings_path)
        models = {name: measure_model(name, settings_path, work, args.threads)
                  for name in args.models}
        sizes = next((m["data_sizes"] for m in models.values() if "data_sizes" in m), {})
        overhead = ({"status": "skipped", "note": "--no-overhead"} if args.no_overhead
                    else measure_overhead(args.overhead_repo))
        results = assemble(args, dataclasses.asdict(settings), models, overhead, sizes)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        picture = args.out_dir / f"{results_stem(results)}-samples.png"
        results["samples_picture"] = samples_picture(models, work, picture)
    json_path, md_path = write_results(results, args.out_dir)
    print(f"[bench] wrote {json_path} and {md_path}")
    if args.readme:
        if results["reference_run"]:
            relative = os.path.relpath(args.out_dir.resolve(), args.readme.resolve().parent)
            block = report.render(results, heading="###", picture_dir=f"{relative}/")
            args.readme.write_text(report.update_readme(args.readme.read_text(), block))
            print(f"[bench] refreshed the Benchmark block of {args.readme}")
        else:
            print(f"[bench] {args.readme} left alone: not a reference run "
                  f"({results['why_not_reference']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
