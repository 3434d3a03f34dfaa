"""Run the train stage on N local worker processes under MultiWorkerMirroredStrategy.

    python scripts/train_multiworker.py --workers 2      (or: make train-multiworker WORKERS=2)

Sets `train.distribute: multi_worker` in params.yaml when it says otherwise (the edit
`dvc exp run -S` would make), gives each worker its TF_CONFIG (127.0.0.1, free ports; worker
0 is the chief), starts them, and waits. Worker 0 prints to this terminal, the others to
`--log-dir`. When one fails, the others get `collective_timeout_s` plus a margin to fail on
their own (TensorFlow's bound), then are stopped; the exit status is the first failure's.
On real hosts run one worker per host with its own TF_CONFIG instead (docs/distributed.md).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from mnist_vae.config import load_params
from mnist_vae.distribute import tf_config

STAGE = ("stages/train.py",)
MARGIN_S = 60  # beyond the collective timeout: time for a worker to report and exit
STOP_S = 10  # between SIGTERM and SIGKILL


def free_ports(n: int) -> list[int]:
    """n distinct free 127.0.0.1 ports (held open together, so they differ)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def start_workers(n: int, repo: Path, log_dir: Path, env: dict[str, str] | None = None,
                  console: bool = True) -> list[subprocess.Popen]:
    """Start n train-stage processes with their TF_CONFIG; worker 0 (chief) may use the console."""
    addresses = [f"127.0.0.1:{port}" for port in free_ports(n)]
    log_dir.mkdir(parents=True, exist_ok=True)
    workers = []
    for index in range(n):
        worker_env = {**(env if env is not None else os.environ),
                      "TF_CONFIG": tf_config(addresses, index)}
        out = None if console and index == 0 else (log_dir / f"worker-{index}.log").open("w")
        workers.append(subprocess.Popen([sys.executable, *STAGE], cwd=repo, env=worker_env,
                                        stdout=out, stderr=subprocess.STDOUT if out else None))
    return workers


def wait_workers(workers: list[subprocess.Popen], grace_s: float) -> int:
    """Wait for all; after the first failure, give the rest grace_s, then stop them."""
    failed_at, status = None, 0
    while any(w.poll() is None for w in workers):
        codes = [w.returncode for w in workers if w.returncode not in (None, 0)]
        if codes and failed_at is None:
            failed_at, status = time.monotonic(), codes[0]
            print(f"train_multiworker: a worker exited with {status}; the others have "
                  f"{grace_s:.0f} s to stop", file=sys.stderr)
        if failed_at is not None and time.monotonic() - failed_at > grace_s:
            stop_workers(workers)
        time.sleep(0.5)
    return status or next((w.returncode for w in workers if w.returncode), 0)


def stop_workers(workers: list[subprocess.Popen]) -> None:
    """SIGTERM the workers still running, then SIGKILL those that ignore it."""
    for w in workers:
        if w.poll() is None:
            w.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_S
    for w in workers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            w.wait(timeout=max(0.0, deadline - time.monotonic()))
        if w.poll() is None:
            w.kill()
            w.wait()


def require_multi_worker(params_file: Path) -> None:
    """Set train.distribute: multi_worker in params.yaml, keeping its comments."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.indent(mapping=2, sequence=4, offset=2)  # params.yaml's own layout
    data = yaml.load(params_file.read_text())
    if data["train"].get("distribute") != "multi_worker":
        print(f"train_multiworker: {params_file}: train.distribute "
              f"{data['train'].get('distribute')} -> multi_worker")
        data["train"]["distribute"] = "multi_worker"
        with params_file.open("w") as f:
            yaml.dump(data, f)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--log-dir", type=Path, default=Path(".multiworker"))
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers: at least 1")
    require_multi_worker(Path("params.yaml"))
    grace = load_params().train.collective_timeout_s + MARGIN_S
    workers = start_workers(args.workers, Path.cwd(), args.log_dir)
    try:
        status = wait_workers(workers, grace)
    finally:
        stop_workers(workers)
    logs = f"; worker logs in {args.log_dir}/" if args.workers > 1 else ""
    print(f"train_multiworker: {args.workers} workers {'done' if status == 0 else 'FAILED'}"
          f"{logs}; `dvc commit train` records the outputs in dvc.lock",
          file=sys.stderr if status else sys.stdout)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
