"""Δ-learning datasets on rMD17: reference (PBE/def2-SVP) energy minus GFN2-xTB energy,
with xTB AO features per frame (UNiTE, issue 8).

Dataset keys ``rmd17xtb-<mol>`` for the 10 rMD17 molecules of
:data:`fusion.data.forcefields.RMD17_MOLECULES`, each its own family with cache
``<cache_dir>/rmd17xtb-<mol>/rmd17xtb-<mol>.npz`` (built by ``fusion prepare
rmd17xtb-<mol>``, i.e. :func:`prepare_rmd17xtb`). The prepare step loads the
``rmd17-full-<mol>`` dataset through the registry (building its cache from the figshare archive
first if missing), computes xTB features only for the frames of its train / val / test split
(official split 1: 950 / 50 / 1,000, so 2,000 of the 100,000 frames) and writes the feature
cache atomically.

Target (eV): ``y = E_rMD17 - E_xTB - delta_offset``, both total energies of the same frame,
``delta_offset`` the mean of ``E_rMD17 - E_xTB`` over the cached training frames (one number
per molecule, stored in the cache and in ``meta["delta_offset"]``). Subtracting it keeps
``|y|`` small, so float32 training does not round away sub-meV differences (``E_rMD17 -
E_xTB`` is about -3,900 eV for ethanol). A per-molecule constant does not change any error:
the composition baseline / shift of the model absorbs it, and the corrected energy is
``E_xTB + delta_offset + predicted y``, whose error against rMD17 equals the error of
``y``: the reported MAE (meV) is the MAE of the corrected energy. No forces (energy only).
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import numpy as np

from fusion.data.registry import (
    DatasetFamily,
    DatasetSpec,
    family_cache_path,
    register,
    register_family,
)

__all__ = ["MOLECULES", "THRESHOLD", "prepare_rmd17xtb", "load_rmd17xtb"]

#: rMD17 molecule names (dataset key suffixes), as :data:`forcefields.RMD17_MOLECULES`.
MOLECULES = ("aspirin", "azobenzene", "benzene", "ethanol", "malonaldehyde", "naphthalene",
             "paracetamol", "salicylic-acid", "toluene", "uracil")
THRESHOLD = 1e-5  # atomic units; see fusion.data.xtb_features.molecule_features
SPLIT_INDEX = 1  # official rMD17 split index_{train,test}_01
SPLIT_SIZES = {"train": 950, "val": 50, "test": 1000}
_CACHE_KEYS = ("rmd17_frame", "pos", "reference_energy", "delta_offset", "split_index",
               "split_train", "split_val", "split_test")


def _check_molecule(molecule: str) -> None:
    if molecule not in MOLECULES:
        raise ValueError(f"unknown rMD17 molecule {molecule!r}; valid: {', '.join(MOLECULES)}")


def prepare_rmd17xtb(molecule: str, cache_dir: str | os.PathLike = "resources",
                     n_train: int | None = None, n_val: int | None = None,
                     n_test: int | None = None, opener=None) -> Path:
    """Compute the xTB features of the split frames of rMD17 ``molecule`` and write the cache.

    The frames are those of ``rmd17-full-<molecule>`` (official split 1, 950 / 50 / 1,000), cut to
    the first ``n_*`` of each split when given (tests, small runs). ``opener`` goes to the
    rMD17 download (see :func:`fusion.data.download.fetch`). The cache holds the features,
    the rMD17 frame index of each cached frame (``rmd17_frame``), its positions (Å, to detect
    a stale cache), the reference energies (eV), ``delta_offset`` (eV) and the split
    positions into the cached frames.
    """
    from fusion.data.registry import get_dataset
    from fusion.data.structures import ragged_arange
    from fusion.data.xtb_features import compute_feature_set, save_feature_set

    _check_molecule(molecule)
    family = f"rmd17xtb-{molecule}"
    structures, splits = get_dataset(f"rmd17-full-{molecule}", cache_dir=cache_dir, n_train=n_train,
                                     n_val=n_val, n_test=n_test, split_index=SPLIT_INDEX,
                                     opener=opener)
    names = ("train", "val", "test")
    frames = np.concatenate([splits[k] for k in names]).astype(np.int64)  # [M]
    sizes = [splits[k].shape[0] for k in names]
    start = np.cumsum([0, *sizes])
    positions = {k: np.arange(start[i], start[i + 1]) for i, k in enumerate(names)}
    atoms = ragged_arange(structures.offsets[frames], structures.n_atoms[frames])  # [A]
    where = [f"rMD17 {molecule} frame {int(f)}" for f in frames]
    features = compute_feature_set(structures.z[atoms], structures.pos[atoms],
                                   structures.n_atoms[frames], threshold=THRESHOLD, names=where)
    reference = structures.y[frames]  # [M] eV
    train = positions["train"]
    if train.shape[0] == 0:
        raise ValueError(f"{family}: the training split is empty; delta_offset (the mean of "
                         "E_rMD17 - E_xTB over training frames) needs at least one frame")
    offset = float(np.mean(reference[train] - features.energy[train]))
    extra = {"rmd17_frame": frames, "pos": structures.pos[atoms], "reference_energy": reference,
             "delta_offset": np.float64(offset), "split_index": np.int64(SPLIT_INDEX),
             **{f"split_{k}": v for k, v in positions.items()}}
    return save_feature_set(family_cache_path(family, cache_dir), features, extra)


def load_rmd17xtb(molecule: str, cache_dir: str | os.PathLike = "resources",
                  n_train: int | None = None, n_val: int | None = None,
                  n_test: int | None = None, seed: int = 0, opener=None):
    """``(Structures, splits)`` of the Δ target (eV, see module docstring) over the cached
    frames, with the features in ``meta["xtb_features"]`` and ``meta["make_loader"] =``
    :func:`~fusion.data.xtb_features.make_xtb_loader`; no forces.

    The family cache must exist (``fusion prepare rmd17xtb-<molecule>``); ``n_*`` keep the
    first n of each cached split and may not exceed it; ``seed`` is the training seed (the
    split is fixed). The cached frames are checked against the ``rmd17-full-<molecule>`` cache.
    """
    from fusion.data.cache import cache_error
    from fusion.data.registry import get_dataset
    from fusion.data.structures import Structures, ragged_arange, take_splits
    from fusion.data.xtb_features import load_feature_set, make_xtb_loader

    _check_molecule(molecule)
    family = f"rmd17xtb-{molecule}"
    path = family_cache_path(family, cache_dir)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; build it with `fusion prepare {family}`")
    features, rest = load_feature_set(path, _CACHE_KEYS)
    source, _ = get_dataset(f"rmd17-full-{molecule}", cache_dir=cache_dir, opener=opener)
    frames = rest["rmd17_frame"].astype(np.int64)
    if frames.size and (frames.min() < 0 or frames.max() >= len(source)):
        raise cache_error(path, f"its frame indices exceed the {len(source)} frames of "
                                f"rmd17-full-{molecule}; rebuild it")
    n_atoms = source.n_atoms[frames]
    atoms = ragged_arange(source.offsets[frames], n_atoms)  # [A]
    if not np.array_equal(n_atoms, features.node_counts) or \
            rest["pos"].shape != source.pos[atoms].shape or \
            not np.allclose(rest["pos"], source.pos[atoms], rtol=0.0, atol=1e-9):
        raise cache_error(path, f"its frames differ from the rmd17-full-{molecule} cache (atom "
                                "counts or positions); rebuild it")
    reference = source.y[frames]  # [M] eV
    offset = float(rest["delta_offset"])
    structures = Structures(
        z=source.z[atoms], pos=source.pos[atoms], n_atoms=n_atoms,
        y=reference - features.energy - offset,
        meta={"name": family, "target": "energy", "unit": "eV", "report_unit": "meV",
              "report_factor": 1000.0,
              "description": "rMD17 energy minus GFN2-xTB energy (minus delta_offset)",
              "rmd17_frame": frames, "reference_energy": reference,
              "xtb_energy": features.energy, "delta_offset": offset,
              "xtb_features": features, "make_loader": make_xtb_loader})
    splits = take_splits({k: rest[f"split_{k}"] for k in ("train", "val", "test")},
                         n_train, n_val, n_test, where=family, items="frames",
                         holder=f"the cache {path}")
    return structures, splits


def _source_cache(molecule: str, cache_dir: str | os.PathLike) -> list[Path]:
    """The rMD17 cache the features are computed from (its own workflow job)."""
    return [family_cache_path(f"rmd17-full-{molecule}", cache_dir)]


def _register() -> None:
    for mol in MOLECULES:
        family = f"rmd17xtb-{mol}"
        register_family(DatasetFamily(family, partial(family_cache_path, family),
                                      partial(prepare_rmd17xtb, mol),
                                      inputs=partial(_source_cache, mol)))
        register(DatasetSpec(family, partial(load_rmd17xtb, mol), family=family, card={
            "name": f"rMD17 {mol}, Δ-learning target: rMD17 energy - GFN2-xTB energy",
            "source": "rMD17 (figshare 12672038; Christensen & von Lilienfeld 2020), via "
                      f"dataset rmd17-full-{mol}; GFN2-xTB energies and features computed with "
                      "tblite (S, H0, P, F in the AO basis) per frame",
            "license": "see the figshare record 12672038; tblite LGPL-3.0",
            "offline": False,
            "target": "energy (Δ-learning target)",
            "unit": "eV",
            "report_unit": "meV",
            "units": "y = E_rMD17 - E_xTB - delta_offset in eV (reported meV); no forces. "
                     "delta_offset is a per-molecule constant (mean over the training "
                     "frames, in the cache); the composition baseline / model shift absorbs "
                     "a constant, so errors equal those of the corrected energy",
            "split": "official index_train/test_01; 950 train / 50 val from the train "
                     "indices (RandomState(0)), 1,000 test; features only for these frames",
            "split_sizes": dict(SPLIT_SIZES),
            "n_structures": sum(SPLIT_SIZES.values()),
        }))


_register()
