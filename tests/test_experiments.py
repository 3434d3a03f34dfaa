"""End to end: queued `dvc exp run` experiments, each one MLflow run under its DVC name,
and the change propagation users rely on (a param reruns exactly the stages that read it)."""

import json
import sqlite3

import pytest

import dvc_queue
from helpers import clone_repo, pipeline_env, run_dvc, set_params, stages_run

pytestmark = pytest.mark.slow


def test_two_queued_experiments_land_in_dvc_and_mlflow(built_repo, tmp_path):
    repo = clone_repo(built_repo, tmp_path / "repo")
    env = pipeline_env(repo)
    for name, change in (("exp-lr", "train.learning_rate=0.0015"), ("exp-beta", "train.beta=0.9")):
        run_dvc(repo, "exp", "run", "--queue", "-n", name, "-S", change, env=env)
    dvc_queue.run_all(repo, env, jobs=1)  # bounded: a stalled queue fails with DVC's logs

    shown = json.loads(run_dvc(repo, "exp", "show", "--json", env=env).stdout)
    experiments = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp["revs"]:
                experiments[rev.get("name") or exp.get("name")] = rev["data"]
    assert {"exp-lr", "exp-beta"} <= set(experiments), sorted(experiments)
    lr = experiments["exp-lr"]["params"]["params.yaml"]["data"]["train"]["learning_rate"]
    assert lr == 0.0015
    exp_metric = experiments["exp-lr"]["metrics"]["metrics/eval.json"]["data"]
    neg_elbo = exp_metric["test"]["bernoulli"]["neg_elbo"]

    with sqlite3.connect(repo / "mlflow.db") as con:  # the queue ran in temp copies
        rows = con.execute(
            "SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
            "WHERE t.key = 'dvc.exp_name' AND t.value = 'exp-lr'").fetchall()
        assert len(rows) == 1, rows
        run_id = rows[0][0]
        params = dict(con.execute("SELECT key, value FROM params WHERE run_uuid = ?", (run_id,)))
        metric = con.execute(
            "SELECT value FROM latest_metrics WHERE run_uuid = ? AND key = ?",
            (run_id, "test/bernoulli/neg_elbo")).fetchone()
        name = con.execute("SELECT name FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()[0]
    assert name == "exp-lr"
    assert float(params["train.learning_rate"]) == 0.0015
    assert metric[0] == pytest.approx(neg_elbo, rel=1e-6)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, []),
        ({"render": {"seed": 1}}, ["render", "register"]),
        ({"evaluate": {"seed": 1}}, ["evaluate", "register"]),
        ({"classifier": {"seed": 1}}, ["train_classifier", "evaluate", "register"]),
    ],  # a train param reruns train, evaluate, render and register: tests/test_retrain.py
    ids=["no-op", "render", "evaluate", "classifier"],
)
def test_a_param_change_reruns_exactly_the_stages_that_depend_on_it(
        built_repo, tmp_path, change, expected):
    repo = clone_repo(built_repo, tmp_path / "repo")
    set_params(repo, change)
    result = run_dvc(repo, "repro", env=pipeline_env(repo), timeout=1200)
    assert sorted(stages_run(result.stdout)) == sorted(expected), result.stdout
