"""Real servers for the tests: started in their own process group, awaited with a bound, stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import unused_port
from mlflow_helpers import VENV_BIN, subprocess_env


def start(args: list, log: Path, env: dict, cwd: Path) -> subprocess.Popen:
    """A server in its own process group (it forks workers), logging to `log`."""
    with open(log, "ab") as out:  # a restarted server adds to its log
        return subprocess.Popen([str(a) for a in args], stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=cwd, start_new_session=True)


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 300) -> float:
    """Poll `url` until it answers 200; return the seconds it took, or fail with the log."""
    begin = time.monotonic()
    while time.monotonic() - begin < timeout_s:
        if proc.poll() is not None:
            pytest.fail(f"server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return time.monotonic() - begin
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} not ready after {timeout_s} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen, grace_s: float = 10) -> None:
    """Terminate the whole process group; kill it if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


@contextlib.contextmanager
def mlflow_server(root: Path, port: int | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """`mlflow server` on 127.0.0.1 (a free port unless given), its SQLite store and artifacts
    under `root` (a second server on the same root and port is the first one restarted)."""
    port = port or unused_port()
    log = root / "server.log"
    proc = start([VENV_BIN / "mlflow", "server", "--host", "127.0.0.1", "--port", port,
                  "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                  "--artifacts-destination", root / "artifacts"], log,
                 subprocess_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"), root)
    try:
        seconds = wait_ready(f"http://127.0.0.1:{port}/health", proc, log)
        print(f"mlflow server ready in {seconds:.1f} s")
        yield f"http://127.0.0.1:{port}", proc
    finally:
        stop(proc)
