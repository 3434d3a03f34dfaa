"""The local autoregressive decoder experiment: a valid likelihood, scored as the pipeline does."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from benchmarks import ar_decoder
from benchmarks.ar_sampling import with_random_residual
from mlflow_helpers import TINY_MODEL, tiny_params
from mnist_vae import evaluation, losses
from mnist_vae.data import Splits

PARAMS = tiny_params(
    data={"binarize": "dynamic", "val_size": 20},
    model={**TINY_MODEL, "prior": {"kind": "mixture", "components": 2, "conditional": False}},
    train={"epochs": 2, "batch_size": 16, "kl_warmup_epochs": 1},
    evaluate={"iwae_max_batch": 64},
)


def _binary(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, 28, 28, 1)) < 0.3).astype("float32")


def _mnist_npz(path, seed: int, test_images: int = 10):
    """A small MNIST-shaped .npz (enough training images for the validation split)."""
    rng = np.random.default_rng(seed)
    images = lambda n: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)  # noqa: E731
    np.savez(path, x_train=images(5100), y_train=rng.integers(0, 10, 5100),
             x_test=images(test_images), y_test=rng.integers(0, 10, test_images))
    return path


def test_with_its_residual_at_zero_the_variant_scores_as_the_default_model():
    default = ar_decoder.build("default", PARAMS)
    local = ar_decoder.build("local_ar", PARAMS)
    view = evaluation.View("b", _binary(5, 4), losses.bernoulli_nll)
    plain = evaluation.iwae_nll(default, view, 8, 64, seed=1)
    through_head = evaluation.iwae_nll(local, view, 8, 64, seed=1)
    np.testing.assert_allclose(through_head, plain, atol=1e-4)


def test_the_variant_is_the_pipelines_vae_with_its_autoregressive_head():
    local = ar_decoder.build("local_ar", PARAMS)
    assert local.is_autoregressive and local.ar_head.channels == ar_decoder.AR_CHANNELS
    assert not ar_decoder.build("default", PARAMS).is_autoregressive
    assert ar_decoder.kind_of(local) == "local_ar"


def test_a_run_trains_keeps_its_best_epoch_fits_the_prior_and_scores(tmp_path):
    rng = np.random.default_rng(8)
    grey = lambda n: rng.random((n, 28, 28, 1)).astype("float32")  # noqa: E731
    labels = lambda n: rng.integers(0, 10, n)  # noqa: E731
    splits = Splits(grey(64), labels(64), grey(20), labels(20), grey(10), labels(10))
    test = _binary(10, 9)
    facts = ar_decoder.run("local_ar", PARAMS, splits, test, samples=4, images=6,
                           save_dir=tmp_path)
    assert facts["model"] == "local_ar" and facts["epochs"] == 2
    assert facts["best_epoch"] in (1, 2) and np.isfinite(facts["best_val_loss"])
    assert facts["iwae_images"] == 6 and np.isfinite(facts["iwae_nll"])
    assert facts["parameters"] > 0 and facts["prior_fit_s"] >= 0
    saved = tmp_path / "local_ar.keras"
    again = ar_decoder.rescore(saved, PARAMS, test, samples=4, images=6)
    assert again["kind"] == "local_ar" and again["iwae_nll"] == facts["iwae_nll"]
    bf16 = ar_decoder.rescore(saved, PARAMS, test, samples=4, images=6, precision="bfloat16")
    assert bf16["iwae_precision"] == "bfloat16" and 0 < bf16["refined_fraction"] <= 1
    assert bf16["iwae_nll"] == pytest.approx(facts["iwae_nll"], abs=0.05)


def test_scored_in_parts_the_images_get_the_draws_a_whole_run_gives_them():
    model = ar_decoder.build("local_ar", PARAMS)
    with_random_residual(model.ar_head, seed=1)
    model.set_prior(model.prior_distribution())
    test = _binary(10, 13)
    whole = ar_decoder.score(model, test, PARAMS, samples=32, images=0)
    parts = [ar_decoder.score(model, test, PARAMS, samples=32, images=0, part=(k, 2))
             for k in (1, 2)]
    assert [p["iwae_positions"] for p in parts] == [[0, 4], [4, 10]]  # whole 2-image batches
    combined = sum(p["iwae_nll"] * p["iwae_images"] for p in parts) / 10
    assert combined == pytest.approx(whole["iwae_nll"], abs=1e-4)
    unseeded_second_half = ar_decoder.score(model, test[4:], PARAMS, samples=32, images=0)
    assert unseeded_second_half["iwae_nll"] != pytest.approx(parts[1]["iwae_nll"], abs=1e-4)


@pytest.mark.parametrize(("n", "part", "unit", "expected"), [
    (10_000, (1, 2), 1, (0, 5000)), (10_000, (2, 2), 1, (5000, 10_000)),
    (10, (2, 3), 2, (4, 6)), (3, (1, 2), 5, (0, 0)), (3, (2, 2), 5, (0, 3))])
def test_parts_are_cut_at_whole_iwae_batches(n, part, unit, expected):
    positions = ar_decoder.part_of(n, part, unit)
    assert (positions.start, positions.stop) == expected


def test_without_data_it_says_what_to_run_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "ar.json"
    missing = tmp_path / "mnist.npz"
    assert ar_decoder.main(["--data", str(missing), "--out", str(out)]) == 1
    assert f"{missing}: no such file; run `make repro`" in capsys.readouterr().err
    assert not out.exists()


def test_scoring_a_missing_model_says_so_and_writes_nothing(tmp_path, capsys):
    out, missing = tmp_path / "ar.json", tmp_path / "none.keras"
    argv = ["--data", str(tmp_path / "mnist.npz"), "--score", str(missing), "--out", str(out)]
    (tmp_path / "mnist.npz").write_bytes(b"")
    assert ar_decoder.main(argv) == 1
    assert f"no such model: {missing}; train one with --save-dir" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(("argv", "says"), [
    (["--iwae-part", "1/2"], "--iwae-part scores part of saved models; add --score"),
    (["--score", "MODEL", "--iwae-part", "1/2", "--iwae-images", "3"],
     "--iwae-part 1/2 holds no image (parts are cut at whole IWAE batches); use fewer parts")])
def test_a_part_that_cannot_be_scored_is_refused_and_nothing_written(tmp_path, capsys, argv,
                                                                     says):
    data, model = _mnist_npz(tmp_path / "mnist.npz", 14), tmp_path / "m.keras"
    out = tmp_path / "ar.json"
    ar_decoder.build("local_ar", PARAMS).save(model)
    argv = [str(model) if a == "MODEL" else a for a in argv]
    assert ar_decoder.main(["--data", str(data), "--out", str(out), *argv]) == 1
    assert says in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("text", ["3/2", "0/2", "1", "a/b", "1/0"])
def test_a_malformed_part_is_refused_by_name(text, capsys):
    with pytest.raises(SystemExit):
        ar_decoder.main(["--iwae-part", text])
    assert f"{text!r}: give K/N with 1 <= K <= N" in capsys.readouterr().err


@pytest.mark.parametrize(("budget_s", "epochs_run"), [(1e-6, 1), (1e6, 3)])
def test_training_under_a_budget_stops_when_it_is_spent_or_at_the_cap(budget_s, epochs_run):
    params = dataclasses.replace(PARAMS, train=dataclasses.replace(
        PARAMS.train, epochs=3, time_budget_s=budget_s))
    rng = np.random.default_rng(11)
    splits = Splits(*(rng.random((n, 28, 28, 1)).astype("float32") if i % 2 == 0
                      else rng.integers(0, 10, n) for i, n in enumerate((64, 64, 20, 20, 4, 4))))
    facts = ar_decoder.train_model(ar_decoder.build("local_ar", params), splits, params)
    assert facts["epochs"] == epochs_run and facts["planned_epochs"] == epochs_run
    assert facts["time_budget_s"] == budget_s and facts["train_s"] > 0


def test_both_kinds_draw_binary_digits_the_same_each_time():
    for kind in ("default", "local_ar"):
        model = ar_decoder.build(kind, PARAMS)
        first, second = ar_decoder.draw(model, 3, seed=1), ar_decoder.draw(model, 3, seed=1)
        assert first.shape == (3, 28, 28, 1) and set(np.unique(first)) <= {0.0, 1.0}
        np.testing.assert_array_equal(first, second)


def test_scoring_saved_models_from_the_command_line_writes_json_and_pictures(tmp_path):
    data = _mnist_npz(tmp_path / "mnist.npz", 12)
    models = []
    for kind in ("default", "local_ar"):
        models.append(tmp_path / f"{kind}.keras")
        ar_decoder.build(kind, PARAMS).save(models[-1])
    out, png = tmp_path / "scores.json", tmp_path / "drawn.png"
    argv = ["--data", str(data), "--score", *map(str, models), "--iwae-samples", "3",
            "--iwae-images", "4", "--samples-png", str(png), "--out", str(out)]
    assert ar_decoder.main(argv) == 0
    results = json.loads(out.read_text())["results"]
    assert [r["kind"] for r in results] == ["default", "local_ar"]
    assert all(r["iwae_images"] == 4 and np.isfinite(r["iwae_nll"]) for r in results)
    assert all((tmp_path / f"drawn-{kind}.png").is_file() for kind in ("default", "local_ar"))


def _score_parts(tmp_path, data, model, parts: list[str]) -> list:
    """Score `model` in the given parts from the command line; the report paths."""
    outs = []
    for part in parts:
        outs.append(tmp_path / f"part{len(outs)}.json")
        argv = ["--data", str(data), "--score", str(model), "--iwae-samples", "1000",
                "--iwae-images", "0", "--iwae-part", part, "--out", str(outs[-1])]
        assert ar_decoder.main(argv) == 0
    return outs


def test_combined_parts_report_what_one_whole_run_reports(tmp_path):
    data, model = _mnist_npz(tmp_path / "mnist.npz", 15, test_images=12), tmp_path / "m.keras"
    ar_decoder.build("local_ar", PARAMS).save(model)
    whole, *parts = _score_parts(tmp_path, data, model, ["1/1", "2/2", "1/2"])
    out = tmp_path / "combined.json"
    assert ar_decoder.main(["--combine", *map(str, parts), "--out", str(out)]) == 0
    (result,) = json.loads(out.read_text())["results"]
    (expected,) = json.loads(whole.read_text())["results"]
    assert result["iwae_images"] == 12 and [p["iwae_part"] for p in result["parts"]] == [
        "1/2", "2/2"]
    assert result["iwae_nll"] == pytest.approx(expected["iwae_nll"], abs=2e-4)
    assert result["iwae_se"] == pytest.approx(expected["iwae_se"], abs=2e-3)


def _part_report(k: int, start: int, stop: int) -> dict:
    """What `--score m.keras --iwae-part K/2 --out` writes, in outline."""
    return {"results": [{"model": "m.keras", "kind": "local_ar", "iwae_part": f"{k}/2",
                         "iwae_positions": [start, stop], "iwae_images": stop - start,
                         "iwae_nll": 80.0 + k, "iwae_se": 1.0, "iwae_samples": 1000,
                         "iwae_precision": "float32", "refined_fraction": 1.0,
                         "max_shift_nats": 0.0, "iwae_s": 1.0}]}


@pytest.mark.parametrize(("edit", "says"), [
    (lambda reports: reports[:1], "parts 1/2 given; combine exactly 1/2, 2/2"),
    (lambda reports: [reports[0], reports[0], reports[1]], "parts 1/2, 1/2, 2/2 given"),
    (lambda reports: [reports[0], {**reports[1], "results": [
        {**reports[1]["results"][0], "iwae_samples": 5}]}], "the parts differ in iwae_samples"),
    (lambda reports: [reports[0], {**reports[1], "results": [
        {**reports[1]["results"][0], "iwae_positions": [7, 12]}]}], "do not follow on"),
    (lambda reports: [reports[0], {"results": []}], "is not a report of `--score ... --iwae-part`"),
    (lambda reports: [reports[0], {**reports[1], "results": [
        {**reports[1]["results"][0], "iwae_part": "2/x"}]}],
     "m.keras: iwae_part '2/x': give K/N with 1 <= K <= N"),
])
def test_parts_that_do_not_make_a_whole_are_refused_and_nothing_written(tmp_path, capsys, edit,
                                                                        says):
    reports = [_part_report(1, 0, 6), _part_report(2, 6, 12)]
    paths = []
    for report in edit(reports):
        paths.append(tmp_path / f"r{len(paths)}.json")
        paths[-1].write_text(json.dumps(report))
    out = tmp_path / "combined.json"
    assert ar_decoder.main(["--combine", *map(str, paths), "--out", str(out)]) == 1
    assert says in capsys.readouterr().err
    assert not out.exists()


def test_combining_a_file_that_is_not_json_names_it(tmp_path, capsys):
    broken = tmp_path / "part.json"
    broken.write_text("{")
    assert ar_decoder.main(["--combine", str(broken)]) == 1
    assert f"ar_decoder: --combine: {broken}: " in capsys.readouterr().err
