"""Atomic, self-checking training checkpoints.

Layout in a run's ``workdir``:

- ``checkpoint.pt``: the state after the last finished epoch,
- ``checkpoint.prev.pt``: the one before it (kept as a fallback),
- ``*.corrupt``: a checkpoint that failed to load, renamed (never deleted) so it can be inspected.

Every write goes to a temporary file in the same directory, is ``fsync``-ed, and then
``os.replace``-d over the target, so a crash at any point leaves either the old or the new
file, never a partial one. Before the new ``checkpoint.pt`` replaces the old one, the old one
is hard-linked (or, where links are not supported, moved) to ``checkpoint.prev.pt``, so a
readable ``checkpoint.pt`` exists at every moment after the first epoch.

Checkpoints hold only tensors and plain Python values (numbers, strings, lists, tuples,
dicts, ``None``) so they load with ``torch.load(weights_only=True)``.

Each checkpoint also stores a SHA-256 digest of its own content (``content_sha256``: every
tensor's dtype, shape and bytes and every other value's ``repr``, in order). ``torch.load``
does not check the CRCs of its zip records, so a flipped bit in a tensor would otherwise load
silently; :func:`read_checkpoint` recomputes the digest and treats a mismatch as corruption.
Checkpoints written before the digest existed (no such key) are still accepted.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

CHECKPOINT_NAME = "checkpoint.pt"
PREV_CHECKPOINT_NAME = "checkpoint.prev.pt"
CHECKPOINT_FORMAT = 1
DIGEST_KEY = "content_sha256"

# Keys every checkpoint written by fusion.train.trainer has; a file missing any is corrupt.
REQUIRED_KEYS = (
    "format",
    "epoch",
    "model",
    "optimizer",
    "schedule",
    "ema",
    "best_val",
    "best_epoch",
    "best_state",
    "rng",
    "early_stop_counter",
    "stopped_early",
    "log_rows",
    "config",
    "seconds_total",
    "n_train_structures",
)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates files readable by the owner only; written files get the usual mode.
_FILE_MODE = 0o666 & ~_umask()


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used (unreadable, truncated, or missing keys)."""


def fsync_dir(directory: str | os.PathLike) -> None:
    """Flush a directory entry to disk so a rename in it survives a crash (best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _RecordingFile:
    """A file object that remembers the OSError its ``write`` raised (torch.save reports a
    failed write, e.g. a full disk, only as a RuntimeError about stream positions)."""

    def __init__(self, f):
        self._f = f
        self.error: OSError | None = None

    def write(self, data):
        try:
            return self._f.write(data)
        except OSError as err:
            self.error = err
            raise

    def __getattr__(self, name):
        return getattr(self._f, name)


def _atomic_write(
    path: Path,
    write: Callable[[object], None],
    mode: str,
    before_replace: Callable[[], None] | None = None,
) -> None:
    """Write via a temp file in ``path``'s folder, fsync, ``os.replace``; ``before_replace``
    runs once the new content is on disk, just before it takes ``path``'s name.

    Any failure removes the temporary file; a failed write or flush (full disk, file size
    limit, I/O error) is raised as ``OSError`` naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    recording = None
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, mode) as f:
            recording = _RecordingFile(f)
            write(recording)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        cause = recording.error if recording is not None and recording.error else err
        if isinstance(cause, OSError) and cause.filename is None:
            raise OSError(cause.errno, cause.strerror or str(cause), str(path)) from err
        raise
    fsync_dir(path.parent)


def atomic_torch_save(obj: object, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` atomically (temp file in the same dir, fsync, os.replace)."""
    _atomic_write(Path(path), lambda f: torch.save(obj, f), "wb")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    _atomic_write(Path(path), lambda f: f.write(text.encode("utf-8")), "wb")


def remove_stale_temporaries(workdir: str | os.PathLike) -> None:
    """Delete temporary files left by writes that a crash interrupted (never finished files)."""
    for tmp in Path(workdir).glob(".*.tmp"):
        if tmp.name.startswith((f".{CHECKPOINT_NAME}.", f".{PREV_CHECKPOINT_NAME}.")):
            try:
                tmp.unlink()
            except OSError:
                pass


def content_digest(state: dict) -> str:
    """SHA-256 (hex) of a checkpoint's content, ``DIGEST_KEY`` itself left out.

    Tensors contribute dtype, shape and raw bytes; dicts their keys and values in order;
    lists and tuples their items; any other value its type name and ``repr``.
    """
    digest = hashlib.sha256()

    def feed(value: object) -> None:
        if isinstance(value, torch.Tensor):
            tensor = value.detach().to("cpu").contiguous()
            digest.update(f"T{tensor.dtype}{tuple(tensor.shape)};".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
        elif isinstance(value, dict):
            digest.update(f"D{len(value)};".encode())
            for key, item in value.items():
                feed(key)
                feed(item)
        elif isinstance(value, list | tuple):
            digest.update(f"{type(value).__name__}{len(value)};".encode())
            for item in value:
                feed(item)
        else:
            digest.update(f"{type(value).__name__}:{value!r};".encode())

    feed({k: v for k, v in state.items() if k != DIGEST_KEY})
    return digest.hexdigest()


def save_checkpoint(state: dict, workdir: str | os.PathLike) -> Path:
    """Write ``state`` as ``workdir/checkpoint.pt``, keeping the old one as ``.prev.pt``.

    Returns the path written. ``state`` must contain :data:`REQUIRED_KEYS`.
    """
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"checkpoint state is missing key(s) {missing}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    current = workdir / CHECKPOINT_NAME
    prev = workdir / PREV_CHECKPOINT_NAME

    def keep_previous() -> None:
        if not current.exists():
            return
        # Keep the old checkpoint as prev without a moment where checkpoint.pt is absent.
        fd, prev_tmp = tempfile.mkstemp(
            dir=workdir, prefix=f".{PREV_CHECKPOINT_NAME}.", suffix=".tmp"
        )
        os.close(fd)
        os.unlink(prev_tmp)
        try:
            os.link(current, prev_tmp)
            os.replace(prev_tmp, prev)
        except OSError:
            os.replace(current, prev)

    state = {**state, DIGEST_KEY: content_digest(state)}
    _atomic_write(current, lambda f: torch.save(state, f), "wb", before_replace=keep_previous)
    return current


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load and check one checkpoint; raise :class:`CheckpointError` saying what is wrong."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, bad pickle, unreadable file, ...
        raise CheckpointError(f"cannot load {path}: {type(err).__name__}: {err}") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a dict but {type(state).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path} is missing key(s) {missing}")
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {state['format']!r}, expected {CHECKPOINT_FORMAT}"
        )
    if not isinstance(state["epoch"], int) or state["epoch"] < 0:
        raise CheckpointError(f"{path} has an invalid epoch {state['epoch']!r}")
    if DIGEST_KEY in state and state[DIGEST_KEY] != content_digest(state):
        raise CheckpointError(
            f"{path} fails its content checksum (stored {DIGEST_KEY} "
            f"{str(state[DIGEST_KEY])[:12]}..., content gives {content_digest(state)[:12]}...): "
            "its bytes changed after it was written"
        )
    return state


def quarantine(path: Path) -> Path:
    """Rename a bad checkpoint to ``<name>.corrupt`` (``.corrupt.1``, ... if taken)."""
    target = path.with_name(path.name + ".corrupt")
    n = 0
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt.{n}")
    os.replace(path, target)
    fsync_dir(path.parent)
    return target


def load_latest_checkpoint(
    workdir: str | os.PathLike, log: Callable[[str], None] = print
) -> tuple[dict | None, Path | None]:
    """The newest good checkpoint in ``workdir`` as ``(state, path)``, or ``(None, None)``.

    Tries ``checkpoint.pt`` then ``checkpoint.prev.pt``. A file that fails to load or lacks
    keys is reported through ``log`` with its path and renamed to ``*.corrupt``; the next one
    is tried. When files existed but none was good, a warning says training starts afresh.
    """
    workdir = Path(workdir)
    remove_stale_temporaries(workdir)
    tried = []
    for name in (CHECKPOINT_NAME, PREV_CHECKPOINT_NAME):
        path = workdir / name
        if not path.exists():
            continue
        tried.append(path)
        try:
            return read_checkpoint(path), path
        except CheckpointError as err:
            moved = quarantine(path)
            log(f"warning: corrupt checkpoint {path} ({err}); renamed to {moved.name}")
    if tried:
        log(
            "warning: no usable checkpoint in "
            f"{workdir} (tried {', '.join(str(p) for p in tried)}); starting fresh"
        )
    return None, None


# ----------------------------------------------------------------------------- RNG states


def capture_rng_state() -> dict:
    """RNG states of torch (CPU and CUDA), numpy and ``random`` as checkpointable values."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [
            str(np_state[0]),
            torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "python": random.getstate(),
        "cuda": None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
