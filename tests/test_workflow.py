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


def test_triggers_cover_what_the_model_depends_on(workflow):
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as boolean true
    for event in ("pull_request", "push"):
        paths = triggers[event]["paths"]
        for needed in ("params.yaml", "dvc.yaml", "dvc.lock", "src/**", "stages/**",
                       "requirements.lock"):
            assert needed in paths, f"{event} does not trigger on {needed}"
    assert triggers["push"]["branches"] == ["main"]
    assert "workflow_dispatch" in triggers


def test_job_uses_full_history_node24_actions_and_the_make_targets(workflow):
    steps = workflow["jobs"]["retrain"]["steps"]
    uses = {s["uses"].split("@")[0]: s["uses"].split("@")[1] for s in steps if "uses" in s}
    assert uses["actions/checkout"] == "v5"
    assert uses["actions/setup-python"] == "v6"
    assert uses["actions/upload-artifact"] == "v6"
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0
    runs = " ".join(s.get("run", "") for s in steps)
    assert "make setup" in runs and "make retrain" in runs
    assert "gh pr comment" in runs and "--edit-last --create-if-none" in runs
    assert workflow["permissions"]["pull-requests"] == "write"
