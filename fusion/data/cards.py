"""Dataset-card statistics computed from the data itself (for ``fusion cards``).

The static part of a card (source, license, units, split rule) is the ``card`` dict of the
registered :class:`~fusion.data.registry.DatasetSpec`; :func:`data_stats` adds what can
only be known from the prepared cache: frame and atom counts, split sizes and target /
force statistics. :func:`card_with_stats` merges both when the cache exists (it never
builds a cache: a card must not start a download or an MD run).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from fusion.data.structures import Structures

__all__ = ["data_stats", "card_with_stats"]


def data_stats(structures: Structures, splits: dict[str, np.ndarray]) -> dict[str, Any]:
    """Statistics of ``structures`` (all of them) and the sizes of ``splits``.

    Keys: ``n_structures``; ``n_atoms`` (the distinct sizes, or ``"min-max (mean)"`` when
    there are more than 5); ``elements``; ``split_sizes``; ``y_mean``/``y_std`` in the
    internal unit ``meta["unit"]`` (eV for energies); with forces ``forces_mean_abs`` and
    ``forces_max_abs`` (per Cartesian component, eV/Å).
    """
    sizes = np.unique(structures.n_atoms)
    n_atoms: Any = [int(v) for v in sizes] if sizes.shape[0] <= 5 else \
        f"{int(sizes[0])}-{int(sizes[-1])} (mean {float(structures.n_atoms.mean()):.1f})"
    unit = structures.meta.get("unit", "")
    out: dict[str, Any] = {
        "n_structures": len(structures),
        "n_atoms": n_atoms,
        "elements": structures.elements(),
        "split_sizes": {k: int(len(v)) for k, v in splits.items()},
        f"y_mean ({unit})": round(float(structures.y.mean()), 4),
        f"y_std ({unit})": round(float(structures.y.std()), 4),
    }
    if structures.forces is not None:
        out["forces_mean_abs (eV/Å)"] = round(float(np.abs(structures.forces).mean()), 4)
        out["forces_max_abs (eV/Å)"] = round(float(np.abs(structures.forces).max()), 4)
    return out


def card_with_stats(key: str, cache_dir: str | os.PathLike = "resources") -> dict[str, Any]:
    """The registered card of ``key``, plus :func:`data_stats` (prefixed ``data:``) when
    its cache exists under ``cache_dir``; a cache that cannot be read is named in
    ``data: unavailable`` instead of failing the whole report."""
    from fusion.data.registry import dataset_cache_path, dataset_card, get_dataset

    card = dataset_card(key)
    path = dataset_cache_path(key, cache_dir)
    if not path.exists():
        card["data"] = f"cache {path} not built yet (statistics appear once it is)"
        return card
    try:
        structures, splits = get_dataset(key, cache_dir=cache_dir)
    except Exception as err:  # noqa: BLE001 - reported in the card, not raised
        card["data: unavailable"] = f"{type(err).__name__}: {err}"
        return card
    card.update({f"data: {k}": v for k, v in data_stats(structures, splits).items()})
    return card
