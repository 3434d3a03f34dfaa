"""The retrain report: params and metrics against a base revision, its prior samples beside ours.

    python scripts/retrain_report.py --base origin/main --repro-log LOG --out reports/retrain.md

Writes the Markdown report (also printed), and under the report's directory `samples/`:
`base.png` (the base's prior-sample grid, fetched from the DVC cache or remote), `new.png` and
`compare.png` (both side by side). Numbers come from `dvc params diff` / `dvc metrics diff`
against the base's committed `params.yaml` and metrics.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

SAMPLES = "plots/samples.png"  # the render stage's grid of digits drawn from the prior

# Metric names (the last dotted part of a key) whose direction is known: the VAE's bounds and
# sample distances go down when it gets better, recognisable samples and accuracy go up.
LOWER_IS_BETTER = {"neg_elbo", "iwae_nll", "bits_per_dim", "iwae_bits_per_dim", "frechet"}
HIGHER_IS_BETTER = {"recognisable", "test_accuracy"}


def direction(key: str) -> str | None:
    """'lower' or 'higher' when that way is better for metric `key`, else None."""
    name = key.rsplit(".", 1)[-1]
    if name in LOWER_IS_BETTER:
        return "lower"
    if name in HIGHER_IS_BETTER:
        return "higher"
    return None


def verdict(key: str, old, new) -> str:
    """improved / worse / unchanged for a metric with a direction; '' when there is none."""
    way = direction(key)
    if way is None or not _is_number(old) or not _is_number(new):
        return ""
    if new == old:
        return "unchanged"
    return "improved" if (new < old) == (way == "lower") else "worse"


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def fmt(value) -> str:
    """A cell: numbers to 4 significant decimals, '-' for missing."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1000 or 0 < abs(value) < 0.001 else f"{value:.4f}"
    return str(value)


def fmt_delta(old, new) -> str:
    if not (_is_number(old) and _is_number(new)):
        return ""
    delta = new - old
    return "0" if delta == 0 else f"{delta:+.4f}"


def flatten(diff: Mapping[str, Mapping[str, Mapping]]) -> list[tuple[str, str, dict]]:
    """`dvc ... diff --json` ({file: {key: {old, new, ...}}}) as sorted (file, key, change) rows."""
    return sorted((file, key, dict(change)) for file, changes in diff.items()
                  for key, change in (changes or {}).items())


def params_section(diff: Mapping, base: str) -> str:
    rows = flatten(diff)
    if not rows:
        return f"No param differs from `{base}`.\n"
    lines = [f"| param | `{base}` | this |", "|---|---|---|"]
    lines += [f"| {key} | {fmt(c.get('old'))} | {fmt(c.get('new'))} |" for _, key, c in rows]
    return "\n".join(lines) + "\n"


def params_summary(diff: Mapping, base: str) -> str:
    """One line for a commit message: each changed param as `key old -> new`."""
    rows = flatten(diff)
    if not rows:
        return f"No param changed against {base}."
    changes = ", ".join(f"{key} {fmt(c.get('old'))} -> {fmt(c.get('new'))}" for _, key, c in rows)
    return f"Params changed against {base}: {changes}."


def metrics_section(diff: Mapping, base: str) -> str:
    """The metrics with a direction first (with improved/worse), then the changed others."""
    rows = flatten(diff)
    if not rows:
        return f"No metrics found here or at `{base}`.\n"
    if all(c.get("old") is None for _, _, c in rows):
        return (f"`{base}` has no committed metrics, so there is nothing to compare with: "
                "commit `dvc.lock` and the metrics there (`make retrain COMMIT=1` on main).\n")
    ranked = [r for r in rows if direction(r[1])]
    others = [r for r in rows if not direction(r[1]) and r[2].get("old") != r[2].get("new")]
    lines = [f"| metric | `{base}` | this | change | |", "|---|---|---|---|---|"]
    for file, key, c in ranked:
        old, new = c.get("old"), c.get("new")
        mark = verdict(key, old, new)
        better = f" ({direction(key)} is better)" if mark in ("improved", "worse") else ""
        lines.append(f"| {file}: {key} | {fmt(old)} | {fmt(new)} | {fmt_delta(old, new)} "
                     f"| {mark}{better} |")
    text = "\n".join(lines) + "\n"
    if others:
        other_lines = [f"| {file}: {key} | {fmt(c.get('old'))} | {fmt(c.get('new'))} "
                       f"| {fmt_delta(c.get('old'), c.get('new'))} |" for file, key, c in others]
        text += ("\n<details><summary>Other metrics that changed "
                 f"({len(others)})</summary>\n\n| metric | `{base}` | this | change |\n"
                 "|---|---|---|---|\n" + "\n".join(other_lines) + "\n\n</details>\n")
    return text


def stages_from_log(log: str) -> tuple[list[str], list[str]]:
    """(stages run, stages unchanged or restored from the run cache) from `dvc repro` output."""
    ran = re.findall(r"^Running stage '([^']+)'", log, flags=re.M)
    kept = re.findall(r"^(?:Stage '([^']+)' didn't change, skipping"
                      r"|Restored stage '([^']+)' from run-cache)", log, flags=re.M)
    return ran, [a or b for a, b in kept]


def side_by_side(left: Path, right: Path, out: Path, labels: tuple[str, str]) -> None:
    """Two images next to each other on white, each with its label above."""
    from PIL import Image, ImageDraw

    images = [Image.open(p).convert("L") for p in (left, right)]
    pad, top = 10, 24
    width = sum(i.width for i in images) + pad * 3
    height = max(i.height for i in images) + top + pad
    canvas = Image.new("L", (width, height), 255)
    draw, x = ImageDraw.Draw(canvas), pad
    for image, label in zip(images, labels, strict=True):
        canvas.paste(image, (x, top))
        draw.text((x, 6), label, fill=0)
        x += image.width + pad
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)


# --- what runs DVC and git -------------------------------------------------------------------

def _dvc_json(*args: str) -> tuple[dict, str]:
    """A `dvc ... --json` command's parsed output ({} if it failed) and its stderr."""
    done = subprocess.run([sys.executable, "-m", "dvc", *args, "--json"],
                          capture_output=True, text=True)
    try:
        return json.loads(done.stdout or "{}"), done.stderr.strip()
    except json.JSONDecodeError:
        return {}, (done.stderr + done.stdout).strip()


def _short(rev: str) -> str:
    done = subprocess.run(["git", "rev-parse", "--short", rev], capture_output=True, text=True)
    return done.stdout.strip() or rev


def fetch_base_samples(base: str, dest: Path) -> str | None:
    """Copy the base revision's prior-sample grid to `dest` (DVC cache, else remote); why not."""
    import dvc.api

    try:
        with dvc.api.open(SAMPLES, repo=".", rev=base, mode="rb") as src:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(src.read())
    except Exception as err:  # noqa: BLE001 - any failure only leaves the picture out
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return None


def samples_section(base: str, out_dir: Path) -> str:
    new = Path(SAMPLES)
    if not new.is_file():
        return f"No `{SAMPLES}` in this workspace (the render stage did not run).\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(new, out_dir / "new.png")
    problem = fetch_base_samples(base, out_dir / "base.png")
    if problem:
        return (f"`{base}`'s grid could not be fetched ({problem}); this run's is "
                f"`{out_dir / 'new.png'}`.\n")
    side_by_side(out_dir / "base.png", out_dir / "new.png", out_dir / "compare.png",
                 (f"base {_short(base)}", f"this {_short('HEAD')}"))
    return (f"`{out_dir / 'compare.png'}`: `{base}` on the left, this run on the right "
            f"(also `base.png` and `new.png` there; in CI, in the run's artifact).\n")


def build_report(base: str, repro_log: str, overlay: str, out: Path) -> str:
    ran, kept = stages_from_log(repro_log)
    params, params_err = _dvc_json("params", "diff", base)
    metrics, metrics_err = _dvc_json("metrics", "diff", base, "--all")
    run_file = Path("models/mlflow_run.json")
    run_id = json.loads(run_file.read_text()).get("run_id") if run_file.is_file() else None
    lines = [f"## Retrain report: `{_short('HEAD')}` against `{base}` (`{_short(base)}`)", ""]
    if overlay:
        lines.append(f"- params overlay: `{overlay}` (numbers not comparable with a full run)")
    lines.append(f"- stages run: {', '.join(ran) or 'none'}")
    lines.append(f"- stages unchanged or restored from cache: {', '.join(kept) or 'none'}")
    if run_id:
        lines.append(f"- MLflow run: `{run_id}`")
    record_file = Path("models/registered.json")  # what the register stage did
    if record_file.is_file():
        record = json.loads(record_file.read_text())
        lines.append(f"- registered: {record['model']} version {record['version']} "
                     f"({', '.join(record['aliases'])})")
    lines += ["", "### Params changed", "", params_section(params, base).rstrip()]
    if params_err and not params:
        lines += ["", f"(`dvc params diff`: {params_err.splitlines()[-1]})"]
    lines += ["", "### Metrics", "", metrics_section(metrics, base).rstrip()]
    if metrics_err and "failed to load" in metrics_err.lower():
        lines += ["", f"(`dvc metrics diff`: {metrics_err.splitlines()[0]})"]
    lines += ["", "### Digits drawn from the prior", "",
              samples_section(base, out.parent / "samples").rstrip(), ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision to compare with")
    parser.add_argument("--repro-log", type=Path, help="the output of dvc repro / exp run")
    parser.add_argument("--overlay", default="", help="the params overlay retrained with")
    parser.add_argument("--out", type=Path, default=Path("reports/retrain.md"))
    parser.add_argument("--summary-line", action="store_true",
                        help="print only the params that changed, on one line (commit messages)")
    args = parser.parse_args(argv)
    if args.summary_line:
        print(params_summary(_dvc_json("params", "diff", args.base)[0], args.base))
        return 0
    log = args.repro_log.read_text() if args.repro_log and args.repro_log.is_file() else ""
    report = build_report(args.base, log, args.overlay, args.out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
