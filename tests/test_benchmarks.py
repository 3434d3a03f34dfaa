"""The benchmark harness's pure parts: curves, targets, ratios, bars, the probe clock, the
report and the params.yaml edit of the overhead timing. The benchmark itself is not a test."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import compare, overhead, report
from benchmarks import run as bench_run
from benchmarks.prior_ablation import UnderPrior, score
from benchmarks.probe import Probe
from mnist_vae import evaluation as ev
from mnist_vae.prior import GaussianMixture
from toy_models import LinearGaussianVAE, ShiftedPriorVAE

REPO = Path(__file__).resolve().parents[1]


def point(t, value, epoch=0, epoch_end=False, images=0):
    return {"train_s": t, "val_neg_elbo": value, "epoch": epoch, "epoch_end": epoch_end,
            "images": images}


CURVE = [point(0, 540), point(2, 300), point(4, 200, 1, True), point(6, 150),
         point(8, 120, 2, True), point(10, 110, 3, True)]


# --- targets and times -----------------------------------------------------------------------

def test_time_to_target_interpolates_between_the_points_around_the_crossing():
    assert compare.time_to_target(CURVE, 175) == pytest.approx(5.0)  # halfway from 200 to 150
    assert compare.time_to_target(CURVE, 120) == pytest.approx(8.0)  # exactly a point


def test_time_to_target_is_none_when_never_reached_and_first_point_when_already_there():
    assert compare.time_to_target(CURVE, 100) is None
    assert compare.time_to_target(CURVE, 600) == 0


def test_time_to_target_takes_the_first_crossing_and_skips_non_finite_probes():
    bumpy = [point(0, 500), point(1, float("nan")), point(2, 90), point(3, 130), point(4, 80)]
    assert compare.time_to_target(bumpy, 100) == pytest.approx(0 + 2 * (500 - 100) / 410)


def test_target_is_the_tenth_epoch_value_or_the_last_completed_epoch_flagged():
    ten = [point(i, 200 - i, i, True) for i in range(1, 13)]
    assert compare.target_from_curve(ten) == {"epoch": 10, "val_neg_elbo": 190,
                                              "train_s": 10, "complete": True}
    short = compare.target_from_curve(CURVE)
    assert short["epoch"] == 3 and short["val_neg_elbo"] == 110 and not short["complete"]
    assert compare.target_from_curve([point(0, 540), point(3, 300)]) is None


# --- ratios and bars -------------------------------------------------------------------------

def model(curve, images_per_s, **final):
    return {"status": "ok", "train": {"curve": curve, "images_per_s": images_per_s},
            "target": compare.target_from_curve(curve), "final": final}


def fixture_models():
    mlp_curve = [point(0, 540), *(point(2.4 * e, 100 + 50 / e, e, True) for e in range(1, 11))]
    ours_curve = [point(0, 540), *(point(3.0 * e, 96 + 40 / e, e, True) for e in range(1, 11))]
    slow_curve = [point(0, 540), *(point(20.0 * e, 150 + 60 / e, e, True) for e in range(1, 11))]
    return {
        "ours": model(ours_curve, 3000.0, test_neg_elbo=93.0, frechet=20.0, recognisable=0.9,
                      class_entropy=0.99),
        "mlp": model(mlp_curve, 20000.0, test_neg_elbo=105.0, frechet=50.0),
        "slow": model(slow_curve, 1000.0, test_neg_elbo=150.0, frechet=80.0),
        "broken": {"status": "failed"},
    }


def test_ratios_compare_time_to_each_baselines_own_target_in_the_same_run():
    models = fixture_models()
    rel = compare.ratios_against(models, "ours", ["mlp", "slow", "broken"])
    assert set(rel) == {"mlp", "slow"}
    mlp = rel["mlp"]
    assert mlp["target_val_neg_elbo"] == pytest.approx(105.0)  # the MLP's 10th epoch
    assert mlp["baseline_time_s"] == pytest.approx(24.0)
    # ours: 96 + 40/e <= 105 first at e = 5 (104.0); between e = 4 (106.0, 12 s) and 15 s
    assert mlp["subject_time_s"] == pytest.approx(12 + 3 * (106 - 105) / (106 - 104))
    assert mlp["time_to_target"] == pytest.approx(mlp["subject_time_s"] / 24.0)
    assert mlp["images_per_s"] == pytest.approx(0.15)
    assert mlp["test_neg_elbo_delta"] == pytest.approx(-12.0)
    assert mlp["frechet"] == pytest.approx(0.4)


def test_times_to_targets_lists_every_model_against_every_available_baseline():
    times = compare.times_to_targets(fixture_models(), ["mlp", "slow", "broken"])
    assert set(times) == {"ours", "mlp", "slow"}
    assert times["mlp"]["mlp"] == pytest.approx(24.0)
    assert times["slow"]["mlp"] is None  # never reaches 105
    assert "broken" not in times["ours"]


def test_bars_pass_fail_and_missing():
    verdicts = {(b["bar"], b["stretch"]): b["passed"]
                for b in compare.bars(fixture_models(), "ours", "mlp", ["slow", "broken"])}
    assert verdicts[("test -ELBO (nats)", False)] is True
    assert verdicts[("Frechet distance", False)] is True
    assert verdicts[("time to mlp's 10-epoch -ELBO / its time", False)] is True  # 0.56 <= 2
    assert verdicts[("time to mlp's 10-epoch -ELBO / its time", True)] is True
    assert verdicts[("time to slow's 10-epoch -ELBO / its time", False)] is True
    assert verdicts[("time to broken's 10-epoch -ELBO / its time", False)] is None
    worse = fixture_models()
    worse["ours"]["final"]["test_neg_elbo"] = 95.0  # the bar is strict: < 95
    worse["ours"]["train"]["curve"] = [point(0, 540), point(30, 110, 10, True)]
    failed = {(b["bar"], b["stretch"]): b for b in compare.bars(worse, "ours", "mlp", [])}
    assert failed[("test -ELBO (nats)", False)]["passed"] is False
    never = failed[("time to mlp's 10-epoch -ELBO / its time", False)]
    assert never["value"] is None and never["passed"] is False  # not reached is a failure
    assert "| time to mlp's 10-epoch -ELBO / its time | not reached | <= 2.0 | **fail** |" in (
        report.bars_table({"bars": list(failed.values())}))


def test_the_fast_config_is_held_to_the_stretch_bar_on_its_own_curve():
    models = fixture_models()
    models["fast"] = model([point(0, 540), point(10, 104, 1, True)], 9000.0)  # 105 at ~9.8 s
    bars = {b["bar"]: b for b in compare.bars(models, "ours", "mlp", [], fast_subject="fast")}
    fast = bars["fast: time to mlp's 10-epoch -ELBO / its time"]
    assert fast["stretch"] and fast["passed"] is True
    assert fast["value"] == pytest.approx(10 * (540 - 105) / (540 - 104) / 24.0)
    models["fast"]["train"]["curve"] = [point(0, 540), point(30, 106, 1, True)]
    bars = {b["bar"]: b for b in compare.bars(models, "ours", "mlp", [], fast_subject="fast")}
    assert bars["fast: time to mlp's 10-epoch -ELBO / its time"]["passed"] is False  # never
    unmeasured = {b["bar"]: b for b in compare.bars(fixture_models(), "ours", "mlp", [],
                                                    fast_subject="fast")}
    assert unmeasured["fast: time to mlp's 10-epoch -ELBO / its time"]["passed"] is None


def test_ratio_guards_missing_values_and_zero():
    assert compare.ratio(None, 2) is None
    assert compare.ratio(1, 0) is None
    assert compare.ratio(3, 2) == 1.5


# --- the probe clock -------------------------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_probe_excludes_evaluation_time_and_stops_at_the_budget():
    clock = FakeClock()
    evaluations = []

    def evaluate(model):
        evaluations.append(model)
        clock.now += 5.0  # each probe costs 5 s that must not count as training
        return 500.0 - len(evaluations)

    probe = Probe(10.0, evaluate, min_interval_s=2.0, growth=0.1, clock=clock, cpu_clock=clock)
    probe.start("the model")
    assert probe.train_s() == 0 and evaluations == ["the model"]
    for _ in range(9):
        clock.now += 1.0
        probe.step(100)
    assert not probe.done()
    probe.epoch_end()
    clock.now += 1.0
    probe.step(100)
    assert probe.done()
    facts = probe.finish()
    assert facts["train_s"] == pytest.approx(10.0) and facts["ended_by"] == "budget"
    assert facts["images"] == 1000 and facts["epochs"] == 1
    assert facts["images_per_s"] == pytest.approx(100.0)
    times = [p["train_s"] for p in facts["curve"]]
    # every 2 s of training (growth is smaller), the epoch end at 9 s, and the final state
    assert times == [0, 2, 4, 6, 8, 9, 10]
    assert [p["epoch_end"] for p in facts["curve"]].count(True) == 1
    assert facts["probe_s"] == pytest.approx(5.0 * len(times))


def test_work_after_the_probe_stops_counts_in_no_training_figure():
    clock = FakeClock()
    probe = Probe(10.0, lambda m: 1.0, clock=clock, cpu_clock=clock)
    probe.start(None)
    clock.now += 4.0
    probe.step(400)
    probe.stop()  # fit ended; the pipeline now fits its prior for 50 s
    clock.now += 50.0
    facts = probe.finish()
    assert facts["train_s"] == pytest.approx(4.0) and facts["cpu_s"] == pytest.approx(4.0)
    assert facts["images_per_s"] == pytest.approx(100.0) and len(facts["curve"]) == 2


def test_probe_spacing_grows_with_elapsed_time():
    clock = FakeClock()
    probe = Probe(1000.0, lambda m: 1.0, min_interval_s=1.0, growth=0.5, clock=clock,
                  cpu_clock=clock)
    probe.start(None)
    for _ in range(100):
        clock.now += 1.0
        probe.step(1)
    times = [p["train_s"] for p in probe.curve]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps == sorted(gaps) and gaps[-1] >= 0.5 * times[-2]


# --- the report ------------------------------------------------------------------------------

def fixture_results():
    models = fixture_models()
    for m in models.values():
        if m["status"] == "ok":
            m["train"].update(images=55000 * 3, epochs=3, train_s=60.0, ended_by="budget")
            m["final"].setdefault("recognisable", 0.5)
            m["final"].setdefault("class_entropy", 0.9)
            m.update(n_params=1234, load_before=0.1, load_after=1.9)
    models["broken"]["note"] = "exit 1"
    models["ours"]["prior"] = {"kind": "mixture", "components": 50, "codes": 55000,
                               "seconds": 21.04}
    return {
        "date": "2026-11-25", "label": None, "reference_run": False,
        "why_not_reference": "budget 60 s",
        "settings": {"budget_s": 60.0, "data": {}, "evaluate": {}},
        "data_sizes": {"train": 55000, "val": 5000, "test": 10000},
        "machine": {"cpu": "Test CPU", "usable_cores": 2, "logical_cores": 2, "memory_gib": 24,
                    "versions": {"python": "3.11.9", "torch": None}},
        "iwae_k": 100, "subject": "ours", "baselines": ["mlp", "slow"],
        "models": models,
        "time_to_targets": compare.times_to_targets(models, ["mlp", "slow"]),
        "ratios": compare.ratios_against(models, "ours", ["mlp", "slow"]),
        "bars": compare.bars(models, "ours", "mlp", ["slow"]),
        "overhead": {"status": "ok", "noop_repro_s": 1.234, "noop_stages_run": [],
                     "render_param": "render.scale=3", "render_repro_s": 9.87,
                     "render_stages_run": ["render"]},
    }


def test_report_renders_every_table_with_the_numbers():
    text = report.render(fixture_results())
    assert "Not a reference run** (budget 60 s)" in text
    assert "Test CPU, 2 usable cores of 2, 24 GiB; python 3.11.9" in text
    assert "| `ours` | 1,234 | 60 | 3,000 | 3.0 |" in text
    assert "| `broken` | failed: exit 1 |" in text
    assert "| `ours` | 13.5 s (0.56×) |" in text  # time to the MLP's target, vs its 24 s
    assert "| `mlp` | 24.0 s (1.00×) |" in text
    assert "| test -ELBO (nats) | 93.0 | < 95.0 | pass |" in text
    assert "| after `render.scale=3` | 9.87 | render |" in text
    assert "| nothing changed | 1.23 | none |" in text
    assert "`ours` 0.1 → 1.9" in text
    assert ("`ours`: after its budget, a 50-component Gaussian mixture prior was fitted to "
            "55,000 training codes in 21.0 s") in text
    assert "`mlp`: after its budget" not in text
    assert "![prior samples]" not in text
    results = {**fixture_results(), "samples_picture": "2026-11-25-samples.png"}
    linked = report.render(results, picture_dir="benchmarks/results/")
    assert "![prior samples](benchmarks/results/2026-11-25-samples.png)" in linked


def test_report_says_why_overhead_was_not_measured():
    results = fixture_results()
    results["overhead"] = {"status": "skipped", "note": "no dvc.lock: run `make repro` first"}
    assert "Not measured: no dvc.lock" in report.render(results)


def test_fmt_missing_and_numbers():
    assert report.fmt(None) == "—"
    assert report.fmt(1234) == "1,234"
    assert report.fmt(0.98765, 3) == "0.988"
    assert report.fmt(1.5, 2, "×") == "1.50×"


def test_update_readme_replaces_only_the_block_and_needs_the_markers():
    text = f"# title\n\n{report.README_BEGIN}\nold table\n{report.README_END}\n\nmore\n"
    updated = report.update_readme(text, "new table\n")
    assert updated == f"# title\n\n{report.README_BEGIN}\nnew table\n{report.README_END}\n\nmore\n"
    with pytest.raises(ValueError, match="markers"):
        report.update_readme("# no markers\n", "x")


# --- pipeline overhead helpers -----------------------------------------------------------------

PARAMS = """\
train:
  scale: 7            # not this one
render:
  # screen pixels
  seed: 0
  scale: 2              # screen pixels per MNIST pixel
  nested:
    scale: 9
tracking:
  experiment: x
"""


def test_edit_param_text_changes_only_that_key_and_keeps_comments():
    text, new = overhead.edit_param_text(PARAMS, "render", "scale", overhead.increment)
    assert new == "3"
    assert "  scale: 3              # screen pixels per MNIST pixel\n" in text
    assert text.replace("scale: 3 ", "scale: 2 ") == PARAMS
    with pytest.raises(KeyError, match="render.missing"):
        overhead.edit_param_text(PARAMS, "render", "missing", overhead.increment)


def test_stages_run_reads_dvc_output():
    out = ("Stage 'train' didn't change, skipping\nRunning stage 'render':\n> python x\n"
           "Running stage 'evaluate':\n")
    assert overhead.stages_run(out) == ["render", "evaluate"]
    assert overhead.stages_run("Data and pipelines are up to date.\n") == []


def test_overhead_on_its_own_refuses_an_unbuilt_repo_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "overhead.json"
    assert overhead.main(["--repo", str(tmp_path), "--out", str(out)]) == 1
    assert "no dvc.lock: run `make repro` first" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_overhead_times_noop_and_render_only_repro_on_a_real_dvc_repo(tmp_path):
    """A two-stage DVC repo whose `render` reads render.scale: only render reruns."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text("train:\n  n: 1\nrender:\n  scale: 2\n")
    (repo / "dvc.yaml").write_text(
        "stages:\n"
        "  train:\n    cmd: python -c \"open('model.txt','w').write('m')\"\n"
        "    params: [train.n]\n    outs: [model.txt]\n"
        "  render:\n    cmd: python -c \"open('plot.txt','w').write(open('model.txt').read())\"\n"
        "    deps: [model.txt]\n    params: [render.scale]\n    outs: [plot.txt]\n")
    dvc = [sys.executable, "-m", "dvc"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for command in (["git", "init", "-q"], [*dvc, "init", "-q"], [*dvc, "repro", "-q"]):
        subprocess.run(command, cwd=repo, env=env, check=True, capture_output=True)
    out = tmp_path / "overhead.json"
    assert overhead.main(["--repo", str(repo), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["status"] == "ok", result
    assert result["noop_stages_run"] == []
    assert result["render_param"] == "render.scale=3"
    assert result["render_stages_run"] == ["render"]
    assert result["noop_repro_s"] > 0 and result["render_repro_s"] > 0
    assert result["machine"]["cpu"]
    assert "scale: 2" in (repo / "params.yaml").read_text()  # the repo itself is untouched


def test_overhead_is_skipped_with_a_reason_when_the_pipeline_is_not_built(tmp_path):
    result = overhead.measure_overhead(tmp_path)
    assert result == {"status": "skipped", "note": "no dvc.lock: run `make repro` first"}


# --- the run's bookkeeping -------------------------------------------------------------------

def test_the_machine_line_names_the_vector_units_that_set_the_speed(tmp_path):
    from benchmarks import run

    xeon = tmp_path / "xeon"
    xeon.write_text("model name\t: Intel(R) Xeon(R) Processor\n"
                    "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile amx_bf16\n"
                    "model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu\n")
    epyc = tmp_path / "epyc"
    epyc.write_text("model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n")
    old = tmp_path / "old"
    old.write_text("model name\t: Old CPU\nflags\t\t: fpu sse2\n")
    assert run.cpu_features(xeon) == ["avx2", "avx512f", "avx512_bf16", "amx_bf16"]
    assert run.cpu_features(epyc) == ["avx2"]
    assert run.cpu_features(old) == []
    assert run.cpu_features(tmp_path / "missing") is None

    def line(features):
        machine = {**fixture_results()["machine"], "cpu_features": features}
        return report.machine_line({"machine": machine})

    assert line(["avx2"]).startswith("Test CPU (avx2), 2 usable cores of 2")
    assert line([]).startswith("Test CPU (no AVX2), 2 usable")
    assert line(None).startswith("Test CPU, 2 usable")  # unknown: no claim either way

def test_only_a_full_600_s_run_of_every_model_is_a_reference_run_others_are_labelled():
    from benchmarks import run

    empty = {"data": {}, "evaluate": {}, "classifier": {}}
    reference = run.assemble(run.parse_args([]), empty, {}, {}, {})
    assert reference["reference_run"] and reference["label"] is None
    assert reference["machine"]["logical_cores"] >= 1
    assert reference["machine"]["cpu_features"] == run.cpu_features()
    quick = run.assemble(run.parse_args(["--budget", "60"]), empty, {}, {}, {})
    assert not quick["reference_run"] and quick["label"] == "partial"
    assert quick["why_not_reference"] == "budget 60 s"
    smoke_args = run.parse_args(["--smoke"])
    assert smoke_args.budget == run.SMOKE["budget"] and smoke_args.train_limit == 5000
    smoke = run.assemble(smoke_args, {**empty, "data": {"train_limit": 5000}}, {}, {}, {})
    assert smoke["label"] == "smoke" and "data or evaluation overridden" in smoke[
        "why_not_reference"]
    skipped = run.assemble(run.parse_args([]), empty,
                           {"pytorch_mlp": {"status": "skipped", "note": "no torch"}}, {}, {})
    assert not skipped["reference_run"] and skipped["why_not_reference"] == "pytorch_mlp skipped"


# --- the prior ablation ----------------------------------------------------------------------


def _shifted_model_and_view():
    model = ShiftedPriorVAE(LinearGaussianVAE(), shift=[3.0, -1.0], scale=[0.5, 2.0])
    x = model.base.sample_x(200)
    return model, ev.View("linear", x, model.nll)


def test_prior_ablation_changes_only_the_prior_and_pairs_the_samples():
    model, view = _shifted_model_and_view()
    own = score(model, view, k=20, max_batch=1000, seed=0)
    same = score(UnderPrior(model, model.prior_distribution()), view, 20, 1000, 0)
    assert {k: v for k, v in own.items() if k != "seconds"} == {
        k: v for k, v in same.items() if k != "seconds"}
    assert own["iwae_nll"] == pytest.approx(float(np.mean(model.base.true_nll(view.images))),
                                            rel=1e-6)


def test_prior_ablation_charges_a_misplaced_prior():
    # the data come from the shifted prior: N(0, I) puts little mass where the codes are
    model, view = _shifted_model_and_view()
    own = score(model, view, k=20, max_batch=1000, seed=0)
    standard = score(UnderPrior(model, GaussianMixture.standard(2)), view, 20, 1000, 0)
    assert standard["kl"] > own["kl"] + 1.0
    assert standard["iwae_nll"] > own["iwae_nll"] + 1.0


@pytest.mark.slow
def test_serve_load_measures_a_real_server_against_a_baseline_revision(tmp_path):
    """A short run of the load test: both servers answer every request, figures are filled."""
    from benchmarks import serve_load

    out = tmp_path / "serve.json"
    assert serve_load.main(["--requests", "24", "--threads", "3", "--rows", "4",
                            "--baseline", "HEAD", "--out", str(out)]) == 0
    import json

    results = json.loads(out.read_text())
    for run in ("baseline", "current"):
        figures = results[run]
        assert figures["ok"] == 24 and figures["errors"] == 0
        assert 0 < figures["p50_ms"] <= figures["p99_ms"]
        assert figures["requests_per_s"] > 0 and figures["peak_rss_mb"] > 100
    assert set(results["ratios"]) == {"p50", "p99", "throughput"}
    assert results["cpu"] and results["rows_per_request"] == 4


def test_iwae_speed_times_every_path_against_the_previous_one(tmp_path):
    out = tmp_path / "iwae.json"
    subprocess.run([sys.executable, "benchmarks/iwae_speed.py", "--samples", "30", "--images",
                    "2", "--rounds", "1", "--out", str(out)], cwd=REPO, check=True,
                   capture_output=True, env=os.environ | {"PYTHONPATH": f"{REPO / 'src'}:{REPO}"})
    report = json.loads(out.read_text())
    assert report["baseline"] == "reference" and report["cpu"]
    paths = report["paths"]
    assert set(paths) == {"reference", "float32", "bfloat16"}
    assert paths["reference"]["max_abs_diff_nats"] == 0 and paths["reference"]["wall_ratio"] == 1
    assert paths["float32"]["max_abs_diff_nats"] < 1e-3
    assert 0 < paths["bfloat16"]["refined_fraction"] <= 1
    assert paths["bfloat16"]["max_abs_diff_nats"] < 0.01


def test_iwae_speed_times_bfloat16_refined_to_other_left_overs(tmp_path):
    out = tmp_path / "iwae.json"
    subprocess.run([sys.executable, "benchmarks/iwae_speed.py", "--samples", "40", "--images",
                    "2", "--rounds", "1", "--paths", "float32", "bfloat16", "--left-overs", "0.5",
                    "1", "--out", str(out)], cwd=REPO, check=True, capture_output=True,
                   env=os.environ | {"PYTHONPATH": f"{REPO / 'src'}:{REPO}"})
    paths = json.loads(out.read_text())["paths"]
    assert set(paths) == {"float32", "bfloat16", "bfloat16_left0.5", "bfloat16_left1"}
    assert (paths["bfloat16_left1"]["refined_fraction"] == 0
            < paths["bfloat16_left0.5"]["refined_fraction"]
            <= paths["bfloat16"]["refined_fraction"])


def test_the_linearised_decoder_is_exact_at_the_mean_and_refining_everything_is_float32(tmp_path):
    out = tmp_path / "screen.json"
    subprocess.run([sys.executable, "benchmarks/iwae_screen.py", "--samples", "40", "--images",
                    "2", "--left-overs", "0", "0.5", "1", "--out", str(out)], cwd=REPO,
                   check=True, capture_output=True,
                   env=os.environ | {"PYTHONPATH": f"{REPO / 'src'}:{REPO}"})
    report = json.loads(out.read_text())
    assert report["at_the_mean_abs_error"] < 1e-2  # the expansion point decodes exactly
    screens = report["screens"]
    assert screens["0.0"]["decoded_fraction"] == 1 and screens["0.0"]["max_abs_diff_nats"] < 1e-9
    assert screens["1.0"]["decoded_fraction"] == 1 / 40  # only each image's heaviest
    assert 1 / 40 <= screens["0.5"]["decoded_fraction"] <= 1
    assert set(report["seconds"]) == {"float32_decoding", "jacobians", "surrogate"}


def test_results_are_written_both_or_neither_when_the_report_cannot_be_rendered(tmp_path):
    with pytest.raises(KeyError):
        bench_run.write_results({"date": "2026-12-03"}, tmp_path)  # no machine: render fails
    assert list(tmp_path.iterdir()) == []


def test_a_printed_report_is_saved_whole_with_the_date_and_machine(tmp_path, capsys):
    out = tmp_path / "new" / "report.json"
    bench_run.print_report({"results": [1, 2]}, out)
    saved = json.loads(out.read_text())
    assert saved["results"] == [1, 2] and {"date", "machine"} <= saved.keys()
    assert json.loads(capsys.readouterr().out) == saved
    assert [p.name for p in out.parent.iterdir()] == ["report.json"]
