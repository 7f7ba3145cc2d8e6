"""``metrics.json``: one schema for every model (``schema_version: 1``).

See ``docs/architecture.md`` for the layout. Errors are in reported units (meV, meV/atom,
meV/Å for energy datasets; the target's own unit otherwise); times in seconds; memory in MB
(2**20 bytes). Files are strict JSON (no NaN/Infinity): a missing value is ``null``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fusion.models.registry import count_parameters
from fusion.train.checkpoint import atomic_write_text

__all__ = [
    "SCHEMA_VERSION",
    "REQUIRED",
    "MetricsSchemaError",
    "ErrorSums",
    "count_parameters",
    "validate_metrics",
    "write_metrics_json",
    "read_metrics_json",
]

SCHEMA_VERSION = 1

_SPLIT_KEYS = ("mae", "rmse", "mae_per_atom", "forces_mae", "forces_rmse", "n_structures")

# Required keys: top level -> None (any value) or a tuple of required sub-keys.
REQUIRED: dict[str, tuple[str, ...] | None] = {
    "schema_version": None,
    "dataset": None,
    "model": None,
    "variant": None,
    "seed": None,
    "n_params": None,
    "units": ("y", "y_per_atom", "forces"),
    "test": _SPLIT_KEYS,
    "val": _SPLIT_KEYS,
    "train": ("n_structures", "epochs", "best_epoch", "seconds_per_epoch", "wall_seconds"),
    "inference": ("structures_per_second",),
    "peak_memory_mb": None,
    "hyperparameters": None,
    "provenance": ("git_commit", "versions", "device", "hostname", "started", "finished"),
}


@dataclass
class ErrorSums:
    """Running error sums over batches, for one or several electronic states.

    :meth:`add` takes energies ``[B]`` or ``[B, S]`` (internal units), atoms per structure
    ``[B]`` and optionally forces ``[A, 3]`` or ``[A, S, 3]``. :meth:`errors` returns the
    pooled ``mae``, ``rmse``, ``mae_per_atom``, ``forces_mae``, ``forces_rmse``,
    ``n_structures`` in reported units (internal * ``factor``); with ``S > 1`` states also,
    for every state ``k``, ``mae_Sk``, ``rmse_Sk``, ``forces_mae_Sk``, ``forces_rmse_Sk``, and
    for ``k >= 1`` the error of the gap ``E_Sk - E_S0``: ``gap_mae_Sk``, ``gap_rmse_Sk``.

    >>> sums = ErrorSums()
    >>> sums.add(np.array([[1.0, 3.0]]), np.array([[0.0, 1.0]]), np.array([2]))
    >>> e = sums.errors(1.0)
    >>> e["mae"], e["mae_S0"], e["mae_S1"], e["gap_mae_S1"]
    (1.5, 1.0, 2.0, 1.0)
    """

    n: int = 0  # structures
    n_f: int = 0  # force components per state
    sums: dict = field(default_factory=dict)  # name -> [S] (gap_*: [S], entry 0 unused)

    def _acc(self, name: str, values: np.ndarray) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + values

    def add(self, pred: np.ndarray, true: np.ndarray, n_atoms: np.ndarray,
            pred_forces: np.ndarray | None = None, true_forces: np.ndarray | None = None
            ) -> None:
        err = (np.asarray(pred, dtype=np.float64) - true).reshape(len(true), -1)  # [B, S]
        self._acc("abs", np.abs(err).sum(0))
        self._acc("sq", (err**2).sum(0))
        self._acc("per_atom", (np.abs(err) / np.asarray(n_atoms)[:, None]).sum(0))
        gap_err = err - err[:, :1]  # [B, S]: error of E_Sk - E_S0
        self._acc("gap_abs", np.abs(gap_err).sum(0))
        self._acc("gap_sq", (gap_err**2).sum(0))
        self.n += err.shape[0]
        if pred_forces is not None and true_forces is not None:
            f_err = (pred_forces - true_forces).reshape(len(true_forces), -1, 3)  # [A, S, 3]
            self._acc("f_abs", np.abs(f_err).sum((0, 2)))
            self._acc("f_sq", (f_err**2).sum((0, 2)))
            self.n_f += f_err.shape[0] * 3

    def errors(self, factor: float) -> dict:
        k = float(factor)
        s = self.sums
        n, n_f = max(self.n, 1), max(self.n_f, 1)
        has_f = self.n_f > 0
        out = {
            "mae": float(s["abs"].mean()) / n * k,
            "rmse": math.sqrt(float(s["sq"].mean()) / n) * k,
            "mae_per_atom": float(s["per_atom"].mean()) / n * k,
            "forces_mae": float(s["f_abs"].mean()) / n_f * k if has_f else None,
            "forces_rmse": math.sqrt(float(s["f_sq"].mean()) / n_f) * k if has_f else None,
            "n_structures": self.n,
        }
        n_states = len(s["abs"])
        if n_states > 1:
            for i in range(n_states):
                out[f"mae_S{i}"] = float(s["abs"][i]) / n * k
                out[f"rmse_S{i}"] = math.sqrt(float(s["sq"][i]) / n) * k
                if has_f:
                    out[f"forces_mae_S{i}"] = float(s["f_abs"][i]) / n_f * k
                    out[f"forces_rmse_S{i}"] = math.sqrt(float(s["f_sq"][i]) / n_f) * k
                if i:
                    out[f"gap_mae_S{i}"] = float(s["gap_abs"][i]) / n * k
                    out[f"gap_rmse_S{i}"] = math.sqrt(float(s["gap_sq"][i]) / n) * k
        return out


class MetricsSchemaError(ValueError):
    """A metrics document does not follow the schema (the message names file and key)."""


def _non_finite(obj, path: str = "") -> str | None:
    """Dotted path of the first NaN/inf float in ``obj``, or None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return path or "<root>"
    if isinstance(obj, dict):
        for k, v in obj.items():
            found = _non_finite(v, f"{path}.{k}" if path else str(k))
            if found:
                return found
    if isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            found = _non_finite(v, f"{path}[{i}]")
            if found:
                return found
    return None


def validate_metrics(metrics: dict, source: str = "metrics") -> None:
    """Raise :class:`MetricsSchemaError` naming ``source`` and the first missing/bad key."""
    if not isinstance(metrics, dict):
        raise MetricsSchemaError(f"{source}: expected a JSON object, got {type(metrics).__name__}")
    if "schema_version" not in metrics:
        raise MetricsSchemaError(f"{source}: missing required key 'schema_version'")
    if metrics["schema_version"] != SCHEMA_VERSION:
        raise MetricsSchemaError(
            f"{source}: schema_version is {metrics['schema_version']!r}, "
            f"this code reads version {SCHEMA_VERSION}"
        )
    for key, sub in REQUIRED.items():
        if key not in metrics:
            raise MetricsSchemaError(f"{source}: missing required key {key!r}")
        if sub is None:
            continue
        value = metrics[key]
        if not isinstance(value, dict):
            raise MetricsSchemaError(
                f"{source}: key {key!r} should be an object, got {type(value).__name__}"
            )
        for k in sub:
            if k not in value:
                raise MetricsSchemaError(f"{source}: missing required key '{key}.{k}'")
    bad = _non_finite(metrics)
    if bad:
        raise MetricsSchemaError(f"{source}: key {bad!r} is not a finite number (use null)")


def write_metrics_json(path: str | os.PathLike, metrics: dict) -> Path:
    """Validate ``metrics`` and write it to ``path`` atomically (UTF-8, indented)."""
    path = Path(path)
    validate_metrics(metrics, str(path))
    text = json.dumps(metrics, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    atomic_write_text(path, text)
    return path


def read_metrics_json(path: str | os.PathLike) -> dict:
    """Read and validate a ``metrics.json``; errors name the file and the missing key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise MetricsSchemaError(f"{path}: cannot read metrics file ({err})") from err
    try:
        metrics = json.loads(text)
    except json.JSONDecodeError as err:
        raise MetricsSchemaError(f"{path}: not valid JSON ({err})") from err
    validate_metrics(metrics, str(path))
    return metrics
