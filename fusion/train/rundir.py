"""A run directory belongs to one run and has one writer at a time.

- :func:`check_owner`: a writer (``fusion train``, ``fusion composition``) refuses a folder
  whose grid path (``.../<dataset>/<model>/<variant>/seed-<seed>``), ``metrics.json`` or
  ``run_spec.json`` names another (dataset, model, variant, seed) than its run spec, so no
  command overwrites another model's results.
- :func:`run_lock`: an exclusive ``fcntl.flock`` on ``<run dir>/.fusion.lock``, held for the
  whole run. The file records the holder's pid and host, so a second writer is told who
  holds it. The kernel drops the lock when its holder dies; the record it leaves (a killed
  run cannot clear it) is reported as a stale lock and taken over. On a file system
  without ``flock`` the record alone decides: a live pid on this host (or any pid on
  another host) holds the folder, a dead pid on this host is stale.
- :func:`run_hashes`: the SHA-256 of a run spec (the keys that change results) and of its
  dataset cache; checkpoints carry them, so a checkpoint copied from another run is never
  resumed (``fusion.experiment``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

LOCK_NAME = ".fusion.lock"
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class RunDirLocked(RuntimeError):
    """Another process is writing this run directory."""


def identity(record: dict) -> tuple[str, str, str, int] | None:
    """(dataset, model, variant, seed) of a run spec / metrics.json, or None."""
    try:
        return (str(record["dataset"]), str(record["model"]), str(record["variant"]),
                int(record["seed"]))
    except (KeyError, TypeError, ValueError):
        return None


def _describe(run: tuple) -> str:
    dataset, model, variant, seed = run
    return f"{dataset} {model}/{variant} seed {seed}"


def check_owner(out_dir: str | os.PathLike, spec: dict) -> None:
    """Raise ``ValueError`` when ``out_dir`` holds (or is laid out for) another run."""
    out = Path(out_dir)
    mine = identity(spec)
    parts = out.parts
    # A folder of the grid layout results/train/<dataset>/<model>/<variant>/seed-<seed>.
    if len(parts) >= 5 and parts[-5] == "train" and re.fullmatch(r"seed-\d+", parts[-1]):
        laid_out = (parts[-4], parts[-3], parts[-2], int(parts[-1][5:]))
        if laid_out != mine:
            raise ValueError(
                f"{out} is the folder of {_describe(laid_out)}, but the run spec is "
                f"{_describe(mine)}: refusing to write another run's results there"
            )
    for name in ("metrics.json", "run_spec.json"):
        path = out / name
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if name == "metrics.json" and isinstance(record, dict):
            record = {**record.get("hyperparameters", {}), **{
                k: record[k] for k in ("dataset", "model", "variant", "seed") if k in record}}
        theirs = identity(record) if isinstance(record, dict) else None
        if theirs is not None and theirs != mine:
            raise ValueError(
                f"{path} belongs to {_describe(theirs)}, not to this run spec's "
                f"{_describe(mine)}: refusing to overwrite it (give this run its own out_dir)"
            )


# ----------------------------------------------------------------------------- lock


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_record(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode("utf-8", "replace")
    try:
        record = json.loads(text)
    except ValueError:
        return {}
    return record if isinstance(record, dict) and "pid" in record else {}


def _holder(record: dict) -> str:
    if not record:
        return "another process (no pid recorded yet)"
    text = f"pid {record['pid']} on host {record.get('host', '?')}"
    if record.get("started"):
        text += f" (since {record['started']})"
    return text


def _write_record(fd: int) -> None:
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(record).encode())
    os.fsync(fd)


def _refuse(out: Path, path: Path, record: dict, note: str = "") -> RunDirLocked:
    return RunDirLocked(
        f"{out} is being written by {_holder(record)}{note} (lock {path}); a second writer "
        "would interleave log.csv and race on the checkpoints: wait for it to finish or stop it"
    )


@contextlib.contextmanager
def run_lock(out_dir: str | os.PathLike, log: Callable[[str], None] = print) -> Iterator[Path]:
    """Hold the exclusive lock of ``out_dir`` for the ``with`` block (see module docstring).

    Raises :class:`RunDirLocked` naming the holder's pid and host when another process
    holds it. Yields the lock file's path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        flocked = True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            record = _read_record(fd)
            note = ""
            if record.get("host") == socket.gethostname() and not _pid_alive(record["pid"]):
                note = ", which has exited; a process it started still holds the lock"
            raise _refuse(out, path, record, note) from None
        except OSError as err:
            if err.errno not in _NO_FLOCK:
                raise
            flocked = False  # no flock here: the record decides
        previous = _read_record(fd)
        if previous and previous.get("pid") != os.getpid():
            local = previous.get("host") == socket.gethostname()
            if not flocked and (not local or _pid_alive(int(previous["pid"]))):
                raise _refuse(out, path, previous)
            log(f"warning: took over the stale lock {path} of {_holder(previous)}, "
                "which is no longer running")
        _write_record(fd)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)  # released: no record left to look stale
    finally:
        os.close(fd)  # closing drops the flock


# ----------------------------------------------------------------------------- hashes

# Keys that do not change what is computed: a checkpoint made under other values is reusable.
SPEC_KEYS_NOT_AFFECTING_RESULTS = {"threads", "eval_batch_size", "out_dir", "cache_dir"}


def spec_record(spec: dict) -> dict:
    """The part of a run spec that decides the results (what run_spec.json records)."""
    return {k: v for k, v in spec.items() if k not in SPEC_KEYS_NOT_AFFECTING_RESULTS}


def run_hashes(spec: dict, cache_file: str | os.PathLike | None) -> dict:
    """``{"spec_sha256", "data_sha256"}`` of a run: its spec record and its dataset cache
    (``"none"`` when the dataset has no cache file)."""
    from fusion.data.download import sha256_of

    text = json.dumps(spec_record(spec), sort_keys=True)
    data = "none"
    if cache_file is not None and Path(cache_file).is_file():
        data = sha256_of(Path(cache_file))
    return {"spec_sha256": hashlib.sha256(text.encode()).hexdigest(), "data_sha256": data}
