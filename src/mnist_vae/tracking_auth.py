"""The team MLflow server's login check: basic auth, then read-only users may only read.

MLflow's basic auth lets any valid login create a new experiment or registered model (and own
it). The server loads this module instead (`authorization_function =
mnist_vae.tracking_auth:authenticate` in its auth ini) so that the users listed under
`read_only_users` in that same ini get 403 on every request that is not a read: creates
included, on the REST and the UI's ajax paths alike. Everyone else is checked by MLflow's own
permissions, unchanged.
"""

from __future__ import annotations

import configparser
import functools
import os

from flask import Response, request
from mlflow.server.auth import authenticate_request_basic_auth

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# POST endpoints that only read, by their last path segment: searches and gets (runs/search,
# logged-models/search, traces/batch-get, ...) and GraphQL, whose only mutations are searches
# in MLflow 3.17
READ_POST_SEGMENTS = frozenset({"search", "batch-get", "graphql"})
READ_POST_PREFIXES = ("search-", "get-")


def authenticate():
    """MLflow's basic-auth check; a 403 Response for a read-only user's write."""
    authorization = authenticate_request_basic_auth()
    if isinstance(authorization, Response):
        return authorization
    if authorization.username in read_only_users() and not is_read(request.method,
                                                                     request.path):
        return Response(f"user '{authorization.username}' may only read on this server",
                        status=403, mimetype="text/plain")
    return authorization


def is_read(method: str, path: str) -> bool:
    """Whether a request only reads: a read method, or a POST to a search, get or GraphQL."""
    if method in READ_METHODS:
        return True
    last = path.rstrip("/").rsplit("/", 1)[-1]
    return method == "POST" and (last in READ_POST_SEGMENTS or last.startswith(READ_POST_PREFIXES))


@functools.lru_cache(maxsize=1)
def read_only_users() -> frozenset[str]:
    """`read_only_users` (comma-separated) from the server's auth ini (MLFLOW_AUTH_CONFIG_PATH)."""
    config = configparser.ConfigParser()
    config.read(os.environ.get("MLFLOW_AUTH_CONFIG_PATH", ""))
    listed = config.get("mlflow", "read_only_users", fallback="")
    return frozenset(name.strip() for name in listed.split(",") if name.strip())
