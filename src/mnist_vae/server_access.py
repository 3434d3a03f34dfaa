"""Whether a tracking server accepts our login and lets it write, asked before a stage works.

MLflow only finds out at the first write (the run, or the model version after evaluating),
with a 401 or 403 traceback. Two cheap authenticated reads answer it up front:
`experiments/get-by-name` (is the login valid? may it read?) and, on servers with MLflow's
basic-auth app, the user's own permission on the experiment (may it write?). Plain HTTP
through urllib, bounded by the stage's `tracking.server_timeout_s`; MLflow is not imported.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request

WRITE_LEVELS = ("EDIT", "MANAGE")  # basic-auth permissions that may create runs
FIX = ("set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to a user of that server "
       "who may write (the team stack prints them: `python scripts/team_stack.py env`)")


class AccessError(RuntimeError):
    """The server refuses this login or this user may not write; names the user and the fix."""


def check_access(uri: str, experiment: str, timeout_s: float) -> None:
    """Raise AccessError unless the server at `uri` lets the configured user log runs."""
    if urllib.parse.urlsplit(uri).scheme not in ("http", "https"):
        return
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    who = f"user {user!r}" if user else "no user (MLFLOW_TRACKING_USERNAME is unset)"
    status, body = _get(uri, "2.0/mlflow/experiments/get-by-name",
                        {"experiment_name": experiment}, timeout_s)
    if status == 401:
        raise AccessError(f"MLflow server {_host(uri)} rejected the login of {who} (HTTP 401: "
                          f"wrong or missing credentials); {FIX}")
    if status == 403:
        raise AccessError(f"MLflow server {_host(uri)}: {who} may not read experiment "
                          f"{experiment!r} (HTTP 403); {FIX}")
    if status != 200 or not user:
        return  # no such experiment yet (the stage creates it), or a server without logins
    experiment_id = body.get("experiment", {}).get("experiment_id")
    level = _permission(uri, user, experiment_id, timeout_s)
    if level is not None and level not in WRITE_LEVELS and not _is_admin(uri, user, timeout_s):
        raise AccessError(f"MLflow server {_host(uri)}: {who} has {level} on experiment "
                          f"{experiment!r} and cannot log runs (needs EDIT); {FIX}, or ask "
                          "an admin to grant EDIT")


def _permission(uri: str, user: str, experiment_id: str | None,
                timeout_s: float) -> str | None:
    """The user's basic-auth permission on the experiment, or None (no basic-auth app)."""
    if not experiment_id:
        return None
    status, body = _get(uri, "3.0/mlflow/users/permissions/get",
                        {"username": user, "resource_type": "experiment",
                         "resource_id": experiment_id}, timeout_s)
    return body.get("permission") if status == 200 else None


def _is_admin(uri: str, user: str, timeout_s: float) -> bool:
    status, body = _get(uri, "2.0/mlflow/users/get", {"username": user}, timeout_s)
    return status == 200 and bool(body.get("user", {}).get("is_admin"))


def _get(uri: str, endpoint: str, query: dict[str, str],
         timeout_s: float) -> tuple[int, dict]:
    """GET `<uri>/api/<endpoint>` with the client's credentials: (status, JSON body or {})."""
    url = f"{uri.rstrip('/')}/api/{endpoint}?{urllib.parse.urlencode(query)}"
    request = urllib.request.Request(url)
    user, password = (os.environ.get("MLFLOW_TRACKING_USERNAME"),
                      os.environ.get("MLFLOW_TRACKING_PASSWORD"))
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if user and password is not None:
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {basic}")
    elif token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            return reply.status, _json(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, _json(err.read())
    except (urllib.error.URLError, OSError):
        return 0, {}  # unreachable now: MLflow's own bounded calls report it next


def _json(raw: bytes) -> dict:
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _host(uri: str) -> str:
    """`uri` without any user:password part."""
    parts = urllib.parse.urlsplit(uri)
    netloc = parts.hostname or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc + (
        f":{parts.port}" if parts.port else "")))
