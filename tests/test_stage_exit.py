"""How stages end: a documented failure is one line on stderr and exit code 1, a bug keeps its
traceback; end to end, the real stage entry points on bad params, a truncated model and a full
disk leave one line and no partial output."""

from __future__ import annotations

import errno
import re
import signal
from pathlib import Path

import pytest

from helpers import copy_repo, pipeline_env, run_stage, set_params, write_random_mnist
from mnist_vae.config import ConfigError
from mnist_vae.files import DiskFullError
from mnist_vae.stage_exit import Stopped, failure_line
from mnist_vae.stage_exit import run_stage as run_main


def _raising(err: BaseException):
    def main():
        raise err
    return main


def test_a_config_error_is_one_line_naming_the_stage(capsys):
    err = ConfigError("data.val_size: 70000 leaves no training images; lower it")
    assert run_main(_raising(err), "evaluate") == 1
    assert capsys.readouterr().err == ("evaluate: data.val_size: 70000 leaves no training "
                                       "images; lower it\n")


def test_errors_a_stage_names_are_one_line_and_others_keep_their_traceback(capsys):
    class ServerDown(RuntimeError):
        pass

    assert run_main(_raising(ServerDown("no answer; rerun")), "train", ServerDown) == 1
    assert capsys.readouterr().err == "train: no answer; rerun\n"
    with pytest.raises(ZeroDivisionError):  # a bug: its traceback is what a developer needs
        run_main(lambda: 1 / 0, "train", ServerDown)
    with pytest.raises(ServerDown):
        run_main(_raising(ServerDown("x")), "evaluate")  # not named by that stage


@pytest.mark.parametrize(("err", "expected"), [
    (OSError(errno.ENOSPC, "No space left on device", "plots/a.png"),
     "render: plots/a.png: the disk is full; free space on the device holding it and rerun"),
    (PermissionError(errno.EACCES, "Permission denied", "metrics/eval.json"),
     "render: metrics/eval.json: permission denied; give this user access to it and its "
     "directory, and rerun"),
    (OSError(errno.EROFS, "Read-only file system", "plots"),
     "render: plots: the file system is read-only; point the output (params.yaml `paths`) at a "
     "writable place, or remount it read-write, and rerun"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "models/progress.npz"),
     "render: models/progress.npz: no such file; run the stages that make it first "
     "(`dvc repro render` runs them)"),
    (FileNotFoundError("models/vae.keras: no such model; run `dvc repro train` first"),
     "render: models/vae.keras: no such model; run `dvc repro train` first"),
])
def test_os_errors_a_user_can_fix_name_the_file_and_the_fix(err, expected):
    assert failure_line(err, "render") == expected


def test_other_os_errors_are_bugs():
    assert failure_line(OSError(errno.EBADF, "Bad file descriptor"), "render") is None
    assert failure_line(ValueError("x"), "render") is None


def test_a_full_disk_names_the_output(tmp_path):
    line = failure_line(DiskFullError(tmp_path / "m.json"), "evaluate")
    assert line.startswith(f"evaluate: {tmp_path / 'm.json'}: the disk is full")


@pytest.mark.parametrize(("err", "code", "name"), [
    (KeyboardInterrupt(), 130, "SIGINT"), (Stopped(signal.SIGTERM), 143, "SIGTERM")])
def test_a_signal_is_one_line_and_128_plus_its_number(capsys, err, code, name):
    assert run_main(_raising(err), "train") == code
    assert capsys.readouterr().err.startswith(f"train: stopped by {name}; ")


# --- the real stage entry points, as subprocesses ------------------------------------------

TINY_DATA = {"data": {"val_size": 100, "train_limit": 200, "test_limit": 50},
             "classifier": {"epochs": 1, "batch_size": 50}}


@pytest.fixture(scope="module")
def source_repo(tmp_path_factory) -> Path:
    """A repo copy (what a commit holds) that tests clone; never run in."""
    return copy_repo(tmp_path_factory.mktemp("stage-exit") / "repo")


@pytest.fixture
def repo(source_repo, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(source_repo, tmp_path / "repo", symlinks=True))


def _truncate_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])


def _files(repo: Path, *dirs: str) -> dict[str, bytes]:
    """Every file under `dirs` of `repo` with its bytes, to compare before and after a stage."""
    found = {}
    for name in dirs:
        for path in sorted((repo / name).rglob("*")):
            if path.is_file():
                found[str(path.relative_to(repo))] = path.read_bytes()
    return found


# TensorFlow's C++ start-up lines (absl/glog format), printed on import whatever
# TF_CPP_MIN_LOG_LEVEL says: not the stage's output.
TF_NATIVE_LOG = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)"
                           r"|[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ )")


def _failed_in_one_line(result, stage: str, *words: str) -> str:
    """Assert exit code 1 and a single stderr line from `stage` holding `words`; return it."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines()
             if line.strip() and not TF_NATIVE_LOG.match(line)]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{stage}: "), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _stage(repo: Path, name: str):
    env = pipeline_env(repo, TF_CPP_MIN_LOG_LEVEL="3")
    return run_stage(repo, name, env, check=False, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["evaluate", "render", "train_classifier", "train",
                                   "register", "download"])
def test_an_invalid_param_fails_every_stage_in_one_line(repo, stage):
    set_params(repo, {"data": {"val_size": 70000}})
    before = _files(repo, "metrics", "models", "plots", "data")
    result = _stage(repo, stage)
    _failed_in_one_line(result, stage, "data.val_size", "70000", "lower it")
    assert _files(repo, "metrics", "models", "plots", "data") == before


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["evaluate", "render"])
def test_a_truncated_model_fails_the_stage_in_one_line(repo, tiny_vae_file, stage):
    write_random_mnist(repo, 300, 50)
    set_params(repo, TINY_DATA)
    _truncate_copy(tiny_vae_file, repo / "models" / "vae.keras")
    before = _files(repo, "metrics", "plots")
    result = _stage(repo, stage)
    _failed_in_one_line(result, stage, "models/vae.keras", "corrupt or truncated",
                        "dvc repro -f train")
    assert _files(repo, "metrics", "plots") == before


@pytest.mark.slow
def test_a_truncated_classifier_fails_evaluate_in_one_line(repo, tiny_vae_file, tmp_path):
    import shutil

    write_random_mnist(repo, 300, 50)
    set_params(repo, TINY_DATA)
    (repo / "models").mkdir(exist_ok=True)
    shutil.copyfile(tiny_vae_file, repo / "models" / "vae.keras")
    _truncate_copy(tiny_vae_file, repo / "models" / "classifier.keras")  # any .keras, cut
    before = _files(repo, "metrics")
    result = _stage(repo, "evaluate")
    _failed_in_one_line(result, "evaluate", "models/classifier.keras", "corrupt or truncated",
                        "dvc repro -f train_classifier")
    assert _files(repo, "metrics") == before


@pytest.mark.slow
def test_a_full_disk_fails_train_classifier_in_one_line_and_leaves_nothing(repo, tmpfs):
    disk = tmpfs("160k")  # the classifier's .keras file is ~1.6 MB: it cannot fit
    write_random_mnist(repo, 300, 50)
    set_params(repo, {**TINY_DATA, "paths": {
        "classifier": f"{disk}/classifier.keras",
        "classifier_metrics": f"{disk}/classifier.json",
        "classifier_facts": f"{disk}/classifier_facts.json"}})
    result = _stage(repo, "train_classifier")
    _failed_in_one_line(result, "train_classifier", f"{disk}/classifier.keras",
                        "the disk is full", "free space")
    assert list(Path(disk).iterdir()) == []

