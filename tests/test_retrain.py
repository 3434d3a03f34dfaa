"""End to end: `make retrain` after a params change, with a local directory as DVC remote.

The story CI lives through: main has been built and pushed; a branch changes one training
param; a fresh clone pulls what the remote has, retrains only what the change touches, pushes,
and reports the changed params and metrics. A second fresh clone can then `dvc pull` it all.
"""

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers import clone_repo, pipeline_env, run, run_dvc

pytestmark = pytest.mark.slow

TINY = {
    "data": {"train_limit": 1000, "test_limit": 300},
    "train": {"epochs": 1},
    "classifier": {"epochs": 1},
    "evaluate": {"iwae_samples": 4, "iwae_images": 50, "prior_samples": 200},
}


def set_params(repo: Path, overrides: dict) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in overrides.items():
        params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def git(repo: Path, *args: str) -> str:
    return run(["git", *args], repo, pipeline_env(repo)).stdout.strip()


def count_rows(db: Path, sql: str) -> int:
    with sqlite3.connect(db) as con:
        return con.execute(sql).fetchone()[0]


def runs_and_versions(db: Path) -> tuple[int, int]:
    if not db.exists():
        return 0, 0
    return (count_rows(db, "SELECT COUNT(*) FROM runs WHERE lifecycle_stage = 'active'"),
            count_rows(db, "SELECT COUNT(*) FROM model_versions WHERE name = 'mnist-vae'"))


@pytest.fixture(scope="module")
def origin(downloaded_repo, tmp_path_factory):
    """'main': the tiny pipeline built, committed and pushed to a directory remote."""
    base = tmp_path_factory.mktemp("retrain")
    repo = clone_repo(downloaded_repo, base / "origin")
    store = base / "store"
    env = pipeline_env(repo, MLFLOW_TRACKING_URI=f"sqlite:///{store}/mlflow.db")
    store.mkdir()
    set_params(repo, TINY)
    run_dvc(repo, "remote", "add", "-d", "storage", str(base / "remote"), env=env)
    run_dvc(repo, "repro", env=env, timeout=900)
    run_dvc(repo, "push", env=env)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "main: tiny pipeline built")
    git(repo, "branch", "-M", "main")
    git(repo, "checkout", "-q", "-b", "feature")
    set_params(repo, {"train": {"learning_rate": 0.002}})
    git(repo, "commit", "-q", "-am", "feature: a faster learning rate")
    git(repo, "checkout", "-q", "main")
    return repo, store


def fresh_clone(origin_repo: Path, dest: Path, branch: str) -> Path:
    subprocess.run(["git", "clone", "-q", "-b", branch, str(origin_repo), str(dest)], check=True)
    return dest


def test_retrain_reruns_only_what_changed_reports_it_and_pushes(origin, tmp_path):
    origin_repo, store = origin
    db = store / "mlflow.db"
    runs_before, versions_before = runs_and_versions(db)
    assert versions_before >= 1, "the base build registered a model version"

    ci = fresh_clone(origin_repo, tmp_path / "ci", "feature")
    git(ci, "branch", "main", "origin/main")  # what actions/checkout with fetch-depth 0 gives
    env = pipeline_env(ci, MLFLOW_TRACKING_URI=f"sqlite:///{db}", BASE="main", PUSH="1",
                       REPORT="reports/retrain.md")
    result = run(["bash", "scripts/retrain.sh"], ci, env, timeout=900)
    report = (ci / "reports" / "retrain.md").read_text()

    ran = [line.split("'")[1] for line in result.stdout.splitlines()
           if line.startswith("Running stage")]
    assert "download" not in ran, "download must come from the remote, not be rerun"
    assert "train_classifier" not in ran, "the classifier does not read train params"
    assert {"train", "evaluate", "render"} <= set(ran)
    assert "train.learning_rate" in report and "0.001" in report and "0.002" in report
    assert "neg_elbo" in report, report
    assert report == result.stdout[-len(report):]  # printed too

    runs_after, versions_after = runs_and_versions(db)
    assert runs_after == runs_before + 1
    assert versions_after == versions_before + 1

    git(ci, "add", "-A")
    git(ci, "commit", "-q", "-m", "retrained")
    git(ci, "push", "-q", "origin", "feature:retrained")
    reader = fresh_clone(origin_repo, tmp_path / "reader", "retrained")
    run_dvc(reader, "pull", env=pipeline_env(reader))
    assert json.loads(run_dvc(reader, "status", "--json", env=pipeline_env(reader)).stdout) == {}
    model = Path("models") / "vae.keras"
    assert (reader / model).read_bytes() == (ci / model).read_bytes()

