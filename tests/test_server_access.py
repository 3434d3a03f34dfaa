"""The login and write checks against a scripted HTTP server on 127.0.0.1 (the real MLflow
basic-auth server is in test_team.py)."""

import base64
import http.server
import json
import threading

import pytest

from mnist_vae.server_access import AccessError, check_access


class _Server:
    """Answers each API path with a scripted (status, body); records the Authorization headers."""

    def __init__(self, replies):
        self.replies, self.auth = replies, []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                owner.auth.append(self.headers.get("Authorization"))
                path = self.path.split("?")[0].removeprefix("/api/")
                status, body = owner.replies.get(path, (404, {}))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


EXPERIMENT = {"experiment": {"experiment_id": "7", "name": "mnist-vae"}}
GET_EXPERIMENT = "2.0/mlflow/experiments/get-by-name"
PERMISSION = "3.0/mlflow/users/permissions/get"


@pytest.fixture
def server(request, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ci")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret")
    server = _Server(request.param)
    yield server
    server.close()


@pytest.mark.parametrize("server", [{GET_EXPERIMENT: (401, {})}], indirect=True)
def test_a_rejected_login_names_the_user_and_the_fix_not_the_password(server):
    with pytest.raises(AccessError) as err:
        check_access(server.url, "mnist-vae", 3)
    message = str(err.value)
    assert "rejected the login of user 'ci' (HTTP 401" in message
    assert "MLFLOW_TRACKING_PASSWORD" in message and "s3cret" not in message
    assert server.auth[0] == "Basic " + base64.b64encode(b"ci:s3cret").decode()


@pytest.mark.parametrize("server", [{GET_EXPERIMENT: (200, EXPERIMENT),
                                     PERMISSION: (200, {"permission": "READ"}),
                                     "2.0/mlflow/users/get": (200, {"user": {"is_admin": False}})}],
                         indirect=True)
def test_a_read_only_login_cannot_log_runs(server):
    with pytest.raises(AccessError, match="user 'ci' has READ on experiment 'mnist-vae' and "
                                          "cannot log runs"):
        check_access(server.url, "mnist-vae", 3)


@pytest.mark.parametrize("server", [{GET_EXPERIMENT: (200, EXPERIMENT),
                                     PERMISSION: (200, {"permission": "EDIT"})},
                                    {GET_EXPERIMENT: (200, EXPERIMENT),
                                     PERMISSION: (200, {"permission": "READ"}),
                                     "2.0/mlflow/users/get": (200, {"user": {"is_admin": True}})},
                                    {GET_EXPERIMENT: (404, {})},  # not created yet
                                    {GET_EXPERIMENT: (200, EXPERIMENT)}],  # no basic-auth app
                         indirect=True)
def test_logins_that_may_write_pass(server):
    check_access(server.url, "mnist-vae", 3)


def test_local_stores_are_not_probed():
    check_access("sqlite:///tmp/mlflow.db", "mnist-vae", 3)
