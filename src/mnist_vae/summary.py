"""What a finished build holds, in a few lines: `python -m mnist_vae.summary` after `dvc repro`.

The headline metrics against the previous build's (the `metrics/eval.json` committed at git
HEAD), the pictures, the MLflow run and the registered version (from the files the train and
register stages wrote), and where to look next. It only reads files, and no stage depends on
it. Run from the repository root.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_vae import tracking
from mnist_vae.config import ConfigError, Params, load_params


@dataclass(frozen=True)
class Headline:
    """One number people look at first: where it is in eval.json and which way is better."""

    label: str
    read: Callable[[dict], float | None]
    unit: str
    lower_is_better: bool


def _get(metrics: dict, *keys: str) -> Any:
    for key in keys:
        if not isinstance(metrics, dict) or key not in metrics:
            return None
        metrics = metrics[key]
    return metrics


def _iwae(metrics: dict) -> float | None:
    """The IWAE bound of the view the model was trained on (the one every run computes)."""
    view = _get(metrics, "meta", "trained_view") or "bernoulli"
    return _get(metrics, "test", view, "iwae_nll")


HEADLINES = (
    Headline("-ELBO (test, bernoulli)", lambda m: _get(m, "test", "bernoulli", "neg_elbo"),
             " nats", True),
    Headline("IWAE NLL (test)", _iwae, " nats", True),
    Headline("recognisable samples", lambda m: _get(m, "samples", "recognisable"), "", False),
    Headline("Frechet distance", lambda m: _get(m, "samples", "frechet"), "", True),
)


def previous_metrics(path: str) -> dict | None:
    """`path` as committed at git HEAD (the previous build's), or None without one."""
    shown = subprocess.run(["git", "show", f"HEAD:{path}"], capture_output=True, text=True)
    if shown.returncode != 0:
        return None
    try:
        return json.loads(shown.stdout)
    except ValueError:
        return None


def _format(value: float, headline: Headline) -> str:
    if headline.unit:
        return f"{value:.2f}{headline.unit}"
    return f"{value:.1%}" if headline.label.startswith("recognisable") else f"{value:.2f}"


def _change(now: float, before: float | None, headline: Headline) -> str:
    if before is None:
        return ""
    delta = now - before
    if abs(delta) < 5e-5:
        return "  (same as HEAD)"
    better = (delta < 0) == headline.lower_is_better
    shown = f"{delta:+.1%}" if headline.label.startswith("recognisable") else f"{delta:+.2f}"
    return f"  ({shown} vs HEAD's {_format(before, headline)}: {'better' if better else 'worse'})"


def metric_lines(metrics: dict, previous: dict | None) -> list[str]:
    """One line per headline metric, with the change since the previous build."""
    lines = []
    for headline in HEADLINES:
        now = headline.read(metrics)
        if now is None:
            continue
        before = headline.read(previous) if previous else None
        lines.append(f"  {headline.label:<24} {_format(now, headline):>12}"
                     f"{_change(now, before, headline)}")
    floor = _get(metrics, "samples", "frechet_floor")
    if floor is not None:
        lines.append(f"  {'(Frechet of test vs test)':<24} {floor:>12.2f}")
    return lines


def registered_version(path: str | Path) -> str:
    """`name version N (aliases)` from the register stage's record, or why there is none."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return f"none recorded ({path} is missing: the register stage has not run)"
    aliases = f" ({', '.join(record['aliases'])})" if record.get("aliases") else ""
    return (f"{record['model']} version {record['version']}{aliases} when registered, "
            f"in {record.get('tracking_uri', 'the MLflow store')}")


def summary(params: Params) -> str:
    """The text printed at the end of `make repro`."""
    paths = params.paths
    lines = ["", "== mnist-vae: what this build holds =="]
    metrics_file = Path(paths.metrics)
    if metrics_file.is_file():
        previous = previous_metrics(paths.metrics)
        lines.append(f"Metrics ({paths.metrics}"
                     + (", compared with git HEAD's):" if previous else "; no previous build "
                        "committed at git HEAD to compare with):"))
        lines += metric_lines(json.loads(metrics_file.read_text()), previous)
    else:
        lines.append(f"Metrics: {paths.metrics} is missing (run `make repro`)")
    pictures = sorted(Path(paths.plots).rglob("*.png")) if Path(paths.plots).is_dir() else []
    lines.append("Pictures: " + (", ".join(map(str, pictures)) or f"none in {paths.plots}/"))
    pointer = tracking.read_run_pointer(Path(paths.run_id))
    if pointer.get("run_id"):
        lines.append(f"MLflow run: {pointer['run_id']} ({pointer.get('run_name', '?')}, "
                     f"experiment {params.tracking.experiment})")
        lines.append(f"Registered: {registered_version(paths.registered)}")
    else:
        lines.append(f"MLflow run: none recorded ({paths.run_id} is missing)")
    lines += [
        "Look further:",
        "  make ui                     the MLflow UI (runs, metrics, versions) on 127.0.0.1",
        "  make plots                  dvc_plots/index.html: training curves and every picture",
        "  .venv/bin/dvc metrics diff  every metric against git HEAD",
    ]
    return "\n".join(lines)


def main() -> int:
    try:
        params = load_params()
    except (ConfigError, OSError) as err:
        print(f"summary: {err}", file=sys.stderr)
        return 2
    print(summary(params))
    return 0


if __name__ == "__main__":
    sys.exit(main())
