"""Pipeline overhead: how long `dvc repro` takes when nothing changed, and after a change to a
param only the render stage reads. Measured in a temporary copy of a built repository, so the
repository itself is never touched. On its own (`make bench` runs it too):

    PYTHONPATH=src:. .venv/bin/python -m benchmarks.overhead [--repo .] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

RENDER_PARAM = ("render", "scale")  # read by the render stage only
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
                "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}
IGNORED = {".venv", ".git", "benchmarks", ".pytest_cache", ".ruff_cache", "__pycache__"}


def edit_param_text(text: str, section: str, key: str,
                    change: Callable[[str], str]) -> tuple[str, str]:
    """params.yaml text with `section.key`'s value replaced by change(old value), comments and
    layout kept; returns (new text, new value). KeyError when the key is not in the section.
    """
    lines = text.splitlines(keepends=True)
    in_section, indent = False, None
    for i, line in enumerate(lines):
        if re.match(r"^[^\s#]", line):
            in_section, indent = line.split(":")[0].strip() == section, None
            continue
        if not in_section or not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = indent or re.match(r"^\s*", line).group(0)  # the section's own keys
        match = re.match(rf"^({indent}{re.escape(key)}:[ \t]*)([^#]*?)([ \t]*(?:#.*)?)$",
                         line.rstrip("\n"))
        if match:
            new = change(match.group(2))
            newline = "\n" if line.endswith("\n") else ""
            lines[i] = f"{match.group(1)}{new}{match.group(3)}{newline}"
            return "".join(lines), new
    raise KeyError(f"{section}.{key}: not in params.yaml")


def increment(value: str) -> str:
    return str(int(value) + 1)


def stages_run(output: str) -> list[str]:
    """The stages `dvc repro` ran (not skipped), from its output."""
    return re.findall(r"Running stage '([^']+)'", output)


DVC = [sys.executable, "-m", "dvc"]


def _timed(command: list[str], cwd: Path, env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n"
                           f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return elapsed, done.stdout + done.stderr


def is_built(repo: Path, env: dict) -> tuple[bool, str]:
    """Whether the pipeline in `repo` is up to date (so a no-op repro is a no-op)."""
    if not (repo / "dvc.lock").is_file():
        return False, "no dvc.lock: run `make repro` first"
    done = subprocess.run([*DVC, "status", "--quiet"], cwd=repo, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        return False, "`dvc status` reports changes: run `make repro` first"
    return True, ""


def _copy_repo(repo: Path, into: Path, env: dict) -> Path:
    """Copy the repository (its files, data, models, DVC cache) without the venv, as a git
    repository of its own with everything git does not ignore committed."""
    target = into / repo.name
    shutil.copytree(repo, target, symlinks=True,
                    ignore=lambda d, names: [n for n in names if n in IGNORED])
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "benchmark copy"]):
        subprocess.run(["git", *args], cwd=target, env=env, check=True, capture_output=True)
    return target


def stage_env(repo: Path) -> dict:
    """Stages run `python`: make it this interpreter, importing `repo`'s own code."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, **GIT_IDENTITY, "PATH": path, "PYTHONPATH": str(repo / "src"),
            "DVC_NO_ANALYTICS": "1"}


def measure_overhead(repo: Path) -> dict:
    """Seconds of a no-op `dvc repro`, and of one after a render-only param change."""
    repo = repo.resolve()
    env = stage_env(repo)
    built, why = is_built(repo, env)
    if not built:
        return {"status": "skipped", "note": why}
    with tempfile.TemporaryDirectory(prefix="mnist-vae-bench-") as tmp:
        copy = _copy_repo(repo, Path(tmp), env)
        env = stage_env(copy)
        _timed([*DVC, "status"], copy, env)  # warm DVC's hash cache in the fresh copy
        noop_s, noop_out = _timed([*DVC, "repro"], copy, env)
        params = copy / "params.yaml"
        section, key = RENDER_PARAM
        text, new_value = edit_param_text(params.read_text(), section, key, increment)
        params.write_text(text)
        render_s, render_out = _timed([*DVC, "repro"], copy, env)
    return {
        "status": "ok",
        "noop_repro_s": noop_s,
        "noop_stages_run": stages_run(noop_out),
        "render_param": f"{section}.{key}={new_value}",
        "render_repro_s": render_s,
        "render_stages_run": stages_run(render_out),
    }


def main(argv: list[str] | None = None) -> int:
    """The overhead timings of a built repository as JSON, with the machine they ran on."""
    from benchmarks.run import print_report

    p = argparse.ArgumentParser(description="No-op and render-only `dvc repro`, timed.")
    p.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)
    timings = measure_overhead(args.repo)
    if timings["status"] != "ok":
        print(f"overhead: not measured: {timings['note']}", file=sys.stderr)
        return 1
    print_report(timings, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
