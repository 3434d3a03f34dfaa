"""The retrain report's tables: directions, verdicts, deltas, the stages a log names."""

import numpy as np
import pytest
from PIL import Image

from scripts import retrain_report as rr

METRICS_DIFF = {
    "metrics/eval.json": {
        "test.bernoulli.neg_elbo": {"old": 120.5, "new": 118.25, "diff": -2.25},
        "test.bernoulli.iwae_nll": {"old": 110.0, "new": 111.0, "diff": 1.0},
        "samples.recognisable": {"old": 0.6, "new": 0.7, "diff": 0.1},
        "samples.frechet": {"old": 3.0, "new": 3.5, "diff": 0.5},
        "samples.frechet_floor": {"old": 0.4, "new": 0.4, "diff": 0},
        "test.bernoulli.kl": {"old": 25.0, "new": 26.0, "diff": 1.0},
    },
    "metrics/classifier.json": {"test_accuracy": {"old": 0.9, "new": 0.9, "diff": 0}},
}


@pytest.mark.parametrize(("key", "way"), [
    ("test.bernoulli.neg_elbo", "lower"), ("test.bernoulli.iwae_nll", "lower"),
    ("samples.frechet", "lower"), ("samples.recognisable", "higher"),
    ("test_accuracy", "higher"), ("samples.frechet_floor", None),
    ("samples.test_recognisable", None), ("test.bernoulli.kl", None),
])
def test_direction_knows_which_way_is_better(key, way):
    assert rr.direction(key) == way


@pytest.mark.parametrize(("key", "old", "new", "expected"), [
    ("test.bernoulli.neg_elbo", 120.0, 118.0, "improved"),
    ("test.bernoulli.neg_elbo", 118.0, 120.0, "worse"),
    ("samples.recognisable", 0.5, 0.6, "improved"),
    ("samples.recognisable", 0.6, 0.5, "worse"),
    ("samples.frechet", 2.0, 2.0, "unchanged"),
    ("samples.frechet", None, 2.0, ""),
    ("test.bernoulli.kl", 20.0, 30.0, ""),
])
def test_verdict(key, old, new, expected):
    assert rr.verdict(key, old, new) == expected


def _row(text: str, key: str) -> list[str]:
    line = next(line for line in text.splitlines() if f": {key} |" in line)
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_metrics_section_marks_each_ranked_metric_with_its_delta_and_verdict():
    text = rr.metrics_section(METRICS_DIFF, "origin/main")
    assert _row(text, "test.bernoulli.neg_elbo") == [
        "metrics/eval.json: test.bernoulli.neg_elbo", "120.5000", "118.2500", "-2.2500",
        "improved (lower is better)"]
    assert _row(text, "test.bernoulli.iwae_nll")[-1] == "worse (lower is better)"
    assert _row(text, "samples.recognisable")[-1] == "improved (higher is better)"
    assert _row(text, "samples.frechet")[-1] == "worse (lower is better)"
    assert _row(text, "test_accuracy")[-2:] == ["0", "unchanged"]


def test_metrics_without_a_direction_that_changed_go_below_unchanged_ones_are_left_out():
    text = rr.metrics_section(METRICS_DIFF, "origin/main")
    details = text.split("<details>", 1)[1]
    assert "test.bernoulli.kl | 25.0000 | 26.0000 | +1.0000 |" in details
    assert "frechet_floor" not in text


def test_a_base_without_committed_metrics_says_how_to_get_them():
    diff = {"metrics/eval.json": {"test.bernoulli.neg_elbo": {"old": None, "new": 100.0}}}
    text = rr.metrics_section(diff, "origin/main")
    assert "has no committed metrics" in text and "make retrain COMMIT=1" in text


def test_params_section_and_summary_name_old_and_new_values():
    diff = {"params.yaml": {"train.learning_rate": {"old": 0.002, "new": 0.0015}}}
    assert "| train.learning_rate | 0.0020 | 0.0015 |" in rr.params_section(diff, "main")
    assert rr.params_summary(diff, "main") == (
        "Params changed against main: train.learning_rate 0.0020 -> 0.0015.")
    assert rr.params_section({}, "main") == "No param differs from `main`.\n"
    assert rr.params_summary({}, "main") == "No param changed against main."


def test_stages_from_log_reads_run_skipped_and_restored_stages():
    log = ("Stage 'download' didn't change, skipping\n"
           "Running stage 'train':\n> python stages/train.py\n"
           "Restored stage 'train_classifier' from run-cache\n"
           "Running stage 'evaluate':\n")
    assert rr.stages_from_log(log) == (["train", "evaluate"], ["download", "train_classifier"])


def test_side_by_side_puts_base_left_and_new_right(tmp_path):
    black = tmp_path / "base.png"
    grey = tmp_path / "new.png"
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(black)
    Image.fromarray(np.full((20, 30), 128, np.uint8)).save(grey)
    rr.side_by_side(black, grey, tmp_path / "out" / "compare.png", ("base", "new"))
    pixels = np.asarray(Image.open(tmp_path / "out" / "compare.png"))
    assert pixels.shape == (20 + 24 + 10, 30 * 2 + 30)
    assert set(np.unique(pixels[30, 10:40])) == {0}      # the base grid, left
    assert set(np.unique(pixels[30, 50:80])) == {128}    # the new grid, right
    assert set(np.unique(pixels[30, 40:50])) == {255}    # white between them
