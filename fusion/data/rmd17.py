"""rMD17 from the dataset author's own train/test split files (``rmd17-<molecule>``).

Source: ``andersx/rmd17-npz`` (pinned commit and sha256 in :mod:`fusion.data.sources`),
``rmd17-npz/rmd17_<mol>_{train,test}_0<k>.npz`` for k = 1..5: the author's five train/test
pairs, 1,000 frames each (train and test of one pair are disjoint; the check is repeated
here on ``old_indices``). Units: raw kcal/mol and kcal/mol/Å, converted to eV and eV/Å.

Split of run seed ``s`` (the MACE protocol): pair k = s + 1; the first 950 frames of the
train file train, its last 50 validate, the 1,000 frames of the test file test. So seeds
0..4 are the five official splits, and results paired over seeds are paired over splits.

The cache ``<cache_dir>/rmd17-<mol>/rmd17-<mol>.npz`` holds the ten files' frames in
order (subset labels ``train_1`` .. ``test_5``) and each frame's index in the original MD17
trajectory (``old_index``, the files' ``old_indices``). The whole archive (figshare
12672038) stays available as ``rmd17-full-<mol>`` (:mod:`fusion.data.forcefields`).
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import numpy as np

from fusion.data.cache import save_npz_atomic
from fusion.data.forcefields import (
    CACHE_FORMAT_VERSION,
    KCAL_MOL_TO_EV,
    RMD17_MOLECULES,
    _concat,
    _load_frames,
    _lookup,
    _npz_from_bytes,
    _structures,
    frames_from_npz,
)
from fusion.data.registry import (
    DatasetFamily,
    DatasetSpec,
    family_cache_path,
    register,
    register_family,
)
from fusion.data.sources import PINNED, REPOSITORIES, fetch_pinned
from fusion.data.structures import take_splits

__all__ = ["N_SPLITS", "N_VAL", "split_file", "prepare_rmd17", "load_rmd17"]

N_SPLITS = 5
N_VAL = 50  # the last 50 frames of the train file (950 / 50, as MACE)
_NPZ_KEYS = {"z": "nuclear_charges", "pos": "coords", "energy": "energies", "forces": "forces"}


def split_file(molecule: str, kind: str, k: int) -> str:
    """``rmd17-npz/rmd17_<file>_<kind>_0<k>.npz`` (``kind`` train or test, k = 1..5)."""
    stem = _lookup(molecule, RMD17_MOLECULES, "rMD17")
    return f"rmd17-npz/rmd17_{stem}_{kind}_0{k}.npz"


def prepare_rmd17(molecule: str, cache_dir: str | os.PathLike = "resources",
                  opener=None, log=print) -> Path:
    """Build the cache of ``rmd17-<molecule>`` from its ten split files (fetched if missing,
    always sha256-checked). Raises ``ValueError`` naming the file (and frame) for malformed
    arrays, and when a pair's train and test frames overlap; nothing is written then."""
    parts, old = [], []
    for k in range(1, N_SPLITS + 1):
        seen = {}
        for kind in ("train", "test"):
            relpath = split_file(molecule, kind, k)
            path = fetch_pinned(relpath, cache_dir, opener=opener, log=log)
            arrays = _npz_from_bytes(path.read_bytes(), str(path))
            frames = frames_from_npz(arrays, str(path), _NPZ_KEYS, KCAL_MOL_TO_EV,
                                     KCAL_MOL_TO_EV)
            n = frames["n_atoms"].shape[0]
            if "old_indices" not in arrays or np.shape(arrays["old_indices"]) != (n,):
                raise ValueError(f"{path}: 'old_indices' missing or not of shape ({n},); "
                                 "expected the MD17 index of every frame")
            seen[kind] = np.asarray(arrays["old_indices"], dtype=np.int64)
            parts.append((f"{kind}_{k}", frames))
            old.append(seen[kind])
        both = np.intersect1d(seen["train"], seen["test"])
        if both.size:
            raise ValueError(f"{split_file(molecule, 'test', k)}: {both.size} frames (e.g. "
                             f"MD17 index {both[0]}) are also in the train file of pair {k}")
    z_first = parts[0][1]["z"][: parts[0][1]["n_atoms"][0]]
    for label, frames in parts:
        if not np.array_equal(frames["z"][: frames["n_atoms"][0]], z_first):
            raise ValueError(f"{split_file(molecule, *label.split('_'))}: nuclear_charges "
                             f"differ from the other files of {molecule}")
    raw = _concat(parts)
    raw["old_index"] = np.concatenate(old)
    path = family_cache_path(f"rmd17-{molecule}", cache_dir)
    save_npz_atomic(path, raw, CACHE_FORMAT_VERSION)
    return path


def load_rmd17(molecule: str, cache_dir: str | os.PathLike = "resources",
               n_train: int | None = None, n_val: int | None = None,
               n_test: int | None = None, seed: int = 0, split_index: int | None = None,
               opener=None):
    """rMD17 ``molecule`` on the author's pair ``split_index`` (default: ``seed + 1``):
    950 train / 50 val (first / last frames of the train file), 1,000 test; each cut to its
    first ``n_*``. Returns ``(Structures, splits)``; ``meta["old_index"]`` is each frame's
    index in the original MD17 trajectory."""
    _lookup(molecule, RMD17_MOLECULES, "rMD17")
    k = seed + 1 if split_index is None else split_index
    if k not in range(1, N_SPLITS + 1):
        via = f"seed {seed}" if split_index is None else f"split_index {split_index}"
        raise ValueError(f"rmd17-{molecule}: {via} selects the author's pair {k}, but there "
                         f"are {N_SPLITS} (seeds 0..{N_SPLITS - 1} = pairs 1..{N_SPLITS})")
    path = family_cache_path(f"rmd17-{molecule}", cache_dir)
    if not path.exists():
        prepare_rmd17(molecule, cache_dir, opener)
    raw = _load_frames(path, ("old_index",))
    train_file = np.flatnonzero(raw["subset"] == f"train_{k}")
    stored = {"train": train_file[:-N_VAL], "val": train_file[-N_VAL:],
              "test": np.flatnonzero(raw["subset"] == f"test_{k}")}
    structures = _structures(raw, f"rmd17-{molecule}")
    structures.meta["old_index"] = raw["old_index"]
    structures.meta["split_pair"] = k
    return structures, take_splits(stored, n_train, n_val, n_test, where=f"rmd17-{molecule}")


def _register() -> None:
    repo, commit = REPOSITORIES["rmd17-npz"]
    for mol in RMD17_MOLECULES:
        family = f"rmd17-{mol}"
        register_family(DatasetFamily(family, partial(family_cache_path, family),
                                      partial(prepare_rmd17, mol)))
        files = [split_file(mol, kind, k) for k in range(1, 6) for kind in ("train", "test")]
        register(DatasetSpec(family, partial(load_rmd17, mol), family=family, card={
            "name": f"rMD17 {mol} (author's split files)",
            "source": f"github.com/{repo} @ {commit[:7]} ({files[0].split('/')[0]}/, "
                      f"10 files); Christensen & von Lilienfeld, Mach. Learn.: Sci. Technol. "
                      "1, 045018 (2020)",
            "license": "CC0 1.0 (the repository's LICENSE)",
            "sha256": "pinned per file (fusion.data.sources): "
                      + ", ".join(PINNED[f].sha256[:12] for f in files[:2]) + ", ...",
            "offline": "after `fusion data import DIR` (or downloaded on first use)",
            "units": "energies eV (reported meV), forces eV/Å (reported meV/Å); raw "
                     "kcal/mol and kcal/mol/Å",
            "split": "seed s -> the author's pair s + 1 (rmd17_<mol>_{train,test}_0<s+1>.npz): "
                     "first 950 train frames train, last 50 validate, 1,000 test",
            "split_sizes": {"train": 950, "val": 50, "test": 1000},
            "split_per_seed": True,
            "n_structures": 10_000,
        }))


_register()
