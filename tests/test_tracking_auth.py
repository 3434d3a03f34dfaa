"""The team server's read-only rule: which requests count as reads, and where the users come
from."""

import pytest

from mnist_vae import tracking_auth


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/2.0/mlflow/experiments/get-by-name"),
    ("HEAD", "/health"),
    ("POST", "/api/2.0/mlflow/runs/search"),
    ("POST", "/ajax-api/2.0/mlflow/logged-models/search"),
    ("POST", "/ajax-api/3.0/mlflow/traces/batch-get"),
    ("POST", "/graphql"),
    ("POST", "/ajax-api/2.0/mlflow/gateway-proxy/graphql/"),
])
def test_reads(method, path):
    assert tracking_auth.is_read(method, path)


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/api/2.0/mlflow/experiments/create"),
    ("POST", "/ajax-api/2.0/mlflow/registered-models/create"),
    ("POST", "/api/2.0/mlflow/model-versions/create"),
    ("POST", "/api/2.0/mlflow/runs/log-batch"),
    ("PATCH", "/api/2.0/mlflow/registered-models/update"),
    ("DELETE", "/api/2.0/mlflow/registered-models/alias"),
    ("PUT", "/api/2.0/mlflow-artifacts/artifacts/1/x.png"),
    ("POST", "/api/2.0/mlflow/budgets/searchable-create"),
])
def test_writes(method, path):
    assert not tracking_auth.is_read(method, path)


def test_read_only_users_come_from_the_auth_ini(tmp_path, monkeypatch):
    ini = tmp_path / "auth.ini"
    ini.write_text("[mlflow]\ndefault_permission = READ\nread_only_users = reader, viewer\n")
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(ini))
    tracking_auth.read_only_users.cache_clear()
    try:
        assert tracking_auth.read_only_users() == {"reader", "viewer"}
    finally:
        tracking_auth.read_only_users.cache_clear()
