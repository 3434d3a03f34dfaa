"""Atomic outputs: the target appears whole or not at all; saved models carry no save time."""

import errno
import json
import os
import sys
import zipfile

import pytest

from mnist_vae.files import (
    FIXED_ZIP_TIME,
    DiskFullError,
    atomic_path,
    atomic_paths,
    canonical_keras_file,
    write_json,
    write_json_files,
)


def test_write_json_creates_parents_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "metrics" / "eval.json"
    write_json(path, {"test": {"neg_elbo": 80.5}})
    assert json.loads(path.read_text()) == {"test": {"neg_elbo": 80.5}}
    assert [p.name for p in path.parent.iterdir()] == ["eval.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "model.keras"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        assert tmp.suffix == ".keras" and tmp.parent == tmp_path
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def test_several_outputs_appear_together_or_not_at_all(tmp_path):
    data, provenance = tmp_path / "data" / "mnist.npz", tmp_path / "data" / "provenance.json"
    with pytest.raises(RuntimeError), atomic_paths(data, provenance) as (data_tmp, prov_tmp):
        data_tmp.write_text("arrays")
        prov_tmp.write_text("{}")
        raise RuntimeError("killed after both temp files were written")
    assert sorted(p.name for p in data.parent.iterdir()) == []
    with atomic_paths(data, provenance) as (data_tmp, prov_tmp):
        data_tmp.write_text("arrays")
        prov_tmp.write_text("{}")
    assert data.read_text() == "arrays" and provenance.read_text() == "{}"
    assert sorted(p.name for p in data.parent.iterdir()) == ["mnist.npz", "provenance.json"]


# --- a full disk: one line naming the output, nothing partial left ------------------------------

@pytest.fixture
def small_disk(tmpfs):
    """A real 1 MiB tmpfs."""
    return tmpfs("1m")


def test_a_full_disk_is_one_line_naming_the_output_and_leaves_no_partial_file(small_disk):
    path = small_disk / "metrics" / "eval.json"
    with pytest.raises(DiskFullError) as err:
        write_json(path, {"x": "y" * 2_000_000})
    assert str(err.value) == (f"{path}: the disk is full (no space left on the device holding "
                              f"{path.parent}); nothing was written: free space there and rerun")
    assert err.value.errno == errno.ENOSPC and isinstance(err.value, OSError)
    assert list(path.parent.iterdir()) == []


def test_outputs_written_together_are_all_kept_as_they_were_when_one_does_not_fit(small_disk):
    metrics, facts = small_disk / "metrics" / "eval.json", small_disk / "metrics" / "facts.json"
    write_json(metrics, {"old": 1})
    with pytest.raises(DiskFullError) as err:
        write_json_files({metrics: {"new": 1}, facts: {"x": "y" * 2_000_000}})
    assert err.value.path == facts
    assert json.loads(metrics.read_text()) == {"old": 1}
    assert [p.name for p in metrics.parent.iterdir()] == ["eval.json"]
    write_json_files({metrics: {"new": 1}, facts: {"x": 1}})
    assert json.loads(metrics.read_text()) == {"new": 1} and json.loads(facts.read_text())


def test_a_full_disk_keeps_the_previous_output(small_disk):
    path = small_disk / "model.keras"
    path.write_text("old")
    with pytest.raises(DiskFullError), atomic_path(path) as tmp, tmp.open("wb") as f:
        f.write(os.urandom(2_000_000))
    assert path.read_text() == "old"
    assert [p.name for p in small_disk.iterdir()] == ["model.keras"]


def test_the_download_stage_reports_a_full_disk_in_one_line(small_disk, tmp_path, repo_root,
                                                            shared_mirror):
    from helpers import pipeline_env, run

    work = tmp_path / "work"
    work.mkdir()
    (work / "params.yaml").write_text(
        f"paths:\n  data: {small_disk}/mnist.npz\n  provenance: {small_disk}/provenance.json\n")
    result = run([sys.executable, repo_root / "stages" / "download.py"], work,
                 pipeline_env(repo_root, MNIST_VAE_SOURCE=str(shared_mirror)), check=False,
                 timeout=300)
    assert result.returncode == 1
    assert f"download: {small_disk}/provenance.json: the disk is full" in result.stderr \
        or f"download: {small_disk}/mnist.npz: the disk is full" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(small_disk.iterdir()) == []


def _keras_like_zip(path, saved: str, when: tuple, address: int) -> None:
    shared = {"class_name": "DTypePolicy", "shared_object_id": address}
    config = {"layers": [{"dtype": shared}, {"dtype": shared},
                         {"dtype": {"class_name": "DTypePolicy", "shared_object_id": 7}}]}
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(zipfile.ZipInfo("metadata.json", date_time=when),
                   json.dumps({"keras_version": "3.15.1", "date_saved": saved}))
        z.writestr(zipfile.ZipInfo("config.json", date_time=when), json.dumps(config))
        z.writestr(zipfile.ZipInfo("model.weights.h5", date_time=when), b"weights")


def test_canonical_keras_file_makes_two_saves_of_one_model_identical(tmp_path):
    first, second = tmp_path / "a.keras", tmp_path / "b.keras"
    _keras_like_zip(first, "2026-12-01@04:19:40", (2026, 12, 1, 4, 19, 40), 140545963351120)
    _keras_like_zip(second, "2026-12-01@05:00:02", (2026, 12, 1, 5, 0, 2), 139833823706384)
    assert first.read_bytes() != second.read_bytes()
    for path in (first, second):
        canonical_keras_file(path)
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as z:
        assert {i.date_time for i in z.infolist()} == {FIXED_ZIP_TIME}
        assert z.read("model.weights.h5") == b"weights"
        metadata = json.loads(z.read("metadata.json"))
        layers = json.loads(z.read("config.json"))["layers"]
    assert metadata == {"keras_version": "3.15.1", "date_saved": "1980-01-01@00:00:00"}
    # still shared where it was shared, distinct where it was distinct
    assert [layer["dtype"]["shared_object_id"] for layer in layers] == [1, 1, 2]
