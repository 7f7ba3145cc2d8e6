"""``metrics.json``: one schema for every model (``schema_version: 1``).

See ``docs/architecture.md`` for the layout. Errors are in reported units (meV, meV/atom,
meV/Å for energy datasets; the target's own unit otherwise); times in seconds; memory in MB
(2**20 bytes). Files are strict JSON (no NaN/Infinity): a missing value is ``null``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from fusion.models.registry import count_parameters
from fusion.train.checkpoint import atomic_write_text

__all__ = [
    "SCHEMA_VERSION",
    "REQUIRED",
    "MetricsSchemaError",
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
