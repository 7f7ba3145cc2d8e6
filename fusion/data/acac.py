"""Acetylacetone (``acac-*``): the BOTNet temperature-transfer benchmark, from the authors'
files (davkovacs/BOTNet-datasets ``dataset_acac/``, pinned in :mod:`fusion.data.sources`).

Labels: UHF PBE+D3/def2-SVP (ORCA 5), energies eV, forces eV/Å, extxyz. Every key trains on
``train_300K.xyz`` (500 frames from 300 K xTB MD: 450 train / 50 validation after a
``RandomState(0)`` permutation, as the MACE paper's 450 + 50) and tests on one set:

=================== ======================= =============================================
key                 test file               what it probes
=================== ======================= =============================================
``acac-300K``       ``test_MD_300K.xyz``    in distribution
``acac-600K``       ``test_MD_600K.xyz``    temperature transfer (hotter geometries)
``acac-H-transfer`` ``test_H_transfer.xyz`` NEB path of the intramolecular proton transfer
``acac-dihedral``   ``test_dihedral.xyz``   O-C-C-C dihedral scan (training data < 30°)
=================== ======================= =============================================

The H-transfer (15 frames) and dihedral (45 frames) files label energies only: their test
metrics have no force errors (``meta["test_has_forces"]`` is False).

The three transfer keys have the card entry ``trained_as: acac-300K``: the workflow does not
train them again, it evaluates the ``acac-300K`` model of the same model, variant and seed
on their test set (``fusion evaluate``). ``meta["e0s"]`` holds the isolated-atom energies
of ``isolated_atoms.xyz`` (H, C, O), used as the models' atomic reference energies.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import numpy as np

from fusion.data.cache import save_npz_atomic
from fusion.data.extxyz import FrameError, parse_comment, parse_extxyz
from fusion.data.forcefields import (
    CACHE_FORMAT_VERSION,
    _concat,
    _load_frames,
    _structures,
    _val_from_train,
)
from fusion.data.registry import (
    DatasetFamily,
    DatasetSpec,
    family_cache_path,
    register,
    register_family,
)
from fusion.data.sources import REPOSITORIES, fetch_pinned
from fusion.data.structures import take_splits

__all__ = ["ACAC_TEST_SETS", "TRAIN_KEY", "read_isolated_atoms", "prepare_acac", "load_acac"]

FOLDER = "dataset_acac"
TRAIN_FILE = "train_300K"
TRAIN_KEY = "acac-300K"
#: dataset key suffix -> test file stem
ACAC_TEST_SETS = {"300K": "test_MD_300K", "600K": "test_MD_600K",
                  "H-transfer": "test_H_transfer", "dihedral": "test_dihedral"}


def read_isolated_atoms(text: str, source: str) -> dict[int, float]:
    """``{Z: energy (eV)}`` from an isolated-atoms extxyz (one atom per frame, energy in the
    comment line). Raises ``FrameError`` naming the file and frame when malformed."""
    from ase.data import atomic_numbers

    lines = [ln for ln in text.splitlines() if ln.strip()]
    out: dict[int, float] = {}
    for frame, i in enumerate(range(0, len(lines), 3)):
        where = f"{source}: frame {frame} (line {i + 1})"
        block = lines[i:i + 3]
        if len(block) != 3 or block[0].strip() != "1":
            raise FrameError(f"{where}: expected a one-atom frame ('1', comment, atom line)")
        info = parse_comment(block[1])
        symbol = block[2].split()[0]
        if symbol not in atomic_numbers or "energy" not in info:
            raise FrameError(f"{where}: expected an element symbol and energy=..., got "
                             f"{symbol!r} and keys {sorted(info)}")
        try:
            out[atomic_numbers[symbol]] = float(info["energy"])
        except ValueError:
            raise FrameError(f"{where}: energy={info['energy']!r} is not a number") from None
    return out


def prepare_acac(cache_dir: str | os.PathLike = "resources", opener=None, log=print) -> Path:
    """Cache of the training file, the four test files and the isolated-atom energies."""
    parts = []
    for stem in (TRAIN_FILE, *ACAC_TEST_SETS.values()):
        path = fetch_pinned(f"{FOLDER}/{stem}.xyz", cache_dir, opener=opener, log=log)
        frames = parse_extxyz(path.read_text(), str(path), require_forces=stem == TRAIN_FILE)
        has_forces = np.array([info.get("has_forces") != "F" for info in frames.info])
        parts.append((stem, {"z": frames.z, "pos": frames.pos, "n_atoms": frames.n_atoms,
                             "energy": frames.energy, "forces": frames.forces,
                             "has_forces": has_forces}))
    iso_path = fetch_pinned(f"{FOLDER}/isolated_atoms.xyz", cache_dir, opener=opener, log=log)
    e0s = read_isolated_atoms(iso_path.read_text(), str(iso_path))
    raw = _concat(parts)
    raw["has_forces"] = np.concatenate([p["has_forces"] for _, p in parts])
    missing = sorted(set(np.unique(raw["z"]).tolist()) - set(e0s))
    if missing:
        raise ValueError(f"{iso_path}: no isolated-atom energy for elements {missing}")
    raw["e0_z"] = np.array(sorted(e0s), dtype=np.int64)
    raw["e0_energy"] = np.array([e0s[z] for z in sorted(e0s)])
    path = family_cache_path("acac", cache_dir)
    save_npz_atomic(path, raw, CACHE_FORMAT_VERSION)
    return path


def load_acac(test_set: str, cache_dir: str | os.PathLike = "resources",
              n_train: int | None = None, n_val: int | None = None, n_test: int | None = None,
              seed: int = 0, opener=None):
    """acac with test set ``test_set`` (a key of :data:`ACAC_TEST_SETS`); see module doc."""
    if test_set not in ACAC_TEST_SETS:
        raise ValueError(f"unknown acac test set {test_set!r}; valid: {list(ACAC_TEST_SETS)}")
    path = family_cache_path("acac", cache_dir)
    if not path.exists():
        prepare_acac(cache_dir, opener)
    raw = _load_frames(path, ("e0_z", "e0_energy", "has_forces"))
    train, val = _val_from_train(np.flatnonzero(raw["subset"] == TRAIN_FILE), 50)
    stored = {"train": train, "val": val,
              "test": np.flatnonzero(raw["subset"] == ACAC_TEST_SETS[test_set])}
    structures = _structures(raw, f"acac-{test_set}")
    structures.meta["e0s"] = dict(zip(raw["e0_z"].tolist(), raw["e0_energy"].tolist()))
    # H transfer and the dihedral scan label energies only (their forces are zeros here).
    structures.meta["test_has_forces"] = bool(raw["has_forces"][stored["test"]].all())
    return structures, take_splits(stored, n_train, n_val, n_test, where=f"acac-{test_set}")


def _register() -> None:
    repo, commit = REPOSITORIES[FOLDER]
    register_family(DatasetFamily("acac", partial(family_cache_path, "acac"), prepare_acac))
    for suffix, stem in ACAC_TEST_SETS.items():
        key = f"acac-{suffix}"
        card = {
            "name": f"acetylacetone, train 300 K, test {stem}",
            "source": f"github.com/{repo} @ {commit[:7]} ({FOLDER}/); Batatia et al., "
                      "arXiv:2205.06643 (BOTNet) and MACE (NeurIPS 2022) Table 3",
            "license": "MIT (the repository's LICENSE)",
            "sha256": "pinned per file (fusion.data.sources)",
            "offline": "after `fusion data import DIR` (or downloaded on first use)",
            "units": "energies eV (reported meV), forces eV/Å (reported meV/Å); E0s from "
                     "isolated_atoms.xyz",
            "split": f"train_300K.xyz: 450 train / 50 val (RandomState(0)); test {stem}.xyz",
            "split_sizes": {"train": 450, "val": 50},
        }
        if key != TRAIN_KEY:
            card["trained_as"] = TRAIN_KEY
        register(DatasetSpec(key, partial(load_acac, suffix), family="acac", card=card))


_register()
