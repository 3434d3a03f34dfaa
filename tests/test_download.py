"""The download stage: verified sources, fallback, bounded failure, atomic outputs.

Unit tests serve tiny MNIST-shaped IDX files (60 train / 10 test images) from HTTP servers
on 127.0.0.1 or a directory; the slow test runs `dvc repro download` on the real local mirror.
"""

import datetime as dt
import gzip
import hashlib
import json
import logging
import socket
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from helpers import (
    FileServer,
    clone_repo,
    pipeline_env,
    run,
    run_dvc,
    unanswered_port,
    unused_port,
)
from idx_writer import encode_idx
from mnist_vae.config import DownloadConfig
from mnist_vae.download import (
    CANONICAL_IDX_SHA256,
    CANONICAL_SHA256,
    MANIFEST,
    MNIST_FILES,
    SOURCE_ENV,
    UNVERIFIED,
    DownloadError,
    Mnist,
    Source,
    check_mnist,
    custom_source,
    download_mnist,
    parse_manifest,
    resolve_sources,
    save_mnist,
)

COUNTS = {"train": 60, "test": 10}
CONFIG = DownloadConfig(connect_timeout_s=0.5, read_timeout_s=0.5)
NAMES = [f.name for f in MNIST_FILES]


def fake_mnist(seed: int = 0) -> dict[str, np.ndarray]:
    """Random MNIST-shaped arrays with COUNTS images per split."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in COUNTS.items():
        arrays[f"x_{split}"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"y_{split}"] = rng.integers(0, 10, n, dtype=np.uint8)
    return arrays


ARRAYS = fake_mnist()
FILES = {f.name: gzip.compress(encode_idx(ARRAYS[f.key]), mtime=0) for f in MNIST_FILES}
SUMS = {name: hashlib.sha256(data).hexdigest() for name, data in FILES.items()}


def manifest_text(sums: dict[str, str]) -> str:
    return "".join(f"{digest}  {name}\n" for name, digest in sums.items())


def write_source_dir(directory: Path, files=FILES, manifest: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    if manifest is not None:
        (directory / MANIFEST).write_text(manifest)
    return directory


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Tests talk to 127.0.0.1 only: never route them through a proxy set in the env."""
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setenv("no_proxy", "*")


@pytest.fixture
def serve():
    """Start FileServers (same arguments); all are closed when the test ends."""
    servers = []

    def start(files=FILES, **kwargs) -> FileServer:
        servers.append(FileServer(files, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def mirror(url: str) -> Source:
    """A source checked against the test files' SHA-256, as a public mirror is against MNIST's."""
    return Source(url, SUMS)


def fetch(*sources: Source) -> Mnist:
    return download_mnist(list(sources), CONFIG, counts=COUNTS)


def assert_is_fake_mnist(mnist: Mnist) -> None:
    assert set(mnist.arrays) == set(ARRAYS)
    for key, array in ARRAYS.items():
        np.testing.assert_array_equal(mnist.arrays[key], array)
        assert mnist.arrays[key].dtype == np.uint8


def sources_used(mnist: Mnist) -> dict[str, str]:
    return {name: record["source"] for name, record in mnist.provenance["files"].items()}


def warnings_about(caplog, location: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and location in r.getMessage()]


# --- success -----------------------------------------------------------------------------

def test_download_from_a_mirror_verifies_decodes_and_records_provenance(serve, capsys):
    server = serve()
    mnist = fetch(mirror(server.url))
    assert_is_fake_mnist(mnist)
    assert sorted(server.requests) == sorted(NAMES)
    for name, record in mnist.provenance["files"].items():
        payload = gzip.decompress(FILES[name])
        assert record["source"] == server.url + name
        assert record["gz_sha256"] == SUMS[name]
        assert record["gz_bytes"] == len(FILES[name])
        assert record["idx_sha256"] == hashlib.sha256(payload).hexdigest()
        assert record["idx_bytes"] == len(payload)
        assert record["canonical_gz"] is False
        retrieved = dt.datetime.fromisoformat(record["retrieved_utc"])
        assert retrieved.utcoffset() == dt.timedelta(0)
    assert mnist.provenance["arrays"]["x_train"] == {"shape": [60, 28, 28], "dtype": "uint8"}
    assert "train-images-idx3-ubyte.gz" in capsys.readouterr().err  # the progress bar


def test_canonical_checksums_cover_the_four_files():
    assert set(CANONICAL_SHA256) == set(NAMES) and len(NAMES) == 4
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in CANONICAL_SHA256.values())


# --- fallback ----------------------------------------------------------------------------

def test_bad_checksum_falls_back_to_the_next_source(serve, caplog):
    data = bytearray(FILES[NAMES[0]])
    data[100] ^= 0xFF
    corrupt = dict(FILES, **{NAMES[0]: bytes(data)})
    first, second = serve(corrupt), serve()
    mnist = fetch(mirror(first.url), mirror(second.url))
    assert_is_fake_mnist(mnist)
    used = sources_used(mnist)
    assert used[NAMES[0]] == second.url + NAMES[0]
    assert all(used[name] == first.url + name for name in NAMES[1:])
    [warning] = warnings_about(caplog, first.url)
    assert f"{NAMES[0]} from {first.url}: SHA-256 mismatch" in warning
    assert warning.endswith("trying the next source")


@pytest.mark.parametrize("status", [404, 500])
def test_http_error_falls_back_to_the_next_source(serve, caplog, status):
    first, second = serve(status={NAMES[2]: status}), serve()
    used = sources_used(fetch(mirror(first.url), mirror(second.url)))
    assert used[NAMES[2]] == second.url + NAMES[2]
    assert used[NAMES[3]] == first.url + NAMES[3]  # an HTTP error only rejects that file
    [warning] = warnings_about(caplog, first.url)
    assert f"HTTP {status}" in warning


def test_refused_connection_skips_the_source_for_the_remaining_files(serve, caplog):
    dead = f"http://127.0.0.1:{unused_port()}/mnist/"
    server = serve()
    mnist = fetch(mirror(dead), mirror(server.url))
    assert_is_fake_mnist(mnist)
    assert warnings_about(caplog, dead) == [
        f"{NAMES[0]} from {dead}: connection refused; trying the next source"
    ]


@pytest.mark.parametrize("stall", ["headers", "body"])
def test_stalled_server_is_bounded_by_the_read_timeout(serve, caplog, stall):
    stalled, good = serve(stall=stall), serve()
    mnist = fetch(mirror(stalled.url), mirror(good.url))
    assert_is_fake_mnist(mnist)
    assert stalled.requests == [NAMES[0]]  # not asked again for the other three files
    [warning] = warnings_about(caplog, stalled.url)
    assert "no data for 0.5 s (read timeout)" in warning


def test_connect_timeout_skips_the_source(serve, caplog):
    good = serve()
    with unanswered_port() as port:
        hung = f"http://127.0.0.1:{port}/mnist/"
        assert_is_fake_mnist(fetch(mirror(hung), mirror(good.url)))
    [warning] = warnings_about(caplog, hung)
    assert "connection timed out after 0.5 s" in warning


def test_slow_name_resolution_is_bounded_by_connect_plus_read_timeout(serve, monkeypatch, caplog):
    """Socket timeouts do not cover DNS; the wait for an answer is bounded anyway."""
    real_getaddrinfo = socket.getaddrinfo

    def slow_getaddrinfo(host, *args, **kwargs):
        if host == "slow-dns.invalid":
            time.sleep(3)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_getaddrinfo)
    good = serve()
    slow = "http://slow-dns.invalid/mnist/"
    assert_is_fake_mnist(fetch(mirror(slow), mirror(good.url)))
    [warning] = warnings_about(caplog, slow)
    assert "no response within 1 s" in warning


# --- every source fails --------------------------------------------------------------------

def test_all_sources_failing_lists_each_source_and_why(serve):
    missing, broken = serve(status={NAMES[0]: 404}), serve(status={NAMES[0]: 500})
    refused = f"http://127.0.0.1:{unused_port()}/mnist/"
    with pytest.raises(DownloadError) as err:
        fetch(mirror(missing.url), mirror(refused), mirror(broken.url))
    message = str(err.value)
    assert message.startswith(f"could not get {NAMES[0]} from any source:")
    assert f"  - {missing.url}: HTTP 404 Not Found" in message
    assert f"  - {refused}: connection refused" in message
    assert f"  - {broken.url}: HTTP 500 Internal Server Error" in message
    assert f"set {SOURCE_ENV} to a directory or http(s) URL" in message
    assert "check the network" in message.lower()


def test_unreachable_network_fails_in_bounded_time(serve):
    """Every source stalls: each is asked once, then skipped, so the failure comes quickly."""
    stalled = [serve(stall="headers") for _ in range(3)]
    start = time.monotonic()
    with pytest.raises(DownloadError, match="no data for 0.5 s"):
        fetch(*(mirror(s.url) for s in stalled))
    elapsed = time.monotonic() - start
    assert [s.requests for s in stalled] == [[NAMES[0]]] * 3
    # bound: 3 sources x (connect + read); without the skipping it would be 12 x read timeout
    assert elapsed < 3 * (CONFIG.connect_timeout_s + CONFIG.read_timeout_s) + 1


# --- MNIST_VAE_SOURCE: custom sources with a manifest ----------------------------------------

def test_directory_source_with_manifest(tmp_path):
    directory = write_source_dir(tmp_path / "mnist", manifest=manifest_text(SUMS))
    mnist = fetch(custom_source(str(directory)))
    assert_is_fake_mnist(mnist)
    record = mnist.provenance["files"][NAMES[0]]
    assert record["source"] == str(directory / NAMES[0])
    assert record["checked_against"] == str(directory / MANIFEST)
    assert mnist.provenance["source_env"] == str(directory)


def test_directory_source_without_manifest_is_refused(tmp_path):
    directory = write_source_dir(tmp_path / "mnist")
    with pytest.raises(DownloadError) as err:
        fetch(custom_source(str(directory)))
    message = str(err.value)
    assert f"no usable {MANIFEST} manifest at {directory / MANIFEST}" in message
    assert "sha256sum *.gz > SHA256SUMS" in message
    assert f"{SOURCE_ENV} is set, so it replaces the public mirrors" in message


def test_directory_source_with_a_wrong_manifest_entry_is_rejected(tmp_path):
    sums = dict(SUMS, **{NAMES[1]: "0" * 64})
    directory = write_source_dir(tmp_path / "mnist", manifest=manifest_text(sums))
    with pytest.raises(DownloadError, match=f"{NAMES[1]} from any source:\n.*SHA-256 mismatch"):
        fetch(custom_source(str(directory)))


def test_manifest_without_an_entry_for_a_file_is_rejected(tmp_path):
    sums = {k: v for k, v in SUMS.items() if k != NAMES[3]}
    directory = write_source_dir(tmp_path / "mnist", manifest=manifest_text(sums))
    with pytest.raises(DownloadError, match=f"{MANIFEST} has no entry for {NAMES[3]}"):
        fetch(custom_source(str(directory)))


def test_url_source_with_manifest(serve):
    server = serve({**FILES, MANIFEST: manifest_text(SUMS).encode()})
    mnist = fetch(custom_source(server.url))
    assert_is_fake_mnist(mnist)
    assert mnist.provenance["files"][NAMES[0]]["checked_against"] == server.url + MANIFEST
    assert server.requests[0] == MANIFEST and server.requests.count(MANIFEST) == 1


def test_url_source_without_manifest_is_refused(serve):
    server = serve()
    with pytest.raises(DownloadError, match=f"no usable {MANIFEST} manifest .*HTTP 404"):
        fetch(custom_source(server.url))
    assert server.requests == [MANIFEST]  # no data file is fetched unverifiable


def test_manifest_accepts_sha256sum_formats_and_rejects_garbage():
    digest = "a" * 64
    text = f"# comment\n{digest}  one.gz\n{digest.upper()} *two.gz\n\n"
    assert parse_manifest(text, "SUMS") == {"one.gz": digest, "two.gz": digest}
    with pytest.raises(ValueError, match="SUMS: line 1 is not"):
        parse_manifest("deadbeef  one.gz\n", "SUMS")


# --- choosing sources ----------------------------------------------------------------------

def test_mirrors_are_used_and_checked_against_canonical_sums_by_default():
    sources = resolve_sources(DownloadConfig(mirrors=("https://a.example/mnist",)), {})
    assert sources == [Source("https://a.example/mnist/", CANONICAL_SHA256)]


@pytest.mark.parametrize("value", ["", "  "])
def test_empty_source_variable_means_unset(value):
    sources = resolve_sources(DownloadConfig(), {SOURCE_ENV: value})
    assert [s.location for s in sources] == list(DownloadConfig().mirrors)


def test_source_variable_replaces_the_mirrors(tmp_path):
    assert resolve_sources(DownloadConfig(), {SOURCE_ENV: str(tmp_path)}) == [
        Source(str(tmp_path.resolve()), None, custom=True)
    ]
    assert resolve_sources(DownloadConfig(), {SOURCE_ENV: "http://h:8/m"}) == [
        Source("http://h:8/m/", None, custom=True)
    ]


def test_source_variable_naming_nothing_is_an_error(tmp_path):
    with pytest.raises(DownloadError, match="neither an http.s.:// URL nor an existing directory"):
        resolve_sources(DownloadConfig(), {SOURCE_ENV: str(tmp_path / "nope")})


# --- sanity of the decoded data --------------------------------------------------------------

@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"x_train": np.zeros((60, 28, 27), np.uint8)}, "x_train has shape (60, 28, 27)"),
        ({"y_test": np.zeros(9, np.uint8)}, "10 test images but 9 labels"),
        ({"y_train": np.full(60, 10, np.uint8)}, "y_train holds label 10, expected 0-9"),
        ({"x_test": np.zeros((10, 28, 28), np.int16)}, "x_test has dtype int16"),
    ],
)
def test_data_that_is_not_mnist_is_rejected(change, message):
    with pytest.raises(DownloadError, match="not MNIST: .*" + message.replace("(", r"\(")
                       .replace(")", r"\)")):
        check_mnist({**ARRAYS, **change}, COUNTS)


def test_true_mnist_counts_are_the_default():
    with pytest.raises(DownloadError, match=r"x_train has shape \(60, 28, 28\), expected "
                                            r"\(60000, 28, 28\)"):
        check_mnist(ARRAYS)


# --- atomic outputs ------------------------------------------------------------------------

def test_outputs_round_trip_and_the_npz_is_byte_for_byte_reproducible(tmp_path, monkeypatch):
    mnist = Mnist(ARRAYS, {"dataset": "MNIST"})
    data, provenance = tmp_path / "data" / "mnist.npz", tmp_path / "data" / "provenance.json"
    save_mnist(mnist, data, provenance)
    with np.load(data) as loaded:
        assert set(loaded.files) == set(ARRAYS)
        for key, array in ARRAYS.items():
            np.testing.assert_array_equal(loaded[key], array)
    assert json.loads(provenance.read_text()) == {"dataset": "MNIST"}
    first = data.read_bytes()
    later = time.localtime(time.time() + 86_400 * 400)
    monkeypatch.setattr(zipfile.time, "localtime", lambda *_: later)  # zip entries' clock
    save_mnist(mnist, data, provenance)
    assert data.read_bytes() == first
    assert sorted(p.name for p in data.parent.iterdir()) == ["mnist.npz", "provenance.json"]


def test_failed_write_leaves_no_output_and_no_temp_file(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(OSError):
        save_mnist(Mnist(ARRAYS, {}), tmp_path / "mnist.npz", blocker / "provenance.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-dir"]


def test_failed_write_keeps_previous_outputs(tmp_path):
    data, provenance = tmp_path / "mnist.npz", tmp_path / "provenance.json"
    save_mnist(Mnist(ARRAYS, {"run": 1}), data, provenance)
    before = data.read_bytes()
    with pytest.raises(TypeError):
        save_mnist(Mnist(ARRAYS, {"not json": object()}), data, provenance)
    assert data.read_bytes() == before
    assert json.loads(provenance.read_text()) == {"run": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist.npz", "provenance.json"]


# --- the stage -----------------------------------------------------------------------------

def test_stage_failure_is_one_clean_message_with_no_outputs(tmp_path, serve, repo_root):
    """All mirrors fail: exit 1, a message naming every source and the fix, no files, no trace."""
    broken, refused = serve(status={n: 500 for n in NAMES}), unused_port()
    (tmp_path / "params.yaml").write_text(
        "download:\n  mirrors:\n"
        f"    - {broken.url}\n    - http://127.0.0.1:{refused}/mnist/\n"
        "  connect_timeout_s: 0.5\n  read_timeout_s: 0.5\n"
    )
    result = run([sys.executable, repo_root / "stages" / "download.py"], tmp_path,
                 pipeline_env(repo_root), check=False, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"  - {broken.url}: HTTP 500" in result.stderr
    assert f"  - http://127.0.0.1:{refused}/mnist/: connection refused" in result.stderr
    assert "set MNIST_VAE_SOURCE to a directory or http(s) URL" in result.stderr
    assert "`MNIST_VAE_SOURCE=/path/to/mnist make repro`" in result.stderr
    assert "../shared" not in result.stderr  # only this repository's dev machines have it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_stage_writes_both_outputs_from_a_source_directory(tmp_path, repo_root):
    """The stage wires params and MNIST_VAE_SOURCE through; the real counts reject fake data."""
    source = write_source_dir(tmp_path / "src", manifest=manifest_text(SUMS))
    work = tmp_path / "work"
    work.mkdir()
    (work / "params.yaml").write_text("download:\n  connect_timeout_s: 0.5\n")
    result = run([sys.executable, repo_root / "stages" / "download.py"], work,
                 pipeline_env(repo_root, MNIST_VAE_SOURCE=str(source)), check=False, timeout=60)
    assert result.returncode == 1  # 60 images are not MNIST's 60000
    assert "not MNIST: x_train has shape (60, 28, 28), expected (60000, 28, 28)" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in work.iterdir()) == ["params.yaml"]


# --- end to end ----------------------------------------------------------------------------

@pytest.mark.slow
def test_dvc_repro_download_from_the_local_mirror(downloaded_repo, shared_mirror, tmp_path):
    repo = downloaded_repo
    with np.load(repo / "data" / "mnist.npz") as data:
        shapes = {key: data[key].shape for key in data.files}
        assert shapes == {"x_train": (60000, 28, 28), "y_train": (60000,),
                          "x_test": (10000, 28, 28), "y_test": (10000,)}
        for key in data.files:
            assert data[key].dtype == np.uint8
        for key in ("y_train", "y_test"):
            assert set(np.unique(data[key])) == set(range(10))
        assert 0.12 < data["x_train"].mean() / 255 < 0.14  # MNIST's training mean is 0.1307

    provenance = json.loads((repo / "data" / "provenance.json").read_text())
    manifest = parse_manifest((shared_mirror / MANIFEST).read_text(), MANIFEST)
    assert provenance["source_env"] == str(shared_mirror.resolve())
    assert set(provenance["files"]) == set(NAMES)
    for name, record in provenance["files"].items():
        gz = (shared_mirror / name).read_bytes()
        assert record["source"] == str(shared_mirror.resolve() / name)
        assert record["gz_sha256"] == manifest[name] == hashlib.sha256(gz).hexdigest()
        assert record["idx_sha256"] == hashlib.sha256(gzip.decompress(gz)).hexdigest()
        assert record["gz_bytes"] == len(gz)

    env = pipeline_env(repo, MNIST_VAE_SOURCE=str(shared_mirror))
    again = run_dvc(repo, "repro", "download", env=env)
    assert "Stage 'download' didn't change, skipping" in again.stdout
    assert "Running stage" not in again.stdout

    clone = clone_repo(repo, tmp_path / "clone")  # what later e2e tests start from
    status = run_dvc(clone, "status", "download", env=pipeline_env(clone))
    assert "Data and pipelines are up to date." in status.stdout


# --- what the provenance claims ------------------------------------------------------------

def test_well_formed_but_not_canonical_files_are_recorded_as_unverified(serve, caplog):
    server = serve(files={**FILES, MANIFEST: manifest_text(SUMS).encode()})
    with caplog.at_level(logging.WARNING):
        mnist = fetch(custom_source(server.url))
    assert_is_fake_mnist(mnist)
    assert mnist.provenance["dataset"] == UNVERIFIED != "MNIST"
    assert mnist.provenance["verification"]["idx_sha256"].startswith(f"{UNVERIFIED}: ")
    for name in NAMES:
        assert name in mnist.provenance["verification"]["idx_sha256"]
        assert mnist.provenance["files"][name]["canonical_idx"] is False
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("warning: the data is MNIST-format but not verified MNIST")


def test_the_local_mirror_is_verified_file_by_file(shared_mirror, caplog):
    """Its test files and training labels are MNIST's bytes; its training images are a rebuild."""
    with caplog.at_level(logging.WARNING):
        mnist = download_mnist([custom_source(str(shared_mirror))], CONFIG)
    files = mnist.provenance["files"]
    assert {name: files[name]["canonical_idx"] for name in NAMES} == {
        "train-images-idx3-ubyte.gz": False, "train-labels-idx1-ubyte.gz": True,
        "t10k-images-idx3-ubyte.gz": True, "t10k-labels-idx1-ubyte.gz": True}
    assert mnist.provenance["dataset"] == UNVERIFIED
    assert mnist.provenance["verification"]["idx_sha256"] == (
        f"{UNVERIFIED}: train-images-idx3-ubyte.gz differ from canonical MNIST")
    assert any("train-images-idx3-ubyte.gz does not match the canonical MNIST SHA-256"
               in r.getMessage() for r in caplog.records)


def test_the_canonical_idx_table_is_consistent_with_the_local_mirrors_real_files(shared_mirror):
    for file in MNIST_FILES:
        payload = gzip.decompress((shared_mirror / file.name).read_bytes())
        matches = hashlib.sha256(payload).hexdigest() == CANONICAL_IDX_SHA256[file.name]
        assert matches == (file.key != "x_train")


def test_mnist_is_claimed_only_when_every_payload_is_in_the_canonical_table(
        serve, monkeypatch, caplog):
    """The table decides: with the fake files' payload sums in it, they count as verified."""
    payload_sums = {name: hashlib.sha256(gzip.decompress(data)).hexdigest()
                    for name, data in FILES.items()}
    monkeypatch.setattr("mnist_vae.download.CANONICAL_IDX_SHA256", payload_sums)
    with caplog.at_level(logging.WARNING):
        mnist = fetch(mirror(serve().url))
    assert mnist.provenance["dataset"] == "MNIST"
    assert mnist.provenance["verification"]["idx_sha256"] == (
        "all four IDX payloads are canonical MNIST")
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_the_download_stage_warns_and_the_run_tags_carry_the_verdict(tmp_path, repo_root,
                                                                      shared_mirror):
    from mnist_vae.provenance import provenance_checksums

    work = tmp_path / "work"
    work.mkdir()
    (work / "params.yaml").write_text("download:\n  connect_timeout_s: 0.5\n")
    result = run([sys.executable, repo_root / "stages" / "download.py"], work,
                 pipeline_env(repo_root, MNIST_VAE_SOURCE=str(shared_mirror)), timeout=120)
    assert ("download: warning: the data is MNIST-format but not verified MNIST: "
            "train-images-idx3-ubyte.gz does not match") in result.stderr
    provenance = json.loads((work / "data" / "provenance.json").read_text())
    assert provenance["dataset"] == UNVERIFIED
    tags = provenance_checksums(work / "data" / "provenance.json")
    assert tags["verification.idx_sha256"] == provenance["verification"]["idx_sha256"]
