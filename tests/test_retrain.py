"""End to end: `make retrain` after a params change, with a local directory as DVC remote.

The story CI lives through: main was built and pushed; a branch changes one training param;
a fresh clone pulls what the remote has, retrains only what the change touches, pushes, and
reports the changed params and metrics. A second fresh clone can then `dvc pull` all of it.
"""

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from helpers import clone_repo, git, pipeline_env, run, run_dvc, set_params, stages_run

pytestmark = pytest.mark.slow


def runs_and_versions(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db) as con:
        runs = con.execute("SELECT COUNT(*) FROM runs WHERE lifecycle_stage = 'active'")
        versions = con.execute("SELECT COUNT(*) FROM model_versions WHERE name = 'mnist-vae'")
        return runs.fetchone()[0], versions.fetchone()[0]


@pytest.fixture(scope="module")
def origin(built_repo, tmp_path_factory) -> Path:
    """'main' built and pushed to a directory remote, plus a branch `feature` changing one param."""
    base = tmp_path_factory.mktemp("retrain")
    repo = clone_repo(built_repo, base / "origin")
    env = pipeline_env(repo)
    run_dvc(repo, "remote", "add", "-d", "storage", str(base / "remote"), env=env)
    run_dvc(repo, "push", env=env)
    git(repo, "commit", "-q", "-am", "main: a DVC remote")
    git(repo, "branch", "-M", "main")
    git(repo, "checkout", "-q", "-b", "feature")
    set_params(repo, {"train": {"learning_rate": 0.0015}})
    git(repo, "commit", "-q", "-am", "feature: a faster learning rate")
    git(repo, "checkout", "-q", "main")
    return repo


def fresh_clone(origin_repo: Path, dest: Path, branch: str) -> Path:
    subprocess.run(["git", "clone", "-q", "-b", branch, str(origin_repo), str(dest)], check=True)
    return dest


def test_retrain_reruns_only_what_changed_reports_it_and_pushes(origin, tmp_path):
    db = origin / "mlflow.db"  # the team's store: every run below lands in it
    runs_before, versions_before = runs_and_versions(db)
    assert versions_before >= 1, "building main registered a model version"

    ci = fresh_clone(origin, tmp_path / "ci", "feature")
    git(ci, "branch", "main", "origin/main")  # what a checkout with fetch-depth 0 gives
    env = pipeline_env(ci, MLFLOW_TRACKING_URI=f"sqlite:///{db}", BASE="main", PUSH="1",
                       REPORT="reports/retrain.md")
    result = run(["bash", "scripts/retrain.sh"], ci, env, timeout=1200)
    report = (ci / "reports" / "retrain.md").read_text()

    ran = stages_run(result.stdout)
    assert "download" not in ran, "download must come from the remote, not be rerun"
    assert "train_classifier" not in ran, "the classifier reads no train param"
    assert {"train", "evaluate", "render", "register"} <= set(ran), ran
    assert "train.learning_rate" in report and "0.0015" in report, report
    assert "neg_elbo" in report, report
    assert f"registered: mnist-vae version {versions_before + 1} (challenger" in report, report
    assert result.stdout.rstrip().endswith(report.rstrip())  # printed as well

    runs_after, versions_after = runs_and_versions(db)
    assert runs_after == runs_before + 1
    assert versions_after == versions_before + 1

    git(ci, "add", "-A")
    git(ci, "commit", "-q", "-m", "retrained")
    git(ci, "push", "-q", "origin", "HEAD:retrained")
    reader = fresh_clone(origin, tmp_path / "reader", "retrained")
    run_dvc(reader, "pull", env=pipeline_env(reader))
    assert json.loads(run_dvc(reader, "status", "--json", env=pipeline_env(reader)).stdout) == {}
    model = Path("models") / "vae.keras"
    assert (reader / model).read_bytes() == (ci / model).read_bytes()
