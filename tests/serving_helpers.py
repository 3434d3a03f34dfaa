"""A real `mlflow models serve` of the tiny VAE on 127.0.0.1, for the serving tests."""

from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import psutil

from helpers import unused_port
from mlflow_helpers import VENV_BIN, subprocess_env
from servers import stop


class ModelServer:
    """`mlflow models serve -m <model dir>` in its own process group, stopped by `close`."""

    def __init__(self, model_dir: Path, log: Path, timeout_s: float = 300):
        self.port = unused_port()
        self.model_dir = Path(model_dir)
        self.log = log
        env = subprocess_env()
        env.pop("PYTHONPATH")  # the model carries its own code
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(VENV_BIN / "mlflow"), "models", "serve", "-m", str(model_dir),
                 "--env-manager", "local", "-h", "127.0.0.1", "-p", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent,
                start_new_session=True)
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n"
                                   f"{self.log.read_text()[-3000:]}")
            try:
                if self.request("GET", "/ping", timeout=2)[0] == 200:
                    return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"server not ready after {timeout_s} s:\n{self.log.read_text()[-3000:]}")

    def request(self, method: str, path: str, body: bytes | Iterable[bytes] | None = None,
                headers: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            # the server may answer (413) and close before the body is all sent
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                conn.request(method, path, body=body, headers=headers or {},
                             encode_chunked=body is not None and not isinstance(body, bytes))
            reply = conn.getresponse()
            return reply.status, reply.read()
        finally:
            conn.close()

    def post_json(self, payload: bytes | dict) -> tuple[int, dict]:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        status, raw = self.request("POST", "/invocations", body,
                                   {"Content-Type": "application/json"})
        return status, json.loads(raw or b"{}")

    def rss_bytes(self) -> int:
        """Resident memory of the server and its workers."""
        root = psutil.Process(self.proc.pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])

    def close(self) -> None:
        stop(self.proc)
