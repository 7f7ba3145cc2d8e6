"""Dataset registry: one entry per dataset key (= config key = results path segment).

``DATASETS[key]`` is a :class:`DatasetSpec`: a loader function plus a small card
(source, license, units, split sizes) rendered into the report. Adding a dataset
(rmd17, xtb-md, ...) means writing a loader with the signature

    loader(cache_dir, n_train, n_val, n_test, seed, **kwargs) -> (Structures, splits)

and registering it with :func:`register`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from fusion.data import qm9
from fusion.data.structures import Structures

__all__ = [
    "DatasetSpec", "DatasetFamily", "DATASETS", "FAMILIES", "register", "register_family",
    "family_cache_path", "family_inputs",
    "load_builtin_datasets", "dataset_keys",
    "dataset_card", "dataset_cache_path", "prepare_family", "get_dataset",
]

Loader = Callable[..., tuple[Structures, dict[str, np.ndarray]]]


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: ``key``, ``loader`` (see module docstring), ``card``."""

    key: str
    loader: Loader
    card: dict[str, Any] = field(default_factory=dict)
    family: str = ""  # datasets of one family share one cache file (see FAMILIES)


@dataclass(frozen=True)
class DatasetFamily:
    """Datasets sharing one preprocessed cache (e.g. the 12 QM9 targets).

    ``cache_path(cache_dir) -> Path`` names the cache file; ``prepare(cache_dir)`` builds it.
    ``inputs(cache_dir) -> [Path]`` (optional) names files other workflow jobs make first
    (feature shards, the cache of the dataset it is derived from). The workflow makes one
    job per family cache.
    """

    name: str
    cache_path: Callable[[str | os.PathLike], Path]
    prepare: Callable[[str | os.PathLike], Any]
    inputs: Callable[[str | os.PathLike], list[Path]] | None = None


def family_cache_path(family: str, cache_dir: str | os.PathLike = "resources") -> Path:
    """``<cache_dir>/<family>/<family>.npz``: where a family's cache lives (the output of the
    workflow's ``prepare_dataset`` rule)."""
    return Path(cache_dir) / family / f"{family}.npz"


FAMILIES: dict[str, DatasetFamily] = {
    "qm9": DatasetFamily("qm9", qm9.qm9_cache_path, qm9.preprocess_qm9),
}


DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to :data:`DATASETS`; a duplicate key is an error."""
    if spec.key in DATASETS:
        raise ValueError(f"dataset key {spec.key!r} is already registered")
    DATASETS[spec.key] = spec
    return spec


def register_family(family: DatasetFamily) -> DatasetFamily:
    """Add ``family`` to :data:`FAMILIES`; a duplicate name is an error."""
    if family.name in FAMILIES:
        raise ValueError(f"dataset family {family.name!r} is already registered")
    FAMILIES[family.name] = family
    return family


_LOADED = False


def load_builtin_datasets() -> None:
    """Import every module of :mod:`fusion.data` so that their ``register`` calls run.

    Adding a dataset family is adding a module that calls :func:`register_family` and
    :func:`register` at import time (heavy optional imports stay inside its functions).
    """
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import importlib
    import pkgutil

    import fusion.data as package

    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"fusion.data.{info.name}")


def dataset_keys() -> list[str]:
    """All registered dataset keys, in registration order."""
    load_builtin_datasets()
    return list(DATASETS)


def _lookup(key: str) -> DatasetSpec:
    load_builtin_datasets()
    if key not in DATASETS:
        raise KeyError(f"unknown dataset {key!r}; valid keys: {', '.join(DATASETS)}")
    return DATASETS[key]


def dataset_cache_path(key: str, cache_dir: str | os.PathLike = "resources") -> Path:
    """The cache file dataset ``key`` is loaded from (built by :func:`prepare_family`)."""
    return FAMILIES[_lookup(key).family].cache_path(cache_dir)


def prepare_family(family: str, cache_dir: str | os.PathLike = "resources") -> Path:
    """(Re)build the cache of dataset family ``family`` (``qm9``, ...); returns its path."""
    load_builtin_datasets()
    if family not in FAMILIES:
        raise KeyError(f"unknown dataset family {family!r}; valid: {', '.join(FAMILIES)}")
    FAMILIES[family].prepare(cache_dir)
    return FAMILIES[family].cache_path(cache_dir)


def family_inputs(family: str, cache_dir: str | os.PathLike = "resources") -> list[Path]:
    """Files the cache of ``family`` is built from by other jobs (``DatasetFamily.inputs``)."""
    load_builtin_datasets()
    if family not in FAMILIES:
        raise KeyError(f"unknown dataset family {family!r}; valid: {', '.join(FAMILIES)}")
    inputs = FAMILIES[family].inputs
    return [] if inputs is None else list(inputs(cache_dir))


def dataset_card(key: str) -> dict[str, Any]:
    """The card of dataset ``key`` (source, license, units, split, size)."""
    return dict(_lookup(key).card)


def dataset_states(key: str) -> list[str]:
    """Electronic states a dataset labels per structure (card key ``states``, e.g.
    ``["S0", "S1"]``); empty for single-target datasets."""
    return list(_lookup(key).card.get("states", []))


def get_dataset(key: str, cache_dir: str | os.PathLike = "resources", n_train: int | None = None,
                n_val: int | None = None, n_test: int | None = None, seed: int = 0,
                **kwargs: Any) -> tuple[Structures, dict[str, np.ndarray]]:
    """Load dataset ``key`` as ``(Structures, {"train", "val", "test"} index arrays)``.

    ``cache_dir``: where preprocessed data lives (``resources``); ``n_train``/``n_val``/
    ``n_test``: keep the first n of each split (``None`` = all); ``seed``: split seed
    (for QM9, 0 = Cormorant's split); extra ``kwargs`` go to the loader (e.g.
    ``data_dir``). Unknown ``key`` raises ``KeyError`` listing the valid keys.
    """
    spec = _lookup(key)
    return spec.loader(cache_dir=cache_dir, n_train=n_train, n_val=n_val, n_test=n_test,
                       seed=seed, **kwargs)


def _register_qm9() -> None:
    for target, ts in qm9.TARGETS.items():
        register(DatasetSpec(
            key=f"qm9-{target}",
            loader=partial(qm9.load_qm9, target),
            family="qm9",
            card={
                "name": f"QM9 {ts.description} ({target})",
                "source": "qm9pack 1.0.3 wheel (qm9_part1-3.csv); Ramakrishnan et al., "
                          "Sci. Data 1, 140022 (2014)",
                "license": "QM9 data CC BY 4.0; qm9pack MIT",
                "offline": True,
                "n_structures": qm9.QM9_N_MOLECULES,
                "elements": [1, 6, 7, 8, 9],
                "target": target,
                "column": ts.column,
                "unit": ts.unit,
                "report_unit": ts.report_unit,
                "atomref_subtracted": ts.atomref,
                "split": "Cormorant: RandomState(0) permutation; train/val/test = "
                         "100,000/17,748/13,083",
                "split_sizes": {"train": 100_000, "val": 17_748, "test": 13_083},
            },
        ))


_register_qm9()
