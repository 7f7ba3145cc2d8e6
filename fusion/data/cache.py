"""Atomic ``.npz`` caches for preprocessed datasets.

A cache is written once (temp file in the same directory + ``os.replace``, so readers
never see a half-written file and concurrent writers cannot corrupt it) and carries a
``format_version``. Loading checks the version and the required keys; anything wrong
raises :class:`CacheError` naming the file and telling the user to delete it. A bad
cache is never silently recomputed over.
"""

from __future__ import annotations

import glob
import os
import socket
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

__all__ = ["CacheError", "cache_error", "save_npz_atomic", "load_npz_checked"]


class CacheError(RuntimeError):
    """A dataset cache file is unreadable, truncated, from another format version, or
    inconsistent. The message names the file; deleting it rebuilds the cache."""


def _fail(path: Path, why: str) -> CacheError:
    return CacheError(
        f"dataset cache {str(path)!r} is unusable: {why}. Delete this file to rebuild it "
        "from the source data."
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temporary_prefix(path: Path, pid: int | str) -> str:
    return f".{path.name}.{socket.gethostname()}.{pid}."


def remove_dead_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete temporary files of ``path`` left by writers on this host that no longer run
    (a SIGKILL leaves its temporary: up to the size of the cache). Returns what was
    removed; temporaries of live writers or of other hosts are left alone."""
    path = Path(path)
    removed = []
    prefix = f".{path.name}.{socket.gethostname()}."
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        pid = tmp.name[len(prefix):].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def save_npz_atomic(path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
                    format_version: int) -> Path:
    """Write ``arrays`` (plus ``format_version``) to ``path`` atomically; return the path.

    The data is written uncompressed (fast to load) to a unique temporary file in the
    target directory (named after this host and process), flushed to disk, then moved into
    place with ``os.replace``. On any failure (including SIGTERM under the ``fusion``
    command) the temporary is removed and a failed write raises ``OSError`` naming
    ``path``; temporaries of killed writers (SIGKILL) are removed by the next write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(arrays)
    if "format_version" in payload:
        raise ValueError("'format_version' is reserved in cache arrays")
    payload["format_version"] = np.asarray(format_version, dtype=np.int64)
    remove_dead_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path, os.getpid()), suffix=".tmp",
                               dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; use normal permissions
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(err, OSError) and err.filename is None:
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise
    return path


def load_npz_checked(path: str | os.PathLike, format_version: int,
                     required: Iterable[str]) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` cache into memory and check it.

    Checks: the file is a readable npz archive, every array decodes (no pickles),
    ``format_version`` equals ``format_version`` and every key in ``required`` exists.
    Raises :class:`CacheError` (naming ``path``) on any failure; ``FileNotFoundError``
    if the file does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(str(path))
    try:
        with np.load(path, allow_pickle=False) as npz:
            out = {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        why = f"cannot read it as an .npz archive ({type(exc).__name__}: {exc})"
        raise _fail(path, why) from exc
    if "format_version" not in out:
        raise _fail(path, "it has no 'format_version' entry")
    found = int(out.pop("format_version"))
    if found != format_version:
        raise _fail(path, f"format_version is {found}, this code reads {format_version}")
    missing = [key for key in required if key not in out]
    if missing:
        raise _fail(path, f"missing arrays {missing}")
    return out


def cache_error(path: str | os.PathLike, why: str) -> CacheError:
    """Build a :class:`CacheError` for ``path`` with reason ``why`` (for callers' own
    consistency checks after :func:`load_npz_checked`)."""
    return _fail(Path(path), why)
