"""The bounded queue runner on a toy DVC repo: two queued experiments pass on two workers,
and a worker killed mid-experiment (DVC then waits for its task forever) fails in minutes with
DVC's queue status and logs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
import pytest

import dvc_queue
from helpers import git, pipeline_env, run_dvc

pytestmark = pytest.mark.slow

STAGE = """stages:
  wait:
    cmd: python wait.py
    deps: [wait.py]
    params: [x]
    outs: [out.txt]
"""
WAIT = """import time, yaml
time.sleep(5)
open("out.txt", "w").write(str(yaml.safe_load(open("params.yaml"))["x"]))
"""


@pytest.fixture
def queued(tmp_path) -> tuple[Path, dict[str, str]]:
    """A toy repo with two experiments queued."""
    repo = tmp_path / "toy"
    repo.mkdir()
    env = pipeline_env(repo)
    git(repo, "init", "-q")
    run_dvc(repo, "init", "-q", env=env)
    (repo / "params.yaml").write_text("x: 1\n")
    (repo / "dvc.yaml").write_text(STAGE)
    (repo / "wait.py").write_text(WAIT)
    run_dvc(repo, "repro", "-q", env=env)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "toy")
    for name, value in (("a", 2), ("b", 3)):
        run_dvc(repo, "exp", "run", "--queue", "-q", "-n", name, "-S", f"x={value}", env=env)
    return repo, env


def test_two_queued_experiments_pass_on_two_workers(queued):
    repo, env = queued
    output = dvc_queue.run_all(repo, env, jobs=2, idle_s=60, timeout_s=300)
    assert "Ran experiment(s)" in output
    shown = run_dvc(repo, "exp", "show", "--no-pager", "--csv", env=env).stdout
    assert {"a", "b"} <= {line.split(",")[0] for line in shown.splitlines()[1:]}, shown
    assert not dvc_queue.running_experiments(repo)


def test_a_worker_killed_mid_experiment_fails_fast_with_the_queue_logs(queued):
    repo, env = queued
    killed = []

    def kill_a_worker():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            for pid in dvc_queue.running_experiments(repo):
                worker = psutil.Process(pid).parent()
                worker.kill()
                killed.append(worker.pid)
                return
            time.sleep(0.2)

    threading.Thread(target=kill_a_worker, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(dvc_queue.QueueStalled) as stalled:
        dvc_queue.run_all(repo, env, jobs=2, idle_s=30, timeout_s=300)
    seconds = time.monotonic() - started
    print(f"stalled queue reported after {seconds:.0f} s")
    assert killed, "no experiment started"
    report = str(stalled.value)
    assert "no experiment process alive for" in report
    assert "--- dvc queue status ---" in report and "Running" in report
    assert "--- dvc queue logs" in report and "dvc-exp-worker-1.out" in report
    assert seconds < 240
    assert not dvc_queue.running_experiments(repo), "what the run started was ended"
