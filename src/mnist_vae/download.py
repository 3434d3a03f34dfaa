"""Fetch the four MNIST files from verified sources, as arrays plus a provenance record.

Each file is tried source by source, in order: the public mirrors from params (checked
against the canonical SHA-256 below) or, when `MNIST_VAE_SOURCE` is set, only that directory
or http(s) URL (checked against its own `SHA256SUMS`). A checksum mismatch, an HTTP error or
an unreadable file moves on to the next source. A source that fails at the connection level
(refused, unresolvable, timed out, stalled) is skipped for the remaining files, and every
attempt gets at most `connect_timeout_s + read_timeout_s` to start answering, so an
unreachable network fails within `len(sources) * (connect + read)` seconds.

The provenance says what was verified: `"dataset": "MNIST"` only when all four decompressed
IDX payloads have canonical MNIST's SHA-256; any other well-formed files (a custom source
with its own manifest) are recorded as MNIST-format and unverified, with a warning.

HTTP goes through `requests`: separate connect and read timeouts, redirects and proxy
settings come with it, and its raw stream gives the `.gz` bytes exactly as served.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import requests
import urllib3
from tqdm import tqdm

from mnist_vae.config import DownloadConfig
from mnist_vae.files import atomic_paths
from mnist_vae.idx import IdxError, gunzip, parse_idx

log = logging.getLogger(__name__)

SOURCE_ENV = "MNIST_VAE_SOURCE"
MANIFEST = "SHA256SUMS"
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
MNIST_COUNTS: Mapping[str, int] = {"train": 60_000, "test": 10_000}
_CHUNK = 1 << 16

class MnistFile(NamedTuple):
    """One of the four files: its array name in `paths.data`, file name, IDX rank, SHA-256s."""

    key: str
    name: str
    ndim: int
    sha256: str  # of the .gz as the public mirrors serve it
    idx_sha256: str  # of the decompressed IDX payload: what makes the data MNIST


# The .gz sums are those of the files on the public mirrors in params.yaml. The IDX sums are
# of the same files decompressed; three equal the payloads of the local mirror
# (shared/datasets/mnist, re-gzipped originals), whose training images are a rebuild and differ,
# so the training images' sum is the one published alike by many independent MNIST loaders.
MNIST_FILES = (
    MnistFile("x_train", "train-images-idx3-ubyte.gz", 3,
              "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
              "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    MnistFile("y_train", "train-labels-idx1-ubyte.gz", 1,
              "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
              "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    MnistFile("x_test", "t10k-images-idx3-ubyte.gz", 3,
              "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
              "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    MnistFile("y_test", "t10k-labels-idx1-ubyte.gz", 1,
              "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
              "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
)
CANONICAL_SHA256: Mapping[str, str] = {f.name: f.sha256 for f in MNIST_FILES}
CANONICAL_IDX_SHA256: Mapping[str, str] = {f.name: f.idx_sha256 for f in MNIST_FILES}
VERIFIED = "MNIST"
UNVERIFIED = "MNIST-format, unverified"


_FILE_NAMES = ", ".join(f.name for f in MNIST_FILES)
_HINT_MIRRORS = (
    f"Check the network. Without internet access, set {SOURCE_ENV} to a directory or "
    f"http(s) URL holding the four files ({_FILE_NAMES}) and a {MANIFEST} manifest "
    f"(`sha256sum *.gz > {MANIFEST}` writes one), e.g. "
    f"`{SOURCE_ENV}=/path/to/mnist make repro` or "
    f"`{SOURCE_ENV}=https://files.example.org/mnist/ make repro`."
)
_HINT_CUSTOM = (
    f"{SOURCE_ENV} is set, so it replaces the public mirrors: check that it holds the four "
    f"files ({_FILE_NAMES}) and a {MANIFEST} manifest that matches them "
    f"(`sha256sum *.gz > {MANIFEST}`), or unset it to use the mirrors."
)


class DownloadError(RuntimeError):
    """MNIST could not be obtained or verified; the message says why and what to do."""


class _FileRejected(Exception):
    """This file from this source is unusable; try the next source."""


class _SourceFailed(_FileRejected):
    """The source failed as a whole; skip it for the remaining files."""


@dataclass(frozen=True)
class Source:
    """A place holding the four files: an http(s) base URL or a local directory."""

    location: str
    checksums: Mapping[str, str] | None = None  # None: read the source's SHA256SUMS
    custom: bool = False  # came from MNIST_VAE_SOURCE rather than params

    @property
    def is_url(self) -> bool:
        return self.location.startswith(("http://", "https://"))

    def locate(self, name: str) -> str:
        """The URL or path of file `name` in this source."""
        if self.is_url:
            return self.location.rstrip("/") + "/" + name
        return str(Path(self.location) / name)


@dataclass(frozen=True)
class Mnist:
    """The verified arrays (uint8) and the record of where each file came from."""

    arrays: dict[str, np.ndarray]
    provenance: dict


# --- choosing sources --------------------------------------------------------------------

def resolve_sources(config: DownloadConfig, environ: Mapping[str, str]) -> list[Source]:
    """`MNIST_VAE_SOURCE` alone when set (and not empty), else the mirrors from params."""
    custom = environ.get(SOURCE_ENV, "").strip()
    if custom:
        return [custom_source(custom)]
    return [Source(_base_url(url), CANONICAL_SHA256) for url in config.mirrors]


def custom_source(location: str) -> Source:
    """A source checked against its own SHA256SUMS: an http(s) URL or an existing directory."""
    if location.startswith(("http://", "https://")):
        return Source(_base_url(location), custom=True)
    path = Path(location).expanduser()
    if not path.is_dir():
        raise DownloadError(
            f"{SOURCE_ENV}={location} is neither an http(s):// URL nor an existing directory "
            f"(a relative path is taken from {Path.cwd()}). {_HINT_CUSTOM}"
        )
    return Source(str(path.resolve()), custom=True)


def _base_url(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def parse_manifest(text: str, where: str) -> dict[str, str]:
    """Read `sha256sum` output (`<hex>  <file>` or `<hex> *<file>`) into {file: hex}."""
    sums = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        digest, _, name = line.strip().partition(" ")
        name = name.lstrip(" ").removeprefix("*")
        if len(digest) != 64 or not name or any(c not in "0123456789abcdefABCDEF" for c in digest):
            raise ValueError(f"{where}: line {number} is not '<sha256>  <file>': {line!r}")
        sums[name] = digest.lower()
    return sums


# --- fetching ----------------------------------------------------------------------------

def download_mnist(
    sources: Sequence[Source], config: DownloadConfig, *, counts: Mapping[str, int] = MNIST_COUNTS
) -> Mnist:
    """Fetch, verify and decode the four files; `counts` are the expected images per split."""
    if not sources:
        raise DownloadError("no MNIST source to try")
    fetcher = _Fetcher(config)
    arrays, files = {}, {}
    for file in MNIST_FILES:
        arrays[file.key], files[file.name] = fetcher.fetch(file, sources)
    check_mnist(arrays, counts)
    unverified = [name for name, record in files.items() if not record["canonical_idx"]]
    if unverified:
        log.warning("warning: the data is MNIST-format but not verified MNIST: %s %s not match "
                    "the canonical MNIST SHA-256 once decompressed; provenance and the MLflow "
                    "tag data.provenance.verification.idx_sha256 say '%s'",
                    ", ".join(unverified), "does" if len(unverified) == 1 else "do", UNVERIFIED)
    provenance = {
        "dataset": UNVERIFIED if unverified else VERIFIED,
        "verification": {
            "idx_sha256": (f"{UNVERIFIED}: {', '.join(unverified)} differ from canonical MNIST"
                           if unverified else "all four IDX payloads are canonical MNIST"),
        },
        "created_utc": _utc_now(),
        "source_env": next((s.location for s in sources if s.custom), None),
        "files": files,
        "arrays": {k: {"shape": list(a.shape), "dtype": str(a.dtype)} for k, a in arrays.items()},
    }
    return Mnist(arrays, provenance)


def check_mnist(arrays: Mapping[str, np.ndarray], counts: Mapping[str, int] = MNIST_COUNTS):
    """Raise DownloadError unless images and labels have MNIST's shapes, dtype and classes."""
    problems = []
    for split, count in counts.items():
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if images.shape != (count, *IMAGE_SHAPE):
            problems.append(f"x_{split} has shape {images.shape}, expected {(count, *IMAGE_SHAPE)}")
        if labels.shape != (count,):
            problems.append(f"y_{split} has shape {labels.shape}, expected {(count,)}")
        if images.shape[:1] != labels.shape[:1]:
            problems.append(f"{images.shape[0]} {split} images but {labels.shape[0]} labels")
        for key, array in ((f"x_{split}", images), (f"y_{split}", labels)):
            if array.dtype != np.uint8:
                problems.append(f"{key} has dtype {array.dtype}, expected uint8")
        if labels.size and int(labels.max()) >= NUM_CLASSES:
            problems.append(f"y_{split} holds label {int(labels.max())}, expected 0-9")
    if problems:
        raise DownloadError("the files passed their checksums but are not MNIST: "
                            + "; ".join(problems))


class _Fetcher:
    """Tries sources file by file, remembering failed sources and loaded manifests."""

    def __init__(self, config: DownloadConfig):
        self.config = config
        self.failed: dict[str, str] = {}  # source location -> why it is skipped
        self.manifests: dict[str, Mapping[str, str]] = {}

    def fetch(self, file: MnistFile, sources: Sequence[Source]) -> tuple[np.ndarray, dict]:
        """The first verified copy of `file`, or DownloadError listing every source's failure."""
        reasons = []
        for number, source in enumerate(sources, start=1):
            if source.location in self.failed:
                reasons.append((source.location, f"skipped: {self.failed[source.location]}"))
                continue
            try:
                return self._fetch_from(source, file)
            except _SourceFailed as err:
                self.failed[source.location] = str(err)
                reasons.append((source.location, str(err)))
            except _FileRejected as err:
                reasons.append((source.location, str(err)))
            more = "; trying the next source" if number < len(sources) else ""
            log.warning("%s from %s: %s%s", file.name, source.location, reasons[-1][1], more)
        lines = [f"  - {where}: {why}" for where, why in reasons]
        hint = _HINT_CUSTOM if any(s.custom for s in sources) else _HINT_MIRRORS
        raise DownloadError(
            "\n".join([f"could not get {file.name} from any source:", *lines, hint])
        )

    def _fetch_from(self, source: Source, file: MnistFile) -> tuple[np.ndarray, dict]:
        expected = self._checksums(source).get(file.name)
        if expected is None:
            raise _FileRejected(f"{MANIFEST} has no entry for {file.name}")
        where = source.locate(file.name)
        started = _utc_now()
        data = self._read(where, file.name, progress=True)
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected:
            raise _FileRejected(f"SHA-256 mismatch: got {digest}, expected {expected}")
        try:
            payload = gunzip(data, file.name)
            array = parse_idx(payload, file.name.removesuffix(".gz"), ndim=file.ndim)
        except IdxError as err:
            raise _FileRejected(str(err)) from None
        log.info("%s: %d bytes, SHA-256 verified, from %s", file.name, len(data), where)
        idx_digest = hashlib.sha256(payload).hexdigest()
        return array, {
            "source": where,
            "checked_against": (source.locate(MANIFEST) if source.checksums is None
                                else "built-in table of canonical MNIST SHA-256"),
            "canonical_gz": digest == CANONICAL_SHA256[file.name],
            "gz_sha256": digest,
            "gz_bytes": len(data),
            "idx_sha256": idx_digest,
            "idx_bytes": len(payload),
            "canonical_idx": idx_digest == CANONICAL_IDX_SHA256[file.name],
            "retrieved_utc": started,
        }

    def _checksums(self, source: Source) -> Mapping[str, str]:
        if source.checksums is not None:
            return source.checksums
        if source.location not in self.manifests:
            where = source.locate(MANIFEST)
            try:
                text = self._read(where, MANIFEST, progress=False).decode("utf-8")
                self.manifests[source.location] = parse_manifest(text, where)
            except _SourceFailed:
                raise
            except (_FileRejected, UnicodeDecodeError, ValueError) as err:
                raise _SourceFailed(
                    f"no usable {MANIFEST} manifest at {where} ({err}); a custom source must "
                    f"list the SHA-256 of its files: create it with `sha256sum *.gz > {MANIFEST}`"
                ) from None
        return self.manifests[source.location]

    def _read(self, where: str, name: str, *, progress: bool) -> bytes:
        if not where.startswith(("http://", "https://")):
            try:
                return Path(where).read_bytes()
            except FileNotFoundError:
                raise _FileRejected("no such file") from None
            except OSError as err:
                raise _FileRejected(f"cannot read: {err.strerror or err}") from None
        response = self._get(where)
        with contextlib.closing(response):
            if response.status_code != 200:
                raise _FileRejected(f"HTTP {response.status_code} {response.reason}")
            size = int(response.headers.get("Content-Length") or 0) or None
            body = bytearray()
            with tqdm(total=size, desc=name, unit="B", unit_scale=True, unit_divisor=1024,
                      file=sys.stderr, disable=not progress) as bar:
                try:
                    # Raw bytes as served: a .gz sent with `Content-Encoding: gzip` stays gzipped.
                    for chunk in response.raw.stream(_CHUNK, decode_content=False):
                        body += chunk
                        bar.update(len(chunk))
                except (urllib3.exceptions.HTTPError, OSError) as err:
                    raise _SourceFailed(f"transfer broke off: {self._describe(err)}") from None
            return bytes(body)

    def _get(self, url: str) -> requests.Response:
        """GET `url` (streamed), bounding the wait for headers by connect + read timeout.

        The socket timeouts alone do not bound it: name resolution has no timeout, and the
        connect timeout applies to each address a host name resolves to, one after another.
        """
        connect, read = self.config.connect_timeout_s, self.config.read_timeout_s
        outcome: dict[str, object] = {}

        def get() -> None:
            try:
                outcome["response"] = requests.get(url, stream=True, timeout=(connect, read))
            except Exception as err:  # handed over to the waiting thread
                outcome["error"] = err

        worker = threading.Thread(target=get, name=f"GET {url}", daemon=True)
        worker.start()
        worker.join(connect + read)
        if worker.is_alive():
            raise _SourceFailed(f"no response within {connect + read:g} s")
        error = outcome.get("error")
        if isinstance(error, requests.RequestException):
            raise _SourceFailed(self._describe(error))
        if error is not None:
            raise error
        return outcome["response"]

    def _describe(self, err: BaseException) -> str:
        """A short reason for a transport failure ('connection refused'), not a repr chain."""
        causes = _causes(err)
        if isinstance(err, requests.ConnectTimeout):
            return f"connection timed out after {self.config.connect_timeout_s:g} s"
        if any(isinstance(c, (requests.ReadTimeout, urllib3.exceptions.ReadTimeoutError,
                              TimeoutError)) for c in causes):
            return f"no data for {self.config.read_timeout_s:g} s (read timeout)"
        if any(isinstance(c, urllib3.exceptions.NameResolutionError) for c in causes):
            return "cannot resolve the host name"
        if isinstance(err, requests.exceptions.SSLError):
            return f"TLS error: {causes[-1]}"
        for cause in causes:
            if isinstance(cause, OSError) and cause.errno:
                return os.strerror(cause.errno).lower()
        return str(causes[-1]) or type(causes[-1]).__name__


def _causes(err: BaseException) -> list[BaseException]:
    """`err` and what it wraps: requests -> urllib3 (`.reason`) -> socket errors."""
    chain = [err]
    while len(chain) < 20:
        current = chain[-1]
        wrapped = getattr(current, "reason", None)
        if not isinstance(wrapped, BaseException):
            wrapped = current.__cause__ or current.__context__
        if wrapped is None and current.args and isinstance(current.args[0], BaseException):
            wrapped = current.args[0]
        if wrapped is None or wrapped in chain:
            break
        chain.append(wrapped)
    return chain


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- writing -----------------------------------------------------------------------------

def save_mnist(mnist: Mnist, data_path: str | Path, provenance_path: str | Path) -> None:
    """Write the arrays (npz) and provenance (JSON) together, atomically: both or neither."""
    with atomic_paths(data_path, provenance_path) as (data_tmp, provenance_tmp):
        with open(data_tmp, "wb") as f:
            np.savez_compressed(f, **mnist.arrays)  # same arrays, same bytes
            _sync(f)
        with open(provenance_tmp, "w") as f:
            f.write(json.dumps(mnist.provenance, indent=2) + "\n")
            _sync(f)


def _sync(f) -> None:
    f.flush()
    os.fsync(f.fileno())
