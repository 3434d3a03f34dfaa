"""What a finished build holds, in a few lines: `python -m mnist_vae.summary` after `dvc repro`.

The headline metrics against the previous build's (the `metrics/eval.json` committed at git
HEAD), the pictures, the MLflow run and the registered version, and where to look next. It
only reads, and no stage depends on it (nor on anything it alone uses: its one MLflow query is
here rather than in tracking.py, which the stages depend on). Run from the repository root.
"""

from __future__ import annotations

import json
import os
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


def versions_of_run(run_id: str, name: str, uri: str) -> list:
    """The versions of model `name` registered from run `run_id` (newest first), with aliases."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    found = client.search_model_versions(f"name = '{name}' and tags.run_id = '{run_id}'")
    # search results may leave out aliases: read each version back
    versions = [client.get_model_version(name, v.version) for v in found]
    return sorted(versions, key=lambda v: int(v.version), reverse=True)


def registered_versions(run_id: str, params: Params) -> str:
    """`name version N (aliases)` for the run's registered model, or why there is none."""
    root = tracking.repo_root()
    if not os.environ.get("MLFLOW_TRACKING_URI") and not (root / tracking.STORE_FILE).is_file():
        return f"no MLflow store ({root / tracking.STORE_FILE} is missing)"
    # a summary must not hang on an unreachable tracking server
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    name = params.tracking.registered_model
    try:
        versions = versions_of_run(run_id, name, tracking.tracking_uri(root))
    except Exception as err:  # noqa: BLE001 - any store failure only loses this line
        why = (str(err).splitlines() or [""])[0]
        why = why if len(why) <= 120 else why[:119] + "…"
        return f"cannot read the registry ({type(err).__name__}: {why})"
    if not versions:
        return f"not registered in {name}"
    return "; ".join(f"{name} version {v.version}"
                     + (f" ({', '.join(sorted(v.aliases))})" if v.aliases else "")
                     for v in versions)


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
        lines.append(f"Registered: {registered_versions(pointer['run_id'], params)}")
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
