"""End to end: the whole DAG through `dvc repro` on a small subset, as a user runs it.

download -> train -> train_classifier -> evaluate -> render -> register in a temporary copy,
then `dvc metrics show` and `dvc plots show`, a rerun that does nothing, and a render rerun
that gives the same bytes.
"""

import json
import math

import pytest
import yaml
from PIL import Image

from helpers import clone_repo, pipeline_env, run_dvc, set_params
from mnist_vae.model import load_vae

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
    facts = json.loads((pipeline_repo / "metrics" / "eval_facts.json").read_text())
    assert facts["test_images"] == 1000 and facts["iwae_images"] == 200
    assert facts["seconds"]["total"] > 0 and "meta" not in metrics
    assert set(metrics["per_class"]["bernoulli"]) == {str(d) for d in range(10)}
    assert 0 <= metrics["samples"]["recognisable"] <= 1
    assert 0 <= metrics["samples"]["class_entropy"] <= 1
    assert metrics["samples"]["frechet"] > metrics["samples"]["frechet_floor"] >= 0
    for key, value in _leaves(metrics):
        if not isinstance(value, str):
            assert value is not None and math.isfinite(value), key
    classifier = json.loads((pipeline_repo / "metrics" / "classifier.json").read_text())
    assert 0.1 < classifier["test_accuracy"] <= 1.0 and "wall_time_s" not in classifier
    facts = json.loads((pipeline_repo / "metrics" / "classifier_facts.json").read_text())
    assert facts["train_images"] == 2000 and facts["wall_time_s"] > 0


def test_metrics_show_lists_both_metrics_files(pipeline_repo):
    out = run_dvc(pipeline_repo, "metrics", "show", "--json", env=pipeline_env(pipeline_repo))
    shown = json.dumps(json.loads(out.stdout))
    assert "metrics/eval.json" in shown and "metrics/classifier.json" in shown
    assert "iwae_nll" in shown and "test_accuracy" in shown
    for bookkeeping in ("seconds", "wall_time_s", "images_per_s", "eval_facts", "test_images"):
        assert bookkeeping not in shown, f"{bookkeeping}: timings and sizes are not metrics"


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


def test_the_register_stage_recorded_the_version_it_registered(pipeline_repo):
    record = json.loads((pipeline_repo / "models" / "registered.json").read_text())
    pointer = json.loads((pipeline_repo / "models" / "mlflow_run.json").read_text())
    assert record["run_id"] == pointer["run_id"], "register logs to the training run"
    assert record["model"] == "mnist-vae" and record["version"] == 1
    assert record["aliases"] == ["challenger", "champion"]


def test_changing_a_render_param_reruns_render_and_register_only(pipeline_repo, tmp_path):
    repo = clone_repo(pipeline_repo, tmp_path / "repo")
    set_params(repo, {"render": {"seed": 1}})
    status = json.loads(run_dvc(repo, "status", "--json", env=pipeline_env(repo)).stdout)
    assert set(status) == {"render", "register"}  # register logs the render params
    set_params(repo, {"render": {"seed": 0}, "classifier": {"seed": 3}})
    status = json.loads(run_dvc(repo, "status", "--json", env=pipeline_env(repo)).stdout)
    assert set(status) == {"train_classifier"}  # evaluate follows only once its model changes


def _touch(repo, module: str) -> None:
    path = repo / "src" / "mnist_vae" / module
    path.write_text(path.read_text() + "\n# a change\n")


@pytest.mark.parametrize(("module", "stages"), [
    ("registry.py", {"register"}),
    ("continuation.py", {"register"}),
    ("classifier.py", {"train_classifier", "evaluate"}),
    ("rendering.py", {"render"}),
    ("inference.py", {"evaluate", "render"}),
])
def test_a_code_change_reruns_only_the_stages_whose_closure_holds_it(pipeline_repo, tmp_path,
                                                                     module, stages):
    repo = clone_repo(pipeline_repo, tmp_path / "repo")
    _touch(repo, module)
    status = json.loads(run_dvc(repo, "status", "--json", env=pipeline_env(repo)).stdout)
    assert set(status) == stages  # later stages follow only once their inputs change


def test_register_runs_again_when_its_inputs_return_to_a_set_seen_before(pipeline_repo,
                                                                          tmp_path):
    """Registering is a side effect: DVC's run cache must not replay it from an old record."""
    repo = clone_repo(pipeline_repo, tmp_path / "repo")
    env = pipeline_env(repo)
    set_params(repo, {"evaluate": {"seed": 1}})
    assert "Running stage 'register'" in run_dvc(repo, "repro", env=env).stdout
    set_params(repo, {"evaluate": {"seed": 0}})  # evaluate's outputs come from the run cache
    again = run_dvc(repo, "repro", env=env).stdout
    assert "Running stage 'evaluate'" not in again
    assert "Running stage 'register'" in again
    assert json.loads((repo / "models" / "registered.json").read_text())["version"] == 3


def test_an_autoregressive_decoder_runs_the_whole_pipeline(downloaded_repo, tmp_path):
    """`model.decoder.autoregressive_channels`: trained, scored through its head, drawn pixel
    by pixel in every picture, and registered, by the same stages."""
    repo = clone_repo(downloaded_repo, tmp_path / "repo")
    set_params(repo, yaml.safe_load((repo / "configs" / "ci.yaml").read_text()))
    set_params(repo, {"data": {"binarize": "dynamic"},
                      "model": {"decoder": {"autoregressive_channels": 8}}})
    run_dvc(repo, "repro", env=pipeline_env(repo), timeout=1200)
    assert load_vae(repo / "models" / "vae.keras").is_autoregressive
    metrics = json.loads((repo / "metrics" / "eval.json").read_text())
    test = metrics["test"]["bernoulli_binarized"]
    assert 0 < test["iwae_nll"] <= test["neg_elbo_iwae_subset"] + 1.0
    assert test["neg_elbo"] == pytest.approx(test["rec_nll"] + test["kl"])
    for key, value in _leaves(metrics):
        if not isinstance(value, str):
            assert value is not None and math.isfinite(value), key
    for name in PICTURES:
        with Image.open(repo / "plots" / f"{name}.png") as png:
            assert png.format == "PNG" and png.width > 100, name
    record = json.loads((repo / "models" / "registered.json").read_text())
    assert record["version"] == 1 and "champion" in record["aliases"]
