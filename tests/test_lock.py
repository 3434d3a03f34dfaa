"""What git carries of the pipeline: the committed dvc.lock matches params.yaml and every
stage's dependencies; cache: false metrics are committed and read back on a fresh clone;
every other output is ignored by git (DVC caches it)."""

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers import copy_repo, git, pipeline_env, pipeline_outputs, run, run_dvc, set_params
from scripts.committed_outputs import committed_outputs

REFRESH = ("refresh it on main: `make retrain COMMIT=1` (runs dvc repro, then commits dvc.lock "
           "and the metrics; see docs/ci.md)")
# Written by a build or a session besides the stages' outputs; never committed.
LOCAL_STATE = ("mlflow.db", "mlartifacts/x", ".checkpoints/x", "reports/retrain.md",
               "dvc_plots/index.html")


def _committed(repo: Path, rel: str) -> bool:
    return subprocess.run(["git", "cat-file", "-e", f"HEAD:{rel}"], cwd=repo,
                          capture_output=True).returncode == 0


def _ignored(repo: Path, rel: str) -> bool:
    done = subprocess.run(["git", "check-ignore", "-q", "--no-index", rel], cwd=repo)
    return done.returncode == 0


# What `dvc status` reports on a fresh clone of an up-to-date branch, and so not a stale lock:
# outputs absent ("not in cache", or "deleted" for a dependency another stage writes), and a
# stage that is always rerun by design.
ABSENT_OUTPUT = "not in cache"
ABSENT = "deleted"
BY_DESIGN = "always changed"


def lock_mismatches(status: dict, outputs: set[str]) -> list[str]:
    """What `dvc status --json` reports beyond absent `outputs` (merely not pulled or built)."""
    problems = []
    for stage, changes in status.items():
        for change in changes:
            if isinstance(change, str):  # "changed command", "changed checksum", ...
                if change != BY_DESIGN:
                    problems.append(f"{stage}: {change}")
                continue
            for kind, entries in change.items():
                for path, state in entries.items():
                    if state == ABSENT_OUTPUT or (state == ABSENT and path in outputs):
                        continue
                    problems.append(f"{stage}: {kind} {path}: {state}")
    return problems


def test_lock_mismatches_ignores_what_is_not_pulled_and_names_the_rest():
    status = {
        "train": [{"changed deps": {"data/mnist.npz": "deleted",
                                    "params.yaml": {"train.epochs": "modified"}}},
                  {"changed outs": {"models/vae.keras": "not in cache"}}],
        "evaluate": [{"changed deps": {"src/mnist_vae/evaluation.py": "modified",
                                       "src/mnist_vae/gone.py": "deleted"}},
                     "changed command"],
        "download": [{"changed outs": {"data/mnist.npz": "deleted"}}],
        "register": ["always changed"],
    }
    assert lock_mismatches(status, {"data/mnist.npz", "models/vae.keras"}) == [
        "train: changed deps params.yaml: {'train.epochs': 'modified'}",
        "evaluate: changed deps src/mnist_vae/evaluation.py: modified",
        "evaluate: changed deps src/mnist_vae/gone.py: deleted",
        "evaluate: changed command",
    ]


def lock_problems(source: Path, workdir: Path) -> list[str]:
    """How `source`'s committed dvc.lock disagrees with its params and dependencies.

    Checked in a copy holding `source`'s sources (edits included) with HEAD's dvc.lock and
    metrics and nothing pulled: exactly what a fresh clone of that branch would show."""
    repo = copy_repo(workdir, source)
    status = run_dvc(repo, "status", "--json", env=pipeline_env(repo)).stdout
    return lock_mismatches(json.loads(status or "{}"), pipeline_outputs(repo))


def test_committed_dvc_lock_matches_params_and_dependencies(repo_root, tmp_path):
    if not _committed(repo_root, "dvc.lock"):
        pytest.skip(f"no dvc.lock committed yet: {REFRESH}")
    problems = lock_problems(repo_root, tmp_path / "repo")
    assert not problems, (
        "dvc.lock no longer matches params.yaml or the stages' dependencies:\n  "
        + "\n  ".join(problems) + f"\n{REFRESH}")


@pytest.mark.slow
def test_the_lock_check_passes_on_a_built_main_and_names_a_changed_param_or_module(
        built_repo, tmp_path):
    assert lock_problems(built_repo, tmp_path / "same") == []
    edited = copy_repo(tmp_path / "edited", built_repo)
    set_params(edited, {"train": {"learning_rate": 0.001}})
    module = edited / "src/mnist_vae/classifier.py"
    module.write_text(module.read_text() + "\n# a comment is a change to the code\n")
    git(edited, "commit", "-q", "-am", "edited after the build")
    problems = lock_problems(edited, tmp_path / "check")
    assert "train: changed deps params.yaml: {'train': 'modified'}" in problems, problems
    assert "train_classifier: changed deps src/mnist_vae/classifier.py: modified" in problems
    assert not [p for p in problems if ABSENT_OUTPUT in p or ABSENT in p], problems


def test_metrics_git_carries_are_the_cache_false_outputs_and_not_ignored(repo_root):
    committed = committed_outputs(repo_root)
    assert committed[0] == "dvc.lock"
    assert {"metrics/eval.json", "metrics/classifier.json", "dvclive/metrics.json"} <= set(
        committed), committed
    for rel in committed:
        assert not _ignored(repo_root, rel), f"{rel} is committed but .gitignore ignores it"


def test_every_other_output_is_ignored_by_the_committed_gitignore_files(repo_root):
    """A build leaves git status clean apart from what it should commit: DVC's .gitignore
    entries for cached outputs are committed, so `dvc repro` adds none."""
    from dvc.repo import Repo

    with Repo(str(repo_root)) as repo:
        cached = [Path(o.fs_path).relative_to(repo_root).as_posix()
                  for o in repo.index.outs if o.use_cache]
    assert cached
    not_ignored = [rel for rel in [*cached, *LOCAL_STATE] if not _ignored(repo_root, rel)]
    assert not not_ignored, f"generated but neither committed nor ignored: {not_ignored}"
    tracked = subprocess.run(["git", "ls-files", "--", *cached], cwd=repo_root,
                             capture_output=True, text=True).stdout.split()
    assert not tracked, f"DVC caches these, git must not track them: {tracked}"


def test_metrics_show_on_a_fresh_clone_prints_the_committed_numbers(repo_copy, tmp_path):
    """The committed metrics are what `dvc metrics show` reads, with nothing built or pulled,
    and what `dvc metrics diff main` compares a branch with."""
    numbers = {"metrics/eval.json": {"test": {"bernoulli": {"neg_elbo": 101.25}},
                                     "samples": {"recognisable": 0.875, "frechet": 2.5}},
               "metrics/classifier.json": {"test_accuracy": 0.96875},
               "dvclive/metrics.json": {"best": {"val": {"loss": 99.5}}, "step": 3}}
    for rel, data in numbers.items():
        (repo_copy / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo_copy / rel).write_text(json.dumps(data))
    git(repo_copy, "add", *numbers)
    git(repo_copy, "commit", "-q", "-m", "main: metrics of a build")
    git(repo_copy, "branch", "-M", "main")
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo_copy), str(clone)], tmp_path, pipeline_env(repo_copy))
    env = pipeline_env(clone)

    shown = json.loads(run_dvc(clone, "metrics", "show", "--json", env=env).stdout)
    workspace = shown[""]["data"]
    assert {rel: workspace[rel]["data"] for rel in numbers} == numbers

    edited = yaml.safe_load((clone / "metrics/eval.json").read_text())
    edited["test"]["bernoulli"]["neg_elbo"] = 100.0
    (clone / "metrics/eval.json").write_text(json.dumps(edited))
    diff = json.loads(run_dvc(clone, "metrics", "diff", "main", "--json", env=env).stdout)
    assert diff["metrics/eval.json"]["test.bernoulli.neg_elbo"] == {
        "old": 101.25, "new": 100.0, "diff": -1.25}
