"""The retrain workflow is valid GitHub Actions and keeps the promises the README makes."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

WORKFLOW = Path(".github/workflows/retrain.yml")


def _check_jsonschema(path: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("check-jsonschema")
    if not exe.exists():
        pytest.fail("check-jsonschema is a dev dependency: run `make setup`")
    return subprocess.run(
        [str(exe), "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True, text=True, timeout=120,
    )


@pytest.fixture
def workflow(repo_root) -> dict:
    return yaml.safe_load((repo_root / WORKFLOW).read_text())


def test_workflow_validates_against_the_github_schema(repo_root):
    result = _check_jsonschema(repo_root / WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_a_broken_workflow(repo_root, tmp_path):
    broken = tmp_path / "retrain.yml"
    shutil.copy(repo_root / WORKFLOW, broken)
    broken.write_text(broken.read_text().replace("runs-on:", "run-on:"))
    assert _check_jsonschema(broken).returncode != 0


def test_triggers_cover_what_the_model_depends_on_and_not_what_the_bot_commits(workflow):
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as boolean true
    for event in ("pull_request", "push"):
        paths = triggers[event]["paths"]
        for needed in ("params.yaml", "dvc.yaml", "src/**", "stages/**", "requirements.lock",
                       "scripts/retrain.sh", "scripts/retrain_report.py"):
            assert needed in paths, f"{event} does not trigger on {needed}"
        # the commit job pushes dvc.lock and metrics: were they triggers, it could loop
        for written in ("dvc.lock", "metrics/**", "dvclive/**"):
            assert written not in paths, f"{event} triggers on {written}, which the bot commits"
    assert triggers["push"]["branches"] == ["main"]
    assert "workflow_dispatch" in triggers


def _uses(job: dict) -> dict[str, str]:
    return {s["uses"].split("@")[0]: s["uses"].split("@")[1] for s in job["steps"] if "uses" in s}


def test_retrain_job_uses_full_history_node24_actions_and_the_make_targets(workflow):
    job = workflow["jobs"]["retrain"]
    uses = _uses(job)
    assert uses["actions/checkout"] == "v5"
    assert uses["actions/setup-python"] == "v6"
    assert uses["actions/upload-artifact"] == "v6"
    checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0
    runs = " ".join(s.get("run", "") for s in job["steps"])
    assert "make setup" in runs and "make retrain" in runs and "COMMIT=$commit" in runs
    assert "git format-patch" in runs and "GITHUB_STEP_SUMMARY" in runs


def test_each_job_holds_only_the_token_rights_it_needs(workflow):
    assert workflow["permissions"] == {"contents": "read"}
    jobs = workflow["jobs"]
    assert jobs["retrain"]["permissions"] == {"contents": "read"}  # runs the branch's code
    assert jobs["commit"]["permissions"] == {"contents": "write"}
    assert jobs["comment"]["permissions"] == {"pull-requests": "write"}
    for name in ("commit", "comment"):  # they run no project code: no setup, no make
        runs = " ".join(s.get("run", "") for s in jobs[name]["steps"])
        assert "make " not in runs and "pip " not in runs, name


def test_commit_and_comment_skip_fork_pull_requests_and_the_bot_itself(workflow):
    jobs = workflow["jobs"]
    same_repo = "github.event.pull_request.head.repo.full_name == github.repository"
    assert same_repo in jobs["commit"]["if"] and same_repo in jobs["comment"]["if"]
    assert "needs.retrain.outputs.committed == 'true'" in jobs["commit"]["if"]
    assert jobs["retrain"]["if"] == "github.actor != 'github-actions[bot]'"
    commit_runs = " ".join(s.get("run", "") for s in jobs["commit"]["steps"])
    assert "git am" in commit_runs and "git push origin" in commit_runs
    assert _uses(jobs["commit"])["actions/download-artifact"] == "v7"
    comment_runs = " ".join(s.get("run", "") for s in jobs["comment"]["steps"])
    assert "gh pr comment" in comment_runs and "--edit-last --create-if-none" in comment_runs
