"""End to end: the retraining loop with a local directory as DVC remote.

The story CI lives through: main was built (the CI overlay is its params.yaml), its dvc.lock
and metrics committed and its outputs pushed; a branch changes one training param; a fresh
clone runs `make retrain COMMIT=1` (scripts/retrain.sh): it pulls what the remote has,
retrains only what the change touches, pushes, reports against main's committed numbers and
commits the new lock and metrics. Merged, main is whole again: a fresh clone pulls
everything and `dvc repro` has nothing to do.
"""

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers import clone_repo, git, pipeline_env, run, run_dvc, set_params, stages_run
from scripts.committed_outputs import committed_outputs

pytestmark = pytest.mark.slow


def runs_and_versions(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db) as con:
        runs = con.execute("SELECT COUNT(*) FROM runs WHERE lifecycle_stage = 'active'")
        versions = con.execute("SELECT COUNT(*) FROM model_versions WHERE name = 'mnist-vae'")
        return runs.fetchone()[0], versions.fetchone()[0]


def files_of(repo: Path, rev: str = "HEAD") -> set[str]:
    return set(git(repo, "diff-tree", "--no-commit-id", "--name-only", "-r", rev).split())


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


def test_a_build_leaves_only_the_lock_and_metrics_to_commit(built_repo):
    """built_repo committed everything `git add -A` saw after `dvc repro`: params.yaml (the CI
    overlay), and of the build only dvc.lock and the cache: false metrics."""
    assert files_of(built_repo) == {"params.yaml", *committed_outputs(built_repo)}
    assert git(built_repo, "status", "--porcelain", "--untracked-files=all") == ""


def metric_row(report: str, key: str) -> list[str]:
    line = next(line for line in report.splitlines() if f": {key} |" in line)
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_retrain_pulls_reruns_what_changed_reports_against_main_and_commits_the_lock(
        origin, tmp_path):
    db = origin / "mlflow.db"  # the team's store: every run below lands in it
    runs_before, versions_before = runs_and_versions(db)
    assert versions_before >= 1, "building main registered a model version"
    main_metrics = json.loads((origin / "metrics/eval.json").read_text())

    ci = fresh_clone(origin, tmp_path / "ci", "feature")
    git(ci, "branch", "main", "origin/main")  # what a checkout with fetch-depth 0 gives
    feature_head = git(ci, "rev-parse", "HEAD")
    env = pipeline_env(ci, MLFLOW_TRACKING_URI=f"sqlite:///{db}", BASE="main", PUSH="1",
                       COMMIT="1", REPORT="reports/retrain.md")
    result = run(["bash", "scripts/retrain.sh"], ci, env, timeout=1500)
    report = (ci / "reports" / "retrain.md").read_text()

    ran = stages_run(result.stdout)
    assert "download" not in ran, "download must come from the remote, not be rerun"
    assert "train_classifier" not in ran, "the classifier reads no train param"
    assert {"train", "evaluate", "render", "register"} <= set(ran), ran
    assert f"registered: mnist-vae version {versions_before + 1} (challenger" in report, report
    assert result.stdout.rstrip().endswith(report.rstrip())  # printed as well

    # the report: the param and real deltas against main's committed numbers, with a verdict
    assert "| train.learning_rate | 0.0020 | 0.0015 |" in report, report
    new_metrics = json.loads((ci / "metrics/eval.json").read_text())
    row = metric_row(report, "test.bernoulli.neg_elbo")
    old, new = (m["test"]["bernoulli"]["neg_elbo"] for m in (main_metrics, new_metrics))
    assert old != new, "a different learning rate trains a different model"
    assert [float(row[1]), float(row[2]), float(row[3])] == pytest.approx(
        [old, new, new - old], abs=1e-4)
    assert row[4] == ("improved (lower is better)" if new < old else "worse (lower is better)")
    samples = ci / "reports" / "samples"
    assert (samples / "base.png").read_bytes() == (origin / "plots/samples.png").read_bytes()
    assert (samples / "new.png").read_bytes() == (ci / "plots/samples.png").read_bytes()
    assert (samples / "compare.png").is_file()

    # the commit: the new lock and metrics, nothing else, and nothing left behind
    assert git(ci, "rev-parse", "HEAD~1") == feature_head
    committed = files_of(ci)
    assert {"dvc.lock", "metrics/eval.json"} <= committed <= set(committed_outputs(ci)), committed
    message = git(ci, "log", "-1", "--format=%B")
    assert message.startswith("retrain: dvc.lock and metrics") and "train.learning_rate" in message
    lock = yaml.safe_load(git(ci, "show", "HEAD:dvc.lock"))
    assert lock["stages"]["train"]["params"]["params.yaml"]["train"]["learning_rate"] == 0.0015
    assert git(ci, "status", "--porcelain", "--untracked-files=all") == ""

    runs_after, versions_after = runs_and_versions(db)
    assert runs_after == runs_before + 1
    assert versions_after == versions_before + 1

    # merged: a fresh clone of main pulls everything and has nothing to rebuild
    git(ci, "push", "-q", "origin", "HEAD:feature")
    git(origin, "merge", "-q", "--no-ff", "--no-edit", "feature")
    reader = fresh_clone(origin, tmp_path / "reader", "main")
    reader_env = pipeline_env(reader)
    shown = json.loads(run_dvc(reader, "metrics", "show", "--json", env=reader_env).stdout)
    assert shown[""]["data"]["metrics/eval.json"]["data"] == new_metrics  # before any pull
    run_dvc(reader, "pull", env=reader_env)
    assert json.loads(run_dvc(reader, "status", "--json", env=reader_env).stdout) == {}
    assert stages_run(run_dvc(reader, "repro", env=reader_env).stdout) == []
    model = Path("models") / "vae.keras"
    assert (reader / model).read_bytes() == (ci / model).read_bytes()
