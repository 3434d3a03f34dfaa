"""End to end: the whole DAG through `dvc repro` on a small subset, as a user runs it.

download -> train -> train_classifier -> evaluate -> render in a temporary copy of the repo,
then `dvc metrics show` and `dvc plots show`, a rerun that does nothing, and a render rerun
that gives the same bytes.
"""

import json
import math

import pytest
from PIL import Image

from helpers import clone_repo, pipeline_env, run_dvc, set_params

pytestmark = pytest.mark.slow

PICTURES = ("samples", "reconstructions", "interpolations", "manifold", "progress", "digits")


def _leaves(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], node


@pytest.fixture(scope="module")
def pipeline_repo(built_repo):
    """The session's repo where `dvc repro` ran every stage once with the CI overlay."""
    return built_repo


def test_repro_writes_every_metric(pipeline_repo):
    metrics = json.loads((pipeline_repo / "metrics" / "eval.json").read_text())
    test = metrics["test"]["bernoulli"]
    assert 0 < test["iwae_nll"] <= test["neg_elbo_iwae_subset"] + 1.0  # k=8 tightens the ELBO
    assert test["neg_elbo"] == pytest.approx(test["rec_nll"] + test["kl"])
    assert test["bits_per_dim"] == pytest.approx(test["neg_elbo"] / (784 * math.log(2)))
    assert metrics["meta"]["test_images"] == 1000 and metrics["meta"]["iwae_images"] == 200
    assert set(metrics["per_class"]["bernoulli"]) == {str(d) for d in range(10)}
    assert 0 <= metrics["samples"]["recognisable"] <= 1
    assert 0 <= metrics["samples"]["class_entropy"] <= 1
    assert metrics["samples"]["frechet"] > metrics["samples"]["frechet_floor"] >= 0
    for key, value in _leaves(metrics):
        if not isinstance(value, str):
            assert value is not None and math.isfinite(value), key
    classifier = json.loads((pipeline_repo / "metrics" / "classifier.json").read_text())
    assert classifier["train_images"] == 2000 and 0.1 < classifier["test_accuracy"] <= 1.0


def test_metrics_show_lists_both_metrics_files(pipeline_repo):
    out = run_dvc(pipeline_repo, "metrics", "show", "--json", env=pipeline_env(pipeline_repo))
    shown = json.dumps(json.loads(out.stdout))
    assert "metrics/eval.json" in shown and "metrics/classifier.json" in shown
    assert "iwae_nll" in shown and "test_accuracy" in shown


def test_plots_show_renders_one_page_with_curves_and_every_picture(pipeline_repo, tmp_path):
    repo = clone_repo(pipeline_repo, tmp_path / "repo")
    run_dvc(repo, "plots", "show", "-o", "dvc_plots", env=pipeline_env(repo))
    html = (repo / "dvc_plots" / "index.html").read_text()
    for name in PICTURES:
        assert f"{name}.png" in html, name
    assert "vega" in html.lower()  # the per-epoch curves are Vega-Lite specs on the same page
    for name in PICTURES:
        with Image.open(repo / "plots" / f"{name}.png") as png:
            assert png.format == "PNG" and png.width > 100 and png.height > 100


def test_a_second_repro_runs_nothing_and_render_is_byte_identical(pipeline_repo, tmp_path):
    repo = clone_repo(pipeline_repo, tmp_path / "repo")
    env = pipeline_env(repo)
    before = {n: (repo / "plots" / f"{n}.png").read_bytes() for n in PICTURES}
    status = run_dvc(repo, "status", "--json", env=env)
    assert json.loads(status.stdout) == {}
    run_dvc(repo, "repro", "--force", "--single-item", "render", env=env)
    for name in PICTURES:
        assert (repo / "plots" / f"{name}.png").read_bytes() == before[name], name


def test_changing_a_render_param_reruns_only_render(pipeline_repo, tmp_path):
    repo = clone_repo(pipeline_repo, tmp_path / "repo")
    set_params(repo, {"render": {"seed": 1}})
    status = json.loads(run_dvc(repo, "status", "--json", env=pipeline_env(repo)).stdout)
    assert set(status) == {"render"}
    set_params(repo, {"render": {"seed": 0}, "classifier": {"seed": 3}})
    status = json.loads(run_dvc(repo, "status", "--json", env=pipeline_env(repo)).stdout)
    assert set(status) == {"train_classifier"}  # evaluate follows only once its model changes
