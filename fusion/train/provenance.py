"""Where and with what a result was produced: git commit, package versions, device, host.

Timestamps are ISO 8601 in UTC (``2025-01-31T12:00:00+00:00``); ``wall_seconds`` is the
time from ``started`` to ``finished`` in seconds. ``cpu`` is the host CPU's model name,
``gpu`` the CUDA device's name (None on CPU runs), ``cpu_count`` the logical cores of the
host, ``platform`` the operating system string.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "fusion-bench", "torch", "e3nn", "mace-torch", "numpy", "pandas", "ase", "tblite", "pyscf",
    "rdkit", "snakemake",
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# Fallback process start when /proc is unavailable: the time this module was imported.
_IMPORTED_AT = time.time()


def iso_utc(timestamp: float | None = None) -> str:
    """``timestamp`` (seconds since the epoch; now if None) as ISO 8601 UTC, 1 s resolution."""
    ts = time.time() if timestamp is None else timestamp
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")


def _git(*args: str, repo: Path) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit(repo: str | Path = REPO_ROOT) -> str:
    """``git rev-parse HEAD`` of ``repo`` (the fusion checkout), or ``"unknown"``."""
    res = _git("rev-parse", "HEAD", repo=Path(repo))
    if res is None or res.returncode != 0:
        return "unknown"
    return res.stdout.strip() or "unknown"


def git_dirty(repo: str | Path = REPO_ROOT) -> bool | None:
    """True when tracked files differ from HEAD, None when git cannot tell."""
    res = _git("diff", "--quiet", "HEAD", "--", repo=Path(repo))
    if res is None or res.returncode not in (0, 1):
        return None
    return res.returncode == 1


def versions() -> dict[str, str | None]:
    """Versions of python and the packages that decide the numbers (None: not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_name() -> str:
    """CPU model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: str | None = None) -> str:
    """The GPU's name when ``device`` is CUDA (or None and CUDA is available), else the CPU's."""
    import torch

    use_cuda = torch.cuda.is_available() if device is None else str(device).startswith("cuda")
    if use_cuda and torch.cuda.is_available():
        index = torch.device(device).index if device and ":" in str(device) else 0
        return f"cuda: {torch.cuda.get_device_name(index or 0)} (host CPU: {cpu_name()})"
    return f"cpu: {cpu_name()}"


def gpu_name(device: str | None = None) -> str | None:
    """Name of the CUDA device a run used (``device`` as in :func:`device_name`); None on CPU."""
    import torch

    use_cuda = torch.cuda.is_available() if device is None else str(device).startswith("cuda")
    if not (use_cuda and torch.cuda.is_available()):
        return None
    index = torch.device(device).index if device and ":" in str(device) else 0
    return torch.cuda.get_device_name(index or 0)


def process_start_time() -> float:
    """Start of this process in seconds since the epoch (Linux /proc), else import time."""
    try:
        with open("/proc/self/stat", encoding="utf-8") as f:
            # Field 22 (starttime, clock ticks after boot); the command name may hold spaces.
            fields = f.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])
        with open("/proc/stat", encoding="utf-8") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return btime + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED_AT


def provenance(started: float | str | None = None, device: str | None = None) -> dict:
    """Provenance record for ``metrics.json``.

    ``started``: when the run began (seconds since the epoch or an ISO string); default the
    start of this process (one run per process in the CLI). ``finished`` is now and
    ``wall_seconds`` (s) the time between the two. ``device``: the torch device used (default:
    CUDA when available, else CPU).
    """
    import torch

    if started is None:
        started = process_start_time()
    finished = time.time()
    started_seconds = (
        datetime.fromisoformat(started).timestamp() if isinstance(started, str) else started
    )
    return {
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "versions": versions(),
        "device": device_name(device),
        "hostname": socket.gethostname(),
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu_name(device),
        "platform": platform.platform(),
        "started": started if isinstance(started, str) else iso_utc(started),
        "finished": iso_utc(finished),
        "wall_seconds": round(max(0.0, finished - started_seconds), 3),
    }
