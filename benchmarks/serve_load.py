"""Serving under load: `mlflow models serve` of the VAE, hit by many threads on 127.0.0.1.

    python benchmarks/serve_load.py [--requests 2000] [--threads 8] [--rows 16]
                                    [--baseline REV] [--out results/x.json]

Serves an untrained VAE with the architecture in params.yaml (the weights do not change the
work per request), sends `--requests` POSTs of `--rows` latent vectors from `--threads`
threads, and reports p50/p99 latency, throughput, errors and the server's peak resident
memory. With `--baseline REV` the same load first hits a model carrying the package as it was
at git revision REV, so the ratio between the two comes from one run on one machine.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from mnist_vae.files import write_json

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SAVE_MODEL = """
import sys, keras
from mnist_vae import registry
from mnist_vae.config import load_params
from mnist_vae.model import build_vae
keras.utils.set_random_seed(0)
params = load_params(sys.argv[2])
registry.save_model(sys.argv[1], build_vae(params.model), params.tracking.serve_max_rows)
"""


def save_model(dest: Path, src: Path) -> None:
    """An MLflow model of an untrained VAE whose code/ is the package under `src`."""
    env = {**os.environ, "PYTHONPATH": str(src), "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-c", SAVE_MODEL, str(dest), str(ROOT / "params.yaml")],
                   env=env, check=True, timeout=600, cwd=ROOT)


def package_at(rev: str, dest: Path) -> Path:
    """`src/` as it was at git revision `rev`, extracted under `dest`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"],
                             capture_output=True, check=True).stdout
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`mlflow models serve` of `model` on 127.0.0.1, in its own process group."""

    def __init__(self, model: Path, log: Path):
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        env["TF_CPP_MIN_LOG_LEVEL"] = "3"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(VENV_BIN / "mlflow"), "models", "serve", "-m", str(model), "--env-manager",
                 "local", "-h", "127.0.0.1", "-p", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{log.read_text()[-2000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/ping")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.5)
        self.close()
        raise RuntimeError(f"server not ready after 300 s:\n{log.read_text()[-2000:]}")

    def rss_bytes(self) -> int:
        try:
            root = psutil.Process(self.proc.pid)
            return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
        except psutil.Error:
            return 0

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)


def load(server: Server, body: bytes, requests: int, threads: int) -> dict:
    """Send `requests` POSTs from `threads` threads (keep-alive); latency and outcome of each."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    remaining = iter(range(requests))
    peak_rss = [server.rss_bytes()]
    done = threading.Event()

    def sample_memory() -> None:
        while not done.wait(0.2):
            peak_rss[0] = max(peak_rss[0], server.rss_bytes())

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        while True:
            with lock:
                if next(remaining, None) is None:
                    break
            start = time.perf_counter()
            try:
                conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
                reply = conn.getresponse()
                payload = reply.read()
                ok = reply.status == 200 and payload.startswith(b'{"predictions"')
                problem = None if ok else f"HTTP {reply.status}"
            except (OSError, http.client.HTTPException) as err:
                problem = type(err).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            seconds = time.perf_counter() - start
            with lock:
                (errors.append(problem) if problem else latencies.append(seconds))
        conn.close()

    monitor = threading.Thread(target=sample_memory, daemon=True)
    monitor.start()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - start
    done.set()
    monitor.join()
    ms = sorted(x * 1000 for x in latencies)
    return {
        "requests": requests, "ok": len(ms), "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "p50_ms": round(statistics.median(ms), 1) if ms else None,
        "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 1) if ms else None,
        "requests_per_s": round(len(ms) / wall, 1),
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(peak_rss[0] / 2**20),
    }


def measure(name: str, src: Path, work: Path, body: bytes, args) -> dict:
    model = work / f"{name}-model"
    save_model(model, src)
    server = Server(model, work / f"{name}-serve.log")
    try:
        load(server, body, min(50, args.requests), args.threads)  # warm-up: traces, caches
        result = load(server, body, args.requests, args.threads)
    finally:
        server.close()
    print(f"{name}: {json.dumps(result)}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--baseline", help="git revision whose package is the baseline")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "src"))
    from mnist_vae.config import load_params
    from mnist_vae.precision import cpu_facts

    width = load_params(ROOT / "params.yaml").model.latent_dim
    z = np.random.default_rng(0).standard_normal((args.rows, width)).astype("float32")
    body = json.dumps({"inputs": z.tolist()}).encode()
    results: dict = {"cpu": cpu_facts()["model"], "cores": os.cpu_count(),
                     "requests": args.requests, "threads": args.threads,
                     "rows_per_request": args.rows, "body_bytes": len(body)}
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        work = Path(tmp)
        if args.baseline:
            old = package_at(args.baseline, work / "baseline")
            results["baseline_rev"] = args.baseline
            results["baseline"] = measure("baseline", old, work, body, args)
        results["current"] = measure("current", ROOT / "src", work, body, args)
    if args.baseline and results["baseline"]["ok"] and results["current"]["ok"]:
        base, now = results["baseline"], results["current"]
        results["ratios"] = {
            "p50": round(base["p50_ms"] / now["p50_ms"], 2),
            "p99": round(base["p99_ms"] / now["p99_ms"], 2),
            "throughput": round(now["requests_per_s"] / base["requests_per_s"], 2),
        }
    print(json.dumps(results, indent=2))
    if args.out:
        write_json(args.out, results)
    return 0 if results["current"]["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
