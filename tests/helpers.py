"""Test helpers: scriptable HTTP servers on 127.0.0.1, and the real pipeline in a repo copy.

End-to-end tests run the pipeline the way users do (`dvc repro` in a git repository) but in a
temporary copy, with the copy's own `src` on PYTHONPATH and this virtualenv's `python` first
on PATH (dvc.yaml's commands say `python stages/<name>.py`):

    repo = copy_repo(tmp_path / "repo")
    result = run_dvc(repo, "repro", "download", env=pipeline_env(repo, MNIST_VAE_SOURCE=...))

`clone_repo` copies a repo that already ran stages (git, DVC cache, outputs and all), so a
session fixture can run the expensive stages once and each test works on its own clone.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


# --- the pipeline in a temporary repository ------------------------------------------------

# Local state a build or a session leaves in a checkout; never part of a test repo.
LOCAL_STATE = ("mlflow.db", "mlartifacts", "dvc_plots", ".dvc/cache", ".dvc/tmp")


def pipeline_outputs(source: Path = REPO_ROOT) -> set[str]:
    """Paths that `dvc repro` writes in `source`: every stage's outs, metrics and plots,
    the top-level plots, `dvc.lock` and the checkpoints directory (from dvc.yaml + params.yaml)."""
    import yaml

    paths = (yaml.safe_load((source / "params.yaml").read_text()) or {}).get("paths", {})
    pipeline = yaml.safe_load((source / "dvc.yaml").read_text()) or {}

    def resolve(entry) -> str:
        name = next(iter(entry)) if isinstance(entry, dict) else entry
        for key, value in paths.items():
            name = name.replace(f"${{paths.{key}}}", str(value))
        return name.strip("/")

    found = {"dvc.lock", *(str(paths[k]) for k in ("checkpoints",) if k in paths)}
    for stage in (pipeline.get("stages") or {}).values():
        for kind in ("outs", "metrics", "plots"):
            found.update(resolve(e) for e in stage.get(kind) or [])
    for entry in pipeline.get("plots") or []:  # a path, or {id: {y: {file: column}}}
        specs = entry.items() if isinstance(entry, dict) else [(entry, None)]
        for name, spec in specs:
            files = (spec or {}).get("y") if isinstance(spec, dict) else None
            found.update(resolve(f) for f in files or [name])
    return found


def _under(rel: str, roots: set[str] | tuple[str, ...]) -> bool:
    return any(rel == root or rel.startswith(root.rstrip("/") + "/") for root in roots)


def copy_repo(dest: Path, source: Path = REPO_ROOT) -> Path:
    """Copy what a commit of `source` would hold into a new git repo, whatever was built there.

    Source files come as they are in the working tree (tracked or new and unignored), so tests
    see uncommitted edits. Pipeline outputs (dvc.lock, metrics, models, plots, dvclive, ...)
    and local state (mlflow.db, checkpoints, DVC's cache) come as HEAD has them, or not at all:
    a developer's `make repro` must not change what the tests see.
    """
    outputs = pipeline_outputs(source)
    committed = set(git_lines(source, "ls-tree", "-r", "--name-only", "-z", "HEAD"))
    listing = git_lines(source, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for rel in listing:
        src, target = source / rel, dest / rel
        if _under(rel, LOCAL_STATE):
            continue
        if _under(rel, outputs):
            if rel in committed:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(subprocess.run(
                    ["git", "show", f"HEAD:{rel}"], cwd=source, check=True,
                    capture_output=True).stdout)
            continue
        if src.is_file():  # skips files deleted in the working tree but still in the index
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    env = {**os.environ, **_GIT_IDENTITY}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "copy for tests"]):
        subprocess.run(["git", *args], cwd=dest, env=env, check=True, capture_output=True)
    return dest


def git_lines(repo: Path, *args: str) -> list[str]:
    """The NUL-separated names a `git ... -z` command prints in `repo` ([] without a HEAD)."""
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True)
    return [] if done.returncode else list(filter(None, done.stdout.decode().split("\0")))


def clone_repo(source: Path, dest: Path) -> Path:
    """Copy a whole test repo (git, DVC cache and outputs included) so a test can change it."""
    shutil.copytree(source, dest, symlinks=True)
    return dest


def pipeline_env(repo: Path, **extra: str) -> dict[str, str]:
    """The environment for running stages of `repo`: its `src` imported, this venv's python.

    MNIST_VAE_SOURCE and MLFLOW_* are not inherited (runs go to the copy's own store); pass
    them in `extra` when a stage should use them.
    """
    env = {k: v for k, v in os.environ.items()
           if k != "MNIST_VAE_SOURCE" and not k.startswith("MLFLOW_")}
    env.update(_GIT_IDENTITY)
    env["PYTHONPATH"] = str(repo / "src")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["DVC_NO_ANALYTICS"] = "1"
    env.update(extra)
    return env


def run(args: Sequence[str | Path], repo: Path, env: Mapping[str, str], *, check: bool = True,
        timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command in `repo`; if `check` and it fails, fail the test showing its output."""
    result = subprocess.run([str(a) for a in args], cwd=repo, env=dict(env), text=True,
                            capture_output=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} exited {result.returncode}\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
        )
    return result


def run_dvc(repo: Path, *args: str, env: Mapping[str, str], check: bool = True,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `dvc <args>` (this venv's DVC) in `repo`."""
    return run([sys.executable, "-m", "dvc", *args], repo, env, check=check, timeout=timeout)


def git(repo: Path, *args: str) -> str:
    """Run `git <args>` in `repo` with a test identity; return its stripped stdout."""
    return run(["git", *args], repo, pipeline_env(repo)).stdout.strip()


def set_params(repo: Path, overlay: Mapping[str, Mapping]) -> None:
    """Merge an overlay ({section: {key: value}}, nested) into `repo`'s params.yaml."""
    import yaml

    from mnist_vae.overlays import merge_overlay

    path = repo / "params.yaml"
    params = merge_overlay(yaml.safe_load(path.read_text()), dict(overlay))
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def write_random_mnist(repo: Path, n_train: int, n_test: int) -> None:
    """Seeded random digits as the repo's data/mnist.npz, so stages after download can run."""
    rng = np.random.default_rng(0)
    (repo / "data").mkdir(exist_ok=True)
    np.savez(repo / "data" / "mnist.npz",
             x_train=rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
             y_train=rng.integers(0, 10, n_train, dtype=np.uint8),
             x_test=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
             y_test=rng.integers(0, 10, n_test, dtype=np.uint8))


def stages_run(dvc_output: str) -> list[str]:
    """The stages a `dvc repro` / `dvc exp run` output says it ran, in order."""
    return [line.split("'")[1] for line in dvc_output.splitlines()
            if line.startswith("Running stage '")]


def run_stage(repo: Path, name: str, env: Mapping[str, str], *, check: bool = True,
              timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python stages/<name>.py` in `repo` directly, without DVC."""
    return run([sys.executable, f"stages/{name}.py"], repo, env, check=check, timeout=timeout)


# --- HTTP on 127.0.0.1 ---------------------------------------------------------------------

class FileServer:
    """An HTTP server on 127.0.0.1 serving `files` under `url`, with scriptable failures.

    `status` maps a file name to an error status to answer instead; `stall` is "headers"
    (accept the request, never answer) or "body" (send headers and half the body, then stop).
    `requests` lists the file names asked for, in order.
    """

    def __init__(self, files: Mapping[str, bytes], *, status: Mapping[str, int] | None = None,
                 stall: str | None = None):
        assert stall in (None, "headers", "body"), stall
        self.files, self.status, self.stall = dict(files), dict(status or {}), stall
        self.requests: list[str] = []
        self.release = threading.Event()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/mnist/"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FileServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        owner: FileServer = self.server.owner
        name = self.path.removeprefix("/mnist/")
        owner.requests.append(name)
        if owner.stall == "headers":
            owner.release.wait()
            return
        body = owner.files.get(name)
        if name in owner.status or body is None:
            self.send_error(owner.status.get(name, 404))
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if owner.stall == "body":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            owner.release.wait()
            return
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:  # noqa: A002 - keep test output quiet
        pass


def unused_port() -> int:
    """A 127.0.0.1 port nobody listens on (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def unanswered_port() -> Iterator[int]:
    """A 127.0.0.1 port where connecting hangs: its accept queue is full, new SYNs are dropped."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):  # fills the queue of one
            yield port
