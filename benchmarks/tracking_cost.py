"""The cost of tracking: one pipeline run's MLflow logging against the team stack (PostgreSQL +
basic auth + proxied artifacts, over HTTP on 127.0.0.1) and against the embedded SQLite store,
side by side in one process, alternating, so both see the same machine load.

    PYTHONPATH=src:. .venv/bin/python -m benchmarks.tracking_cost [--repeats 5] [--epochs 20]

The workload is what the pipeline logs for one model (tracking.py / registry.py): a run with
its identity tags and ~110 params, one metrics call per epoch (train/val loss, reconstruction,
KL, learning rate), ~60 fit and ~70 test metrics, eight small files (params.yaml, dvc.lock,
eval.json, ...), a model-sized artifact (models/vae.keras's size), twelve PNGs, a registered
version with two aliases. Prints the medians, the server/SQLite ratio and the CPU model; writes
benchmarks/results/<date>-tracking.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

from mnist_vae import teamstack
from mnist_vae.files import write_json
from mnist_vae.precision import cpu_facts

RESULTS = Path(__file__).resolve().parent / "results"
MODEL_BYTES = 2_500_000  # about models/vae.keras of the default config


def unused_port() -> int:
    """A free 127.0.0.1 port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def files(root: Path) -> dict[str, list[Path]]:
    """The small files, the model-sized file and the PNGs a run logs."""
    root.mkdir(parents=True, exist_ok=True)
    small = []
    for i in range(8):
        path = root / f"file{i}.json"
        path.write_text(json.dumps({"k": list(range(200))}))
        small.append(path)
    model = root / "model.keras"
    model.write_bytes(os.urandom(MODEL_BYTES))
    pngs = []
    for i in range(12):
        path = root / "plots" / f"p{i}.png"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(os.urandom(40_000))
        pngs.append(path)
    return {"small": small, "model": [model], "png": pngs}


def one_run(client, experiment_id: str, payload: dict[str, list[Path]], epochs: int,
            model_name: str) -> dict[str, float]:
    """Log one pipeline run's worth; the seconds each part took."""
    times: dict[str, float] = {}
    start = time.perf_counter()
    run = client.create_run(experiment_id, tags={f"tag{i}": "x" * 40 for i in range(12)})
    run_id = run.info.run_id
    from mlflow.entities import Metric, Param

    client.log_batch(run_id, params=[Param(f"section.key{i}", str(i)) for i in range(110)])
    times["open"] = time.perf_counter() - start

    start = time.perf_counter()
    for epoch in range(epochs):
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, 1.0 / (epoch + 1), now, epoch) for k in (
            "loss", "reconstruction", "kl", "val_loss", "val_reconstruction", "val_kl",
            "learning_rate")])
    times["epochs"] = time.perf_counter() - start

    start = time.perf_counter()
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(f"fit/m{i}", 1.0, now, 0) for i in range(60)])
    client.log_batch(run_id, metrics=[Metric(f"test/m{i}", 1.0, now, 0) for i in range(70)])
    for path in payload["small"]:
        client.log_artifact(run_id, str(path))
    client.log_artifact(run_id, str(payload["model"][0]), artifact_path="model/data")
    for path in payload["png"]:
        client.log_artifact(run_id, str(path), artifact_path="plots")
    times["artifacts"] = time.perf_counter() - start

    start = time.perf_counter()
    try:
        client.get_registered_model(model_name)
    except Exception:  # noqa: BLE001 - absent: create it
        client.create_registered_model(model_name)
    version = client.create_model_version(model_name, f"runs:/{run_id}/model", run_id=run_id,
                                          tags={"test/m0": "1.0"})
    client.set_registered_model_alias(model_name, "challenger", version.version)
    client.set_registered_model_alias(model_name, "champion", version.version)
    client.get_model_version_by_alias(model_name, "champion")
    client.set_terminated(run_id, "FINISHED")
    times["register"] = time.perf_counter() - start
    times["total"] = sum(times.values())
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--auth-cache-ttl", type=int, default=60,
                        help="the server's auth_cache_ttl_seconds (0: check every password)")
    args = parser.parse_args()
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory(prefix="tracking-cost-") as tmp:
        tmp = Path(tmp)
        os.chmod(tmp, 0o711)  # PostgreSQL (run as `postgres`) keeps its data below
        payload = files(tmp / "payload")
        stack = teamstack.Stack(tmp / "stack", pg_port=unused_port(), mlflow_port=unused_port(),
                                auth_cache_ttl_s=args.auth_cache_ttl)
        started = time.perf_counter()
        teamstack.start(stack, "bench", "bench-model")
        startup = time.perf_counter() - started
        try:
            os.environ.update(teamstack.client_env(stack, "ci"))
            server = MlflowClient(tracking_uri=stack.url, registry_uri=stack.url)
            server_exp = server.get_experiment_by_name("bench").experiment_id
            sqlite_uri = f"sqlite:///{tmp / 'mlflow.db'}"
            local = MlflowClient(tracking_uri=sqlite_uri, registry_uri=sqlite_uri)
            local_exp = local.create_experiment(
                "bench", artifact_location=(tmp / "mlartifacts").as_uri())
            one_run(local, local_exp, payload, 1, "warmup")  # imports, migrations, caches
            one_run(server, server_exp, payload, 1, "bench-model")
            samples: dict[str, list[dict[str, float]]] = {"sqlite": [], "server": []}
            for _ in range(args.repeats):  # alternate, so both see the same load
                samples["sqlite"].append(one_run(local, local_exp, payload, args.epochs,
                                                 "bench-model"))
                samples["server"].append(one_run(server, server_exp, payload, args.epochs,
                                                 "bench-model"))
        finally:
            teamstack.destroy(stack)

    parts = ("open", "epochs", "artifacts", "register", "total")
    medians = {store: {p: statistics.median(s[p] for s in runs) for p in parts}
               for store, runs in samples.items()}
    report = {"date": dt.date.today().isoformat(), "cpu": cpu_facts()["model"],
              "cores": os.cpu_count(), "repeats": args.repeats, "epochs": args.epochs,
              "stack_startup_s": startup, "auth_cache_ttl_s": args.auth_cache_ttl,
              "median_s": medians,
              "ratio_server_over_sqlite": {p: medians["server"][p] / medians["sqlite"][p]
                                           for p in parts}}
    print(f"CPU: {report['cpu']} ({report['cores']} cores); {args.repeats} runs each, "
          f"{args.epochs} epochs; auth cache {args.auth_cache_ttl} s; "
          f"stack started in {startup:.0f} s")
    print(f"{'part':<10} {'SQLite s':>9} {'server s':>9} {'ratio':>6}")
    for p in parts:
        print(f"{p:<10} {medians['sqlite'][p]:>9.3f} {medians['server'][p]:>9.3f} "
              f"{report['ratio_server_over_sqlite'][p]:>6.2f}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{report['date']}-tracking-authcache{args.auth_cache_ttl}.json"
    write_json(out, report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
