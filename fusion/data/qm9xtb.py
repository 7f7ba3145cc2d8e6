"""Δ-learning datasets on QM9: DFT energy minus GFN2-xTB energy, with xTB AO features.

Dataset keys (family in brackets; cache ``<cache_dir>/<family>/<family>.npz``):

- ``qm9xtb-demo-<T>`` [``qm9xtb-demo``]: only the first :data:`DEMO_SIZES` molecules of each
  Cormorant split (train/val/test = 1,000/200/1,000), so the demo computes xTB features for
  2,200 molecules, not 130,831. ``n_train`` etc. may not exceed these sizes.
- ``qm9xtb-<T>`` [``qm9xtb``]: all of QM9. Features are computed in :data:`N_SHARDS`
  independent shards (``<cache_dir>/qm9xtb/shards/shard-KKK-of-NNN.npz``, one job each:
  ``python -m fusion.data.qm9xtb --cache-dir resources --shard K``) and merged by
  ``fusion prepare qm9xtb`` (which computes any missing shard itself).

``T`` in U0, U, H, G. Target (eV): ``y = (E_DFT - sum atomref_DFT) - (E_xTB - sum
atomref_xTB)``, the DFT atom references being QM9's (:data:`fusion.data.qm9.ATOMREF_HARTREE`)
and the xTB ones a least-squares fit of ``E_xTB`` on element counts over the cached training
molecules (stored in the cache as ``xtb_atomref``). The corrected energy is ``E_xTB +
atomref terms + predicted y``, so its error against DFT equals the error of ``y``: the
reported MAE (meV) is the MAE of the corrected energy.
"""

from __future__ import annotations

import argparse
import os
from functools import partial
from pathlib import Path

import numpy as np

from fusion.data import qm9
from fusion.data.registry import (
    DatasetFamily,
    DatasetSpec,
    family_cache_path,
    register,
    register_family,
)
from fusion.data.structures import Structures, ragged_arange, take_splits

__all__ = ["DEMO_SIZES", "N_SHARDS", "TARGETS", "shard_path", "prepare_shard",
           "prepare_demo", "prepare_full", "load_qm9xtb", "main"]

DEMO_SIZES = {"train": 1000, "val": 200, "test": 1000}
N_SHARDS = 64
TARGETS = ("U0", "U", "H", "G")
THRESHOLD = 1e-5  # atomic units; see fusion.data.xtb_features.molecule_features
ELEMENTS = (1, 6, 7, 8, 9)
LMAX = 1  # GFN2-xTB shells of H, C, N, O, F: s and p


def shard_path(cache_dir: str | os.PathLike, shard: int, n_shards: int = N_SHARDS) -> Path:
    """``<cache_dir>/qm9xtb/shards/shard-KKK-of-NNN.npz``."""
    return Path(cache_dir) / "qm9xtb" / "shards" / f"shard-{shard:03d}-of-{n_shards:03d}.npz"


def all_shard_paths(cache_dir: str | os.PathLike = "resources") -> list[Path]:
    """The shards the full ``qm9xtb`` cache is merged from (one workflow job each)."""
    return [shard_path(cache_dir, k) for k in range(N_SHARDS)]


def _features_for_rows(raw: dict, rows: np.ndarray):
    from fusion.data.xtb_features import compute_feature_set

    offsets = np.concatenate([[0], np.cumsum(raw["n_atoms"])])
    atoms = ragged_arange(offsets[rows], raw["n_atoms"][rows])
    names = [f"QM9 molecule {int(i)} (dsgdb9nsd_{int(i):06d})" for i in raw["index"][rows]]
    return compute_feature_set(raw["z"][atoms], raw["pos"][atoms], raw["n_atoms"][rows],
                               lmax=LMAX, threshold=THRESHOLD, names=names)


def _fit_xtb_atomref(raw: dict, rows: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """Per-element xTB atom references [len(ELEMENTS)] (eV), least squares on ``rows``."""
    from fusion.data.composition import element_index

    offsets = np.concatenate([[0], np.cumsum(raw["n_atoms"])])
    atoms = ragged_arange(offsets[rows], raw["n_atoms"][rows])
    col = element_index(raw["z"][atoms], ELEMENTS)
    row = np.repeat(np.arange(rows.shape[0]), raw["n_atoms"][rows])
    counts = np.zeros((rows.shape[0], len(ELEMENTS)))
    np.add.at(counts, (row, col), 1.0)
    weights, *_ = np.linalg.lstsq(counts, energy, rcond=None)
    return weights


def _write_cache(path: Path, raw: dict, rows: np.ndarray, features,
                 split_positions: dict[str, np.ndarray]) -> Path:
    from fusion.data.xtb_features import save_feature_set

    train = split_positions["train"]
    atomref = _fit_xtb_atomref(raw, rows[train], features.energy[train])
    extra = {"qm9_row": rows, "xtb_atomref": atomref, "elements": np.asarray(ELEMENTS),
             **{f"split_{k}": v for k, v in split_positions.items()}}
    return save_feature_set(path, features, extra)


def prepare_demo(cache_dir: str | os.PathLike = "resources",
                 data_dir: str | os.PathLike | None = None) -> Path:
    """Features of the first :data:`DEMO_SIZES` molecules of each Cormorant split."""
    raw = qm9.qm9_raw(cache_dir, data_dir)
    splits = qm9.cormorant_split(raw["n_atoms"].shape[0], seed=0)
    sizes = {k: min(v, splits[k].shape[0]) for k, v in DEMO_SIZES.items()}
    rows = np.concatenate([splits[k][:sizes[k]] for k in ("train", "val", "test")])
    start = np.cumsum([0, sizes["train"], sizes["val"]])
    positions = {k: np.arange(s, s + sizes[k]) for k, s in zip(("train", "val", "test"), start)}
    features = _features_for_rows(raw, rows)
    return _write_cache(family_cache_path("qm9xtb-demo", cache_dir), raw, rows, features, positions)


def prepare_shard(cache_dir: str | os.PathLike, shard: int, n_shards: int = N_SHARDS,
                  data_dir: str | os.PathLike | None = None) -> Path:
    """Features of shard ``shard`` (contiguous QM9 rows, ``np.array_split``) of the full set."""
    from fusion.data.xtb_features import save_feature_set

    if not 0 <= shard < n_shards:
        raise ValueError(f"shard must be in 0..{n_shards - 1}, got {shard}")
    raw = qm9.qm9_raw(cache_dir, data_dir)
    rows = np.array_split(np.arange(raw["n_atoms"].shape[0]), n_shards)[shard]
    return save_feature_set(shard_path(cache_dir, shard, n_shards),
                            _features_for_rows(raw, rows), {"qm9_row": rows})


def prepare_full(cache_dir: str | os.PathLike = "resources", n_shards: int = N_SHARDS,
                 data_dir: str | os.PathLike | None = None) -> Path:
    """Merge the shards of the full set (computing missing ones) into the family cache."""
    from fusion.data.xtb_features import XtbFeatureSet, load_feature_set

    raw = qm9.qm9_raw(cache_dir, data_dir)
    parts = []
    for shard in range(n_shards):
        path = shard_path(cache_dir, shard, n_shards)
        if not path.exists():
            prepare_shard(cache_dir, shard, n_shards, data_dir)
        parts.append(load_feature_set(path, ("qm9_row",)))
    rows = np.concatenate([rest["qm9_row"] for _, rest in parts])
    if not np.array_equal(rows, np.arange(raw["n_atoms"].shape[0])):
        raise ValueError(f"the shards in {shard_path(cache_dir, 0, n_shards).parent} do not "
                         "cover QM9 row by row; delete them to recompute")
    fs = [f for f, _ in parts]
    features = XtbFeatureSet(
        node=np.concatenate([f.node for f in fs]),
        node_counts=np.concatenate([f.node_counts for f in fs]),
        edge=np.concatenate([f.edge for f in fs]),
        edge_index=np.concatenate([f.edge_index for f in fs], axis=1),
        edge_counts=np.concatenate([f.edge_counts for f in fs]),
        energy=np.concatenate([f.energy for f in fs]), lmax=fs[0].lmax,
        threshold=fs[0].threshold)
    positions = qm9.cormorant_split(rows.shape[0], seed=0)
    return _write_cache(family_cache_path("qm9xtb", cache_dir), raw, rows, features, positions)


def load_qm9xtb(family: str, target: str, cache_dir: str | os.PathLike = "resources",
                n_train: int | None = None, n_val: int | None = None,
                n_test: int | None = None, seed: int = 0,
                data_dir: str | os.PathLike | None = None):
    """``(Structures, splits)`` of the Δ target (eV) with the features in
    ``meta["xtb_features"]`` and ``meta["make_loader"]`` (see module docstring).

    The family cache must exist (``fusion prepare <family>``); ``seed`` must be 0 (the
    features follow Cormorant's split); ``n_*`` may not exceed the cached split sizes.
    """
    from fusion.data.xtb_features import load_feature_set, make_xtb_loader

    if target not in TARGETS:
        raise ValueError(f"unknown qm9xtb target {target!r}; valid: {list(TARGETS)}")
    if seed != 0:
        raise ValueError(f"{family}: features follow Cormorant's split (seed 0); got seed {seed}")
    path = family_cache_path(family, cache_dir)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; build it with `fusion prepare {family}`")
    features, rest = load_feature_set(
        path, ("qm9_row", "xtb_atomref", "elements", "split_train", "split_val", "split_test"))
    raw = qm9.qm9_raw(cache_dir, data_dir)
    rows = rest["qm9_row"].astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(raw["n_atoms"])])
    atoms = ragged_arange(offsets[rows], raw["n_atoms"][rows])
    z, n_atoms = raw["z"][atoms], raw["n_atoms"][rows]
    if not np.array_equal(n_atoms, features.node_counts):
        raise qm9.cache_error(path, "its molecules' atom counts differ from the QM9 cache's")
    spec = qm9.target_spec(target)
    dft = raw["targets"][rows, list(qm9.TARGET_COLUMNS).index(spec.column)]
    dft = (dft - qm9.atomref_energy(z, n_atoms, target)) * qm9.HARTREE_TO_EV  # eV
    from fusion.data.composition import element_index

    mol = np.repeat(np.arange(rows.shape[0]), n_atoms)
    xtb_ref = np.bincount(mol, weights=rest["xtb_atomref"][element_index(z, ELEMENTS)],
                          minlength=rows.shape[0])
    xtb = features.energy - xtb_ref  # eV
    structures = Structures(
        z=z, pos=raw["pos"][atoms], n_atoms=n_atoms, y=dft - xtb,
        meta={"name": f"{family}-{target}", "target": target, "unit": "eV",
              "report_unit": "meV", "report_factor": 1000.0,
              "description": f"{spec.description}: DFT minus GFN2-xTB (atom references "
                             "subtracted from both)",
              "qm9_index": raw["index"][rows], "xtb_energy": xtb,
              "xtb_features": features, "make_loader": make_xtb_loader})
    splits = take_splits({k: rest[f"split_{k}"] for k in ("train", "val", "test")},
                         n_train, n_val, n_test, where=family, items="molecules",
                         holder="the cache")
    return structures, splits


def _register() -> None:
    register_family(DatasetFamily("qm9xtb-demo", partial(family_cache_path, "qm9xtb-demo"),
                                  prepare_demo))
    register_family(DatasetFamily("qm9xtb", partial(family_cache_path, "qm9xtb"), prepare_full,
                                  inputs=all_shard_paths))
    for family, sizes in (("qm9xtb-demo", DEMO_SIZES),
                          ("qm9xtb", {"train": 100_000, "val": 17_748, "test": 13_083})):
        for target in TARGETS:
            spec = qm9.target_spec(target)
            register(DatasetSpec(
                key=f"{family}-{target}", loader=partial(load_qm9xtb, family, target),
                family=family,
                card={
                    "name": f"QM9 {spec.description} ({target}), Δ-learning: DFT - GFN2-xTB",
                    "source": "qm9pack 1.0.3 (QM9, Ramakrishnan et al. 2014); GFN2-xTB "
                              "features computed with tblite (S, H0, P, F in the AO basis)",
                    "license": "QM9 data CC BY 4.0; qm9pack MIT; tblite LGPL-3.0",
                    "offline": True,
                    "n_structures": sum(sizes.values()),
                    "elements": list(ELEMENTS),
                    "target": target,
                    "unit": "eV",
                    "report_unit": "meV",
                    "atomref_subtracted": True,
                    "split": "Cormorant: RandomState(0) permutation, first n of each split",
                    "split_sizes": dict(sizes),
                },
            ))


_register()


def main(argv: list[str] | None = None) -> None:
    """``python -m fusion.data.qm9xtb --cache-dir DIR --shard K [--n-shards N]``."""
    parser = argparse.ArgumentParser(description="compute one shard of the qm9xtb features")
    parser.add_argument("--cache-dir", default="resources")
    parser.add_argument("--shard", type=int, required=True)
    parser.add_argument("--n-shards", type=int, default=N_SHARDS)
    args = parser.parse_args(argv)
    print(prepare_shard(args.cache_dir, args.shard, args.n_shards))


if __name__ == "__main__":
    main()
