"""Where MLflow runs go: the store's URI, a fast reachability probe, and the experiment.

`MLFLOW_TRACKING_URI` when set (a team server), else the embedded store
`sqlite:///<root>/mlflow.db` with artifacts in `<root>/mlartifacts`, where <root> is the
repository (`DVC_ROOT`, which `dvc exp run` points at the real repository even when the stage
runs in a temporary copy, else the git top level, else the working directory). A copy of
the repository moves its copied store's artifact locations to its own `mlartifacts/`. Every
MLflow HTTP call is bounded by `tracking.server_timeout_s`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import sqlite3
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from mnist_vae.config import TrackingConfig
from mnist_vae.provenance import git
from mnist_vae.server_access import check_access

if TYPE_CHECKING:
    import mlflow

STORE_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"


def lazy_import(name: str):
    """`name`, executed on first attribute access (the stdlib's LazyLoader recipe)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# Importing MLflow takes seconds; loading it on first use lets the server probe run first.
mlflow = lazy_import("mlflow")  # noqa: F811


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message names the URI and the fix."""


def repo_root() -> Path:
    """The repository whose store we use: DVC_ROOT, else the git top level, else cwd."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    top = git("rev-parse", "--show-toplevel")
    return Path(top).resolve() if top else Path.cwd().resolve()


def tracking_uri(root: Path) -> str:
    """MLFLOW_TRACKING_URI when set, else the embedded SQLite store in `root`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(root).resolve() / STORE_FILE}"


def artifact_location(uri: str) -> str | None:
    """For a SQLite store, `mlartifacts/` next to the database; a server decides its own."""
    prefix = "sqlite:///"  # then an absolute path (sqlite:////abs/db) or one relative to cwd
    database = uri[len(prefix):] if uri.startswith(prefix) else ""
    if not database or database == ":memory:":
        return None
    return (Path(database).resolve().parent / ARTIFACTS_DIR).as_uri()


def use_store(uri: str) -> None:
    """Make `uri` MLflow's store in this process without exporting it to the environment.

    mlflow.set_tracking_uri also sets MLFLOW_TRACKING_URI, which would make the embedded
    store look user-configured to the next caller of `tracking_uri`.
    """
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def redact(uri: str) -> str:
    """`uri` without any user:password part, safe for messages and files."""
    parts = urllib.parse.urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def check_reachable(uri: str, timeout_s: float) -> None:
    """Raise TrackingError within ~timeout_s when an http(s) tracking server does not answer.

    Any HTTP answer (even 401 or 404) counts as reachable: only a refused or timed-out
    connection, or an unresolvable host, fails. DNS lookups ignore socket timeouts, so the
    probe runs in a thread with a deadline.
    """
    if urllib.parse.urlsplit(uri).scheme not in ("http", "https"):
        return
    outcome: dict[str, str] = {}

    def probe() -> None:
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
                pass
        except urllib.error.HTTPError:
            pass  # the server answered
        except (urllib.error.URLError, OSError) as err:
            outcome["error"] = str(getattr(err, "reason", err))

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s + 0.5)
    if thread.is_alive():
        outcome["error"] = f"no answer within {timeout_s:g} s"
    if "error" in outcome:
        raise TrackingError(
            f"MLflow tracking server {redact(uri)} is unreachable ({outcome['error']}). "
            "Start it, fix MLFLOW_TRACKING_URI, or unset MLFLOW_TRACKING_URI to use the "
            "local store."
        )


def bound_requests(timeout_s: float) -> None:
    """Bound every later MLflow HTTP call to ~timeout_s: one attempt, one quick retry.

    MLflow reads these variables on each request; its defaults (120 s, 7 retries with
    exponential backoff) let a sick server hang a stage for minutes.
    """
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, math.ceil(timeout_s)))
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "1"
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"] = "0"


# Where MLflow's SQLite schema records absolute artifact locations.
ARTIFACT_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                    ("model_versions", "storage_location"), ("model_versions", "source"),
                    ("logged_models", "artifact_location"))


def relocate_copied_store(root: Path) -> None:
    """Point a copied repository's own store at its own `mlartifacts/`, not the original's.

    The SQLite store records absolute artifact locations, so without this a copy of the
    repository (with its mlflow.db) would write its artifacts into the source repository.
    """
    database = Path(root).resolve() / STORE_FILE
    if not database.is_file():
        return
    mine = (database.parent / ARTIFACTS_DIR).as_uri()
    with contextlib.closing(sqlite3.connect(database, timeout=30)) as db, db:
        try:
            found = {row[0] for row in db.execute(
                "SELECT artifact_location FROM experiments WHERE artifact_location LIKE ?",
                (f"%/{ARTIFACTS_DIR}",))}
        except sqlite3.OperationalError:  # no schema yet: MLflow creates it
            return
        for theirs in sorted(found - {mine}):
            if not theirs.startswith("file://"):
                continue
            for table, column in ARTIFACT_COLUMNS:
                with contextlib.suppress(sqlite3.OperationalError):  # table of another version
                    db.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                               f"WHERE {column} = ? OR substr({column}, 1, ?) = ?",
                               (mine, len(theirs) + 1, theirs, len(theirs) + 1, theirs + "/"))
            print(f"tracking: {database} was copied from another repository; its artifacts now "
                  f"go to {mine} instead of {theirs} (copy that directory here for the older "
                  "runs' files)", file=sys.stderr)


def connect(cfg: TrackingConfig, root: Path) -> str:
    """Point MLflow at the store (failing fast, every call bounded) and return the experiment."""
    uri = tracking_uri(root)
    bound_requests(cfg.server_timeout_s)
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        relocate_copied_store(root)
    check_reachable(uri, cfg.server_timeout_s)
    check_access(uri, cfg.experiment, cfg.server_timeout_s)  # 401/403 before any work
    use_store(uri)
    try:
        return ensure_experiment(cfg.experiment, uri)
    except TrackingError:
        raise
    except Exception as err:  # e.g. a server that answers /health but stalls the rest
        raise TrackingError(
            f"MLflow store {redact(uri)} failed the experiment lookup (bounded by "
            f"tracking.server_timeout_s={cfg.server_timeout_s:g}): "
            f"{(str(err).splitlines() or [''])[0][:200]}. "
            "Check the server (its logs, its database), then rerun."
        ) from None


def ensure_experiment(name: str, uri: str) -> str:
    """Get or create the experiment; a SQLite store keeps its artifacts next to the database."""
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = artifact_location(uri)
        try:
            return client.create_experiment(name, artifact_location=location)
        except mlflow.MlflowException:  # created concurrently by another stage or process
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise TrackingError(
            f"MLflow experiment {name!r} is deleted in {redact(mlflow.get_tracking_uri())}; "
            f"restore it (`mlflow experiments restore`) or set tracking.experiment"
        )
    return experiment.experiment_id
