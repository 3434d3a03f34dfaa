"""Tracking faults for real: a stalling server, a server killed mid-run, SIGTERM and SIGKILL.

Each test runs a child process that opens a training run the way `stages/train.py` does
(`stage_exit.run_stage`, `stop_on_sigterm`, `training_run`) and then works in a loop, logging a
metric every 50 ms (so a signal mostly lands inside a store call, the hardest place); the test
injects the fault and prints the time to fail (docs/reliability.md quotes these figures).
"""

from __future__ import annotations

import http.server
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from helpers import copy_repo, pipeline_env, run_stage, set_params, write_random_mnist
from mlflow_helpers import subprocess_env
from servers import mlflow_server

TIMEOUT_S = 2  # tracking.server_timeout_s in the children
OUTAGE_S = 2  # tracking.outage_s in the children: how long a dead store is waited for
BOUND_S = 120  # the longest any wait in these tests may take, under any machine load

CHILD = textwrap.dedent("""
    import sys, time
    from mnist_vae import tracking
    from mnist_vae.config import parse_params
    from mnist_vae.stage_exit import run_stage

    ticks, timeout, grace, outage = (int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]),
                                     float(sys.argv[4]))

    def main():
        params = parse_params({"tracking": {"server_timeout_s": timeout, "outage_s": outage}})
        with tracking.training_run(params) as run:
            print("OPEN", run.run_id, flush=True)
            for step in range(ticks):
                tracking.log_epoch(step, {"tick": float(step)}, outage)
                if step == 9:
                    print("LOGGED", flush=True)  # metrics reach the store: fault time
                time.sleep(0.05)
        print("DONE", run.run_id, flush=True)

    tracking.stop_on_sigterm(grace)
    sys.exit(run_stage(main, "train", tracking.TrackingError))
""")


class Child:
    """The child process, its stdout and stderr drained by threads (a full pipe cannot block
    it), its lines awaited with a bound; killed when the test ends."""

    def __init__(self, tmp: Path, uri: str, ticks: int, timeout_s: float = TIMEOUT_S,
                 grace_s: float = 20.0, outage_s: float = OUTAGE_S):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(ticks), str(timeout_s), str(grace_s),
             str(outage_s)], cwd=tmp,
            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=subprocess_env(MLFLOW_TRACKING_URI=uri, DVC_ROOT=str(tmp)))
        self.stdout: queue.Queue[str] = queue.Queue()
        self.out_lines: list[str] = []
        self.err_lines: list[str] = []
        self._readers = [threading.Thread(target=self._drain, args=(stream, sink), daemon=True)
                         for stream, sink in ((self.proc.stdout, self.stdout),
                                              (self.proc.stderr, self.err_lines))]
        for reader in self._readers:
            reader.start()

    def _drain(self, stream, sink) -> None:
        for line in stream:
            sink.put(line) if isinstance(sink, queue.Queue) else sink.append(line)

    def wait_line(self, prefix: str, timeout_s: float = BOUND_S) -> str:
        """The next stdout line, which must start with `prefix`, within `timeout_s`."""
        try:
            line = self.stdout.get(timeout=timeout_s)
        except queue.Empty:
            self.kill()
            pytest.fail(f"no {prefix!r} line from the child in {timeout_s} s: {self.stderr}")
        self.out_lines.append(line)
        if not line.startswith(prefix):
            self.kill()
            pytest.fail(f"child said {line!r}, not {prefix!r}: {self.stderr}")
        return line

    def finish(self, timeout_s: float = BOUND_S, why: str = "") -> tuple[str, str]:
        """Wait for the child to exit within `timeout_s` (else kill it and fail); stdout, stderr."""
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the child still runs {timeout_s} s later{why}: {self.stderr}")
        for reader in self._readers:
            reader.join(timeout=10)
        while not self.stdout.empty():
            self.out_lines.append(self.stdout.get())
        return "".join(self.out_lines), self.stderr

    @property
    def stderr(self) -> str:
        return "".join(self.err_lines)

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture
def child(tmp_path):
    """Start children (`child(uri, ticks, ...)`); any still alive is killed at teardown."""
    started: list[Child] = []

    def start(uri: str, ticks: int, **kwargs) -> Child:
        started.append(Child(tmp_path, uri, ticks, **kwargs))
        return started[-1]

    yield start
    for each in started:
        each.kill()


def _opened_run(proc: Child) -> str:
    """Wait (bounded) for the child's OPEN line; return the run id."""
    return proc.wait_line("OPEN").split()[1]


def _status(uri: str, run_id: str):
    return MlflowClient(uri).get_run(run_id)


@pytest.fixture
def sqlite_uri(tmp_path, empty_store_db) -> str:
    shutil.copyfile(empty_store_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


# --- a sick server -------------------------------------------------------------------------

class StallingServer(http.server.ThreadingHTTPServer):
    """Answers /health at once and stalls every other request until closed."""

    daemon_threads = True

    def __init__(self) -> None:
        self.released = threading.Event()
        super().__init__(("127.0.0.1", 0), _StallingHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.released.set()
        self.shutdown()
        self.server_close()


class _StallingHandler(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        if self.path.rstrip("/") != "/health":
            self.server.released.wait(600)
        try:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")
        except OSError:  # the client gave up first: what the test wants
            pass

    do_GET = do_POST = _answer  # noqa: N815 - the names http.server calls

    def log_message(self, format, *args) -> None:  # noqa: A002
        pass


@pytest.mark.slow
def test_a_server_that_stalls_after_health_fails_the_stage_within_the_bound(child):
    server = StallingServer()
    try:
        start = time.monotonic()
        proc = child(f"http://127.0.0.1:{server.server_address[1]}", ticks=1)
        _, err = proc.finish(90, " with a stalling server")  # today's code: 300 s and more
        seconds = time.monotonic() - start
    finally:
        server.close()
    print(f"stalling server: stage failed after {seconds:.1f} s (timeout {TIMEOUT_S} s)")
    assert proc.returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "server_timeout_s" in lines[0], err
    assert seconds < 60


@pytest.fixture
def tracking_server(tmp_path):
    """A real `mlflow server` on a free 127.0.0.1 port; yields (uri, process)."""
    with mlflow_server(tmp_path) as server:
        yield server


@pytest.mark.slow
def test_a_server_killed_mid_run_stops_the_stage_within_the_bound(child, tracking_server):
    uri, server = tracking_server
    proc = child(uri, ticks=600)
    _opened_run(proc)
    proc.wait_line("LOGGED")
    os.killpg(server.pid, signal.SIGKILL)
    start = time.monotonic()
    _, err = proc.finish(90, " after its tracking server died")  # today's: ~4 min, then a hang
    seconds = time.monotonic() - start
    print(f"server killed mid-run: stage stopped {seconds:.1f} s later (timeout {TIMEOUT_S} s)")
    assert proc.returncode == 1
    lines = err.strip().splitlines()
    said = [line for line in lines if not line.startswith("tracking: the store failed")]
    assert len(said) == 1 and "rerun the stage" in said[0], err
    assert seconds < 30


@pytest.mark.slow
def test_a_server_restarted_mid_run_loses_and_duplicates_no_epoch(child, tmp_path):
    store, ticks = tmp_path / "server", 60
    store.mkdir()
    with mlflow_server(store) as (uri, server):
        proc = child(uri, ticks=ticks, outage_s=BOUND_S)
        run_id = _opened_run(proc)
        proc.wait_line("LOGGED")
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
        down = time.monotonic()
    with mlflow_server(store, port=int(uri.rsplit(":", 1)[1])):
        print(f"server restarted: down {time.monotonic() - down:.1f} s")
        out, err = proc.finish(BOUND_S, " after its tracking server came back")
        assert proc.returncode == 0, err
        assert f"DONE {run_id}" in out
        history = MlflowClient(uri).get_metric_history(run_id, "tick")
        assert sorted(m.step for m in history) == list(range(ticks)), "each tick exactly once"
        assert MlflowClient(uri).get_run(run_id).info.status == "FINISHED"
    assert "tracking.outage_s" in err and "the store is back" in err, err


# --- signals -------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT] * 2)
def test_sigterm_and_sigint_end_the_run_killed(child, sqlite_uri, signum):
    proc = child(sqlite_uri, ticks=600)
    run_id = _opened_run(proc)
    proc.wait_line("LOGGED")
    start = time.monotonic()
    proc.proc.send_signal(signum)
    _, err = proc.finish(60, f" after {signal.Signals(signum).name}")
    print(f"{signal.Signals(signum).name}: run closed, process gone in "
          f"{time.monotonic() - start:.1f} s")
    assert proc.returncode == 128 + signum, err
    assert _status(sqlite_uri, run_id).info.status == "KILLED", err
    assert "Traceback" not in err, err
    said = [line for line in err.splitlines() if line.startswith("train: ")]
    assert said == [f"train: stopped by {signal.Signals(signum).name}; outputs are written "
                    "whole or not at all: rerun the stage to finish it"], err


@pytest.mark.slow
def test_more_sigterms_during_cleanup_cannot_cut_the_closing_of_the_run_short(child, sqlite_uri):
    proc = child(sqlite_uri, ticks=600)
    run_id = _opened_run(proc)
    proc.wait_line("LOGGED")
    start, sent = time.monotonic(), 0
    while proc.proc.poll() is None and time.monotonic() - start < 30:
        proc.proc.send_signal(signal.SIGTERM)  # the first stops it, the rest land in cleanup
        sent += 1
        time.sleep(0.002)  # a barrage, not a synchronisation
    _, err = proc.finish(60, f" after {sent} SIGTERMs")
    print(f"{sent} SIGTERMs: run closed, process gone in {time.monotonic() - start:.1f} s")
    assert sent > 1
    # 143 from the stage, or SIGTERM's own -15 when one lands after Python restored the
    # default handlers on its way out (the shell reports 143 for both)
    assert proc.returncode in (128 + signal.SIGTERM, -signal.SIGTERM), err
    assert "Traceback" not in err, err
    assert _status(sqlite_uri, run_id).info.status == "KILLED", err


@pytest.mark.slow
def test_a_store_stalled_during_cleanup_cannot_hold_the_process_past_the_deadline(
        child, tracking_server):
    uri, server = tracking_server
    grace_s = 3.0
    proc = child(uri, ticks=600, timeout_s=30, grace_s=grace_s)  # a stalled call: ~61 s
    run_id = _opened_run(proc)
    proc.wait_line("LOGGED")
    os.killpg(server.pid, signal.SIGSTOP)  # the server still accepts connections, never answers
    try:
        start = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        _, err = proc.finish(40, " with its store stalled")  # today's code: 60 s and more
        seconds = time.monotonic() - start
    finally:
        os.killpg(server.pid, signal.SIGCONT)
    print(f"SIGTERM with a stalled store: process gone in {seconds:.1f} s (grace {grace_s} s)")
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "exiting now: the next train start closes the run" in err, err
    assert seconds < grace_s + 10
    assert _status(uri, run_id).info.status == "RUNNING"  # left open, not lost:
    rerun = child(uri, ticks=1)
    rerun.finish(BOUND_S, " closing the orphan")
    assert rerun.returncode == 0, rerun.stderr
    assert _status(uri, run_id).info.status == "KILLED"


@pytest.mark.slow
def test_a_run_orphaned_by_sigkill_is_closed_by_the_next_start(child, sqlite_uri):
    proc = child(sqlite_uri, ticks=600)
    orphan = _opened_run(proc)
    proc.kill()
    assert _status(sqlite_uri, orphan).info.status == "RUNNING"

    rerun = child(sqlite_uri, ticks=1)
    out, err = rerun.finish(BOUND_S)
    assert rerun.returncode == 0, err
    run = _status(sqlite_uri, orphan)
    assert run.info.status == "KILLED"
    assert "died" in run.data.tags["mnist_vae.closed_reason"]
    said = [line for line in err.splitlines() if orphan in line]
    assert len(said) == 1 and "marked KILLED" in said[0], err
    new_run = out.split()[1]
    assert _status(sqlite_uri, new_run).info.status == "FINISHED"


# --- the real train stage, SIGKILLed after its first epoch ---------------------------------

RESUMABLE = {
    "data": {"val_size": 200, "train_limit": 1800, "test_limit": 8},
    "model": {"latent_dim": 2,
              "encoder": {"filters": [4], "kernel_sizes": [3], "strides": [4]},
              "decoder": {"reshape": [7, 7, 4], "filters": [4], "kernel_sizes": [3],
                          "strides": [4]}},
    "train": {"epochs": 2, "batch_size": 16, "learning_rate": 0.01, "progress_samples": 4},
}


@pytest.mark.slow
def test_train_killed_after_epoch_one_resumes_with_the_whole_curve_and_closes_the_orphan(
        tmp_path):
    repo = copy_repo(tmp_path / "repo")
    set_params(repo, RESUMABLE)
    write_random_mnist(repo, 2000, 8)
    env = pipeline_env(repo)
    proc = subprocess.Popen([sys.executable, "stages/train.py"], cwd=repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list((repo / ".checkpoints").glob("*/checkpoint.npz")):
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.01)
    proc.kill()
    proc.wait(timeout=60)
    (checkpoint,) = (repo / ".checkpoints").glob("*/checkpoint.npz")
    with np.load(checkpoint) as npz:
        assert json.loads(str(npz["state"]))["epochs_done"] == 1  # of 2

    resumed = run_stage(repo, "train", env)
    assert "1 epochs done" in resumed.stdout
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    run_id = json.loads((repo / "models" / "mlflow_run.json").read_text())["run_id"]
    history = client.get_metric_history(run_id, "val_loss")
    assert sorted(m.step for m in history) == [0, 1]
    (orphan,) = [r for r in client.search_runs(
        [client.get_run(run_id).info.experiment_id]) if r.info.run_id != run_id]
    assert orphan.info.status == "KILLED"
    assert [line for line in resumed.stderr.splitlines() if orphan.info.run_id in line]
