"""What identifies a run's code and data: git commit and dirty files, DVC experiment, checksums."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from mnist_vae.config import Params, to_flat_dict
from mnist_vae.files import file_sha256

TAG_GIT_DIRTY = "git.dirty"
TAG_GIT_CHANGED = "git.changed_files"


def git(*args: str) -> str | None:
    """Output of a git command in cwd, or None when git or the repository is missing."""
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.rstrip("\n") if done.returncode == 0 else None


def head_commit() -> str | None:
    """The checked-out commit (under `dvc exp run` in a temp copy, the experiment's baseline)."""
    return git("rev-parse", "HEAD") or os.environ.get("DVC_EXP_BASELINE_REV")


def git_state(outputs: tuple[str, ...] = ()) -> tuple[str | None, list[str] | None]:
    """The HEAD commit and the tracked files that differ from it, pipeline outputs excluded.

    DVC rewrites dvc.lock and the pipeline's outputs (metrics, dvclive files, ...) while it
    runs; counting them would make every run look dirty.
    """
    commit = head_commit()
    excluded = [f":(exclude){path}" for path in ("dvc.lock", *outputs)]
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", *excluded)
    changed = None if status is None else [line[3:] for line in status.splitlines()]
    return commit, changed


def run_name(commit: str | None, now: dt.datetime | None = None) -> str:
    """The DVC experiment name when there is one, else date + short commit."""
    if os.environ.get("DVC_EXP_NAME"):
        return os.environ["DVC_EXP_NAME"]
    now = now or dt.datetime.now()
    return f"{now:%Y-%m-%d-%H%M%S}-{commit[:7] if commit else 'nogit'}"


def provenance_checksums(path: Path) -> dict[str, str]:
    """Every `*sha256*` string in the download stage's provenance JSON, by dotted key."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    found: dict[str, str] = {}

    def walk(node: Any, key: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                name = v.get("name") or v.get("file") if isinstance(v, dict) else None
                walk(v, f"{key}.{name or i}")
        elif isinstance(node, str) and "sha256" in key.rsplit(".", 1)[-1].lower():
            found[key] = node

    walk(data, "")
    return found


def run_tags(params: Params) -> dict[str, str]:
    """Tags that identify code and data: git commit + dirty tree, DVC experiment, checksums."""
    commit, changed = git_state(tuple(to_flat_dict(params.paths).values()))
    tags = {}
    if commit:
        tags["mlflow.source.git.commit"] = commit
    if changed is not None:
        tags[TAG_GIT_DIRTY] = str(bool(changed)).lower()
        if changed:
            tags[TAG_GIT_CHANGED] = ", ".join(changed)[:4000]
    for env, tag in (("DVC_EXP_NAME", "dvc.exp_name"), ("DVC_EXP_BASELINE_REV",
                     "dvc.exp_baseline_rev")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    data = Path(params.paths.data)
    if data.is_file():
        tags["data.sha256"] = file_sha256(data)
    for key, value in provenance_checksums(Path(params.paths.provenance)).items():
        tags[f"data.provenance.{key}"] = value
    return tags
