"""Verified, resumable downloads of raw dataset files into ``resources/``.

:func:`fetch` puts one upstream file at ``<cache_dir>/downloads/<name>``:

- an existing file whose sha256 matches is used as is (no network);
- otherwise the bytes are streamed into ``<name>.part``; an interrupted download resumes
  from the ``.part`` file's length with an HTTP ``Range`` request (a server that ignores
  it and sends the whole file is handled: the ``.part`` file is restarted);
- the finished file's sha256 is checked before it is moved into place (``os.replace``),
  so a reader never sees a half-written or unverified file. A mismatch raises
  :class:`ChecksumError` naming the file, the expected and the actual sha256, and moves
  the bad bytes aside to ``<name>.bad-<sha256 prefix>`` (nothing else is touched);
- with no network (any ``URLError``/``OSError`` while connecting or reading) the error
  (:class:`DownloadError`) names the URL, the path to put the file at by hand and its
  sha256, and keeps the ``.part`` file for a later resume.

Where upstream publishes no checksum, the :class:`RemoteFile` has ``sha256=None``: the
download is accepted, its sha256 is written next to it (``<name>.sha256``) and printed,
and later uses of the file are checked against that recorded value. The dataset card and
``docs/datasets.md`` say which files are pinned and which are recorded on first download.

Concurrent downloads of one file (parallel Snakemake jobs) are serialised by an
``fcntl`` lock on ``<name>.lock``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "RemoteFile",
    "DownloadError",
    "ChecksumError",
    "download_dir",
    "sha256_of",
    "fetch",
]

_CHUNK = 1 << 20  # bytes read per iteration


@dataclass(frozen=True)
class RemoteFile:
    """One upstream file: ``url``, local file ``name`` and its published ``sha256``
    (lower-case hex; ``None`` when upstream publishes none)."""

    url: str
    name: str
    sha256: str | None = None
    size: int | None = None  # bytes, when known (informational)


class DownloadError(RuntimeError):
    """The file could not be fetched; the message says how to put it in place by hand."""


class ChecksumError(RuntimeError):
    """A downloaded or hand-placed file does not have the expected sha256."""


def download_dir(cache_dir: str | os.PathLike = "resources") -> Path:
    """Where raw downloads live: ``<cache_dir>/downloads``."""
    return Path(cache_dir) / "downloads"


def sha256_of(path: str | os.PathLike) -> str:
    """Lower-case hex sha256 of the file at ``path`` (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _recorded_sha(path: Path) -> str | None:
    record = path.with_name(path.name + ".sha256")
    if record.is_file():
        text = record.read_text().split()
        return text[0].lower() if text else None
    return None


def _by_hand(remote: RemoteFile, path: Path) -> str:
    sha = remote.sha256 or _recorded_sha(path)
    sha_text = (f"sha256 {sha}" if sha else
                "sha256 not published upstream (it is recorded on first download)")
    return (f"download {remote.url} yourself and put it at {path} ({sha_text}); "
            "then rerun")


def _move_aside(path: Path, actual: str) -> Path:
    name = path.name.removesuffix(".part")
    aside = path.with_name(f"{name}.bad-{actual[:12]}")
    os.replace(path, aside)
    return aside


def _check(path: Path, remote: RemoteFile, expected: str | None) -> None:
    """Raise ChecksumError (after moving ``path`` aside) when its sha256 differs."""
    if expected is None:
        return
    actual = sha256_of(path)
    if actual != expected.lower():
        aside = _move_aside(path, actual)
        raise ChecksumError(
            f"checksum mismatch for {path} (from {remote.url}): expected sha256 {expected}, "
            f"got {actual}. The file is truncated or corrupt; it was moved aside to {aside}. "
            f"Rerun to download it again, or {_by_hand(remote, path)}"
        )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl

    lock = path.with_name(path.name + ".lock")
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


Opener = Callable[[urllib.request.Request], Any]


def _default_opener(request: urllib.request.Request) -> Any:
    return urllib.request.urlopen(request, timeout=60)


def fetch(remote: RemoteFile, cache_dir: str | os.PathLike = "resources",
          opener: Opener | None = None, log: Callable[[str], None] = print) -> Path:
    """Path of ``remote`` under ``<cache_dir>/downloads``, downloaded and verified if needed.

    ``opener(request) -> response`` (a context manager with ``read(n)``, ``status`` or
    ``getcode()``, and headers) defaults to ``urllib.request.urlopen``; tests pass a
    fake one or use ``file://`` URLs. Raises :class:`DownloadError` (no network, HTTP
    error) or :class:`ChecksumError` (wrong bytes); see the module docstring.
    """
    opener = opener or _default_opener
    folder = download_dir(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / remote.name  # a name may hold a folder: <folder>/<file>
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        expected = remote.sha256 or _recorded_sha(path)
        if path.is_file():
            _check(path, remote, expected)  # a hand-placed or earlier file
            return path
        part = path.with_name(path.name + ".part")
        _download(remote, part, opener, log)
        _check(part, remote, expected)
        os.replace(part, path)
        if expected is None:
            actual = sha256_of(path)
            path.with_name(path.name + ".sha256").write_text(f"{actual}  {remote.name}\n")
            log(f"{path}: upstream publishes no checksum; recorded sha256 {actual}")
        return path


def _download(remote: RemoteFile, part: Path, opener: Opener, log) -> None:
    """Stream ``remote.url`` into ``part``, resuming from its current length."""
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(remote.url, headers={"User-Agent": "fusion-bench"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        with opener(request) as response:
            status = getattr(response, "status", None) or response.getcode()
            if have and status != 206:  # server ignored the range: start over
                have = 0
            mode = "ab" if have else "wb"
            if have:
                log(f"resuming {remote.url} at byte {have}")
            with open(part, mode) as fh:
                for block in iter(lambda: response.read(_CHUNK), b""):
                    fh.write(block)
                fh.flush()
                os.fsync(fh.fileno())
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # range not satisfiable: the .part file is complete
            return
        raise DownloadError(f"cannot download {remote.url}: HTTP {err.code} {err.reason}; "
                            f"{_by_hand(remote, part.with_suffix(''))}") from err
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(f"cannot download {remote.url} (no network? {reason}); "
                            f"{_by_hand(remote, part.with_suffix(''))}; the partial file "
                            f"{part} is kept and resumed next time") from err
