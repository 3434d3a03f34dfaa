"""`dvc exp run --run-all` with a bound: a queue that stops making progress fails the test in
minutes with DVC's own view of it (queue status, each task's log, the workers' logs), instead
of hanging until pytest's timeout.

DVC's queue is Celery on kombu's filesystem transport (`.dvc/tmp/exps/celery`). With two
workers (`-j 2`) a worker can read a message file that another process has created but not yet
written (kombu writes in place, in the folder the reader lists), die with "Unrecoverable error:
JSONDecodeError('Expecting value: line 1 column 1 (char 0)')", and take the task it had moved to
`processed` with it: `dvc exp run --run-all` then waits for that task forever (the upstream
reports are listed in docs/team.md). `KOMBU_RACE` is that line.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

KOMBU_RACE = "Unrecoverable error: JSONDecodeError"


class QueueStalled(AssertionError):
    """The queue made no progress; the message holds DVC's status and logs."""

    def __init__(self, message: str, kombu_race: bool):
        super().__init__(message)
        self.kombu_race = kombu_race


def run_all(repo: Path, env: Mapping[str, str], jobs: int, *, timeout_s: float = 1500,
            idle_s: float = 240) -> str:
    """Run the queued experiments on `jobs` workers; their output. Raises QueueStalled when no
    experiment process has been alive for `idle_s` seconds (or after `timeout_s` in all)."""
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "exp", "run", "--run-all", "-j",
                             str(jobs)], cwd=repo, env=dict(env), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    started = last_busy = time.monotonic()
    try:
        while True:
            try:
                output = proc.communicate(timeout=5)[0]
                return_code = proc.returncode
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if running_experiments(repo):
                last_busy = now
            if now - last_busy > idle_s or now - started > timeout_s:
                why = (f"no experiment process alive for {now - last_busy:.0f} s"
                       if now - last_busy > idle_s else f"not done after {timeout_s:.0f} s")
                report = diagnostics(repo, env)
                raise QueueStalled(f"dvc exp run --run-all -j {jobs}: {why}\n{report}",
                                   KOMBU_RACE in report)
    finally:
        _stop(proc, repo)
    if return_code != 0:
        raise AssertionError(f"dvc exp run --run-all exited {return_code}\n{output}\n"
                             f"{diagnostics(repo, env)}")
    return output


def running_experiments(repo: Path) -> list[int]:
    """Pids of the queue's live `dvc exp exec-run` processes (DVC's process records)."""
    alive = []
    for record in (repo / ".dvc" / "tmp" / "exps" / "run").glob("*/*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            info = json.loads(record.read_text())
            if info["returncode"] is None and _alive(info["pid"]):
                alive.append(info["pid"])
    return alive


def diagnostics(repo: Path, env: Mapping[str, str]) -> str:
    """`dvc queue status`, `dvc queue logs` of each task and the tail of each worker's log."""
    parts = []
    status = _dvc(repo, env, "queue", "status")
    parts.append(f"--- dvc queue status ---\n{status}")
    for line in status.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 2 and fields[0] != "Worker":
            parts.append(f"--- dvc queue logs {fields[0]} ---\n"
                         f"{_dvc(repo, env, 'queue', 'logs', fields[0])[-3000:]}")
    for log in sorted((repo / ".dvc" / "tmp" / "exps" / "celery").glob("dvc-exp-worker-*.out")):
        text = log.read_text(errors="replace")
        crash = text.find(KOMBU_RACE)
        parts.append(f"--- {log.name} (tail) ---\n{text[-3000:]}")
        if crash >= 0:
            parts.append(f"--- {log.name}: {text[max(0, crash - 300):crash + 200]}")
    return "\n".join(parts)


def _dvc(repo: Path, env: Mapping[str, str], *args: str) -> str:
    try:
        done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=dict(env),
                              text=True, capture_output=True, timeout=120)
        return done.stdout + done.stderr
    except subprocess.TimeoutExpired:
        return f"(dvc {' '.join(args)} did not answer within 120 s)"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _stop(proc: subprocess.Popen, repo: Path) -> None:
    """End what the run started: its process group, each worker's and each experiment's."""
    groups = {proc.pid}
    pid_files = [*(repo / ".dvc" / "tmp" / "exps").glob("celery/dvc-exp-worker-*.pid"),
                 *(repo / ".dvc" / "tmp" / "exps").glob("run/*/*.pid")]
    for pid_file in pid_files:
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text())
            if _alive(pid) and os.getpgid(pid) != os.getpgrp():
                groups.add(os.getpgid(pid))
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.communicate(timeout=10)
