"""Trajectory-driven augmentation of the stilbene data (issue 20): ``<base>-aug`` datasets.

One round, as workflow jobs (``workflow/rules/augment.smk``):

1. **select** (:func:`fusion.dynamics.augment.select_frames`): a trained multi-state model of
   ``<base>`` runs a small surface-hopping ensemble; :data:`AUG_FRAMES` geometries it visits
   are written to ``<cache>/<base>-aug/selected.npz``.
2. **label** (:func:`label_shard`): the base dataset's own reference method labels them, in
   :data:`AUG_SHARDS` shard jobs (``shards/shard-KKK-of-NNN.npz``); each shard is rewritten
   after every frame, so a killed job resumes where it stopped.
3. **merge** (:func:`prepare_augmented`, the family's ``prepare``): base frames + labelled
   frames → ``<cache>/<base>-aug/<base>-aug.npz``.
4. **retrain**: the ordinary ``train`` rule on ``<base>-aug``; ``fusion augment compare``
   evaluates the driver and the retrained model on the base test frames and on the held-out
   dynamics frames.

Split of ``<base>-aug``: the base frames are split exactly as ``<base>`` with the same split
sizes (the driver's training frames stay training frames, its test frames test frames); of
the dynamics frames every third (selection order 2, 5, 8, ...) is added to test, the others
to train.

Units: positions Å, energies eV (total, per state), forces eV/Å, torsion degrees.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from fusion.data.cache import cache_error, load_npz_checked, save_npz_atomic
from fusion.data.registry import (
    DatasetFamily,
    DatasetSpec,
    family_cache_path,
    register,
    register_family,
)

__all__ = [
    "AUG_FRAMES", "AUG_SHARDS", "AUGMENTED_BASES", "REFERENCES", "augmented_key", "base_key",
    "selected_path", "shard_path", "label_shard", "prepare_augmented", "load_augmented",
    "augmented_split",
]

AUG_FRAMES = 24  # geometries taken from the driver's ensemble
AUG_SHARDS = 4  # labelling jobs
SELECTED_FORMAT_VERSION = 1
SHARD_FORMAT_VERSION = 1
HOLD_OUT_EVERY = 3  # dynamics frame k is test when k % 3 == 2


def _cis_sto3g(z, pos):
    from fusion.data.stilbene import excited_state_labels

    return excited_state_labels(z, pos, basis="sto-3g", method="hf")


# base dataset -> (reference method of its labels, labeller (z, pos) -> energies [2], forces
# [2, n, 3]); the labeller must be the one the base frames were made with.
REFERENCES: dict[str, tuple[str, Callable]] = {
    "stilbene-tddft": ("CIS (TDA on RHF) / STO-3G", _cis_sto3g),
    "stilbene-tddft-1k": ("CIS (TDA on RHF) / STO-3G", _cis_sto3g),
}
AUGMENTED_BASES = tuple(REFERENCES)


def augmented_key(base: str) -> str:
    return f"{base}-aug"


def base_key(key: str) -> str:
    """``stilbene-tddft-aug`` -> ``stilbene-tddft``; ``ValueError`` for other keys."""
    base = key[:-4] if key.endswith("-aug") else ""
    if base not in REFERENCES:
        raise ValueError(f"{key!r} is not an augmented dataset; known: "
                         f"{', '.join(augmented_key(b) for b in AUGMENTED_BASES)}")
    return base


def selected_path(base: str, cache_dir: str | os.PathLike = "resources") -> Path:
    return Path(cache_dir) / augmented_key(base) / "selected.npz"


def shard_path(base: str, shard: int, cache_dir: str | os.PathLike = "resources") -> Path:
    return (Path(cache_dir) / augmented_key(base) / "shards"
            / f"shard-{shard:03d}-of-{AUG_SHARDS:03d}.npz")


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_selected(path: str | os.PathLike) -> dict:
    """The selection written by :func:`fusion.dynamics.augment.select_frames`: ``z`` [n],
    ``pos`` [F, n, 3] Å, ``predicted`` [F, S] eV, ``start`` [F], ``trajectory`` [F],
    ``time_fs`` [F], ``why`` [F] (``gap``: smallest predicted gap of its trajectory;
    ``time``: evenly spaced), ``settings`` (JSON: driver run, ensemble settings)."""
    d = load_npz_checked(path, SELECTED_FORMAT_VERSION,
                         ("z", "pos", "predicted", "start", "trajectory", "time_fs", "why",
                          "settings"))
    n = d["z"].shape[0]
    if d["pos"].ndim != 3 or d["pos"].shape[1:] != (n, 3) or len(d["pos"]) < 1:
        raise cache_error(path, f"field 'pos' should be [F >= 1, {n}, 3], got {d['pos'].shape}")
    d["settings"] = json.loads(str(d["settings"]))
    return d


def label_shard(base: str, selected: str | os.PathLike, out: str | os.PathLike, shard: int,
                n_shards: int = AUG_SHARDS, threads: int = 1,
                labeller: Callable | None = None, log: Callable[[str], None] = _log) -> Path:
    """Label the selected frames ``k`` with ``k % n_shards == shard`` with ``base``'s reference
    method into ``out`` (``index`` [F], ``energies`` [F, 2] eV, ``forces`` [F, 2, n, 3] eV/Å).
    Frames already labelled (same selection) are kept; progress is saved atomically after
    every frame (to ``<out>.partial.npz`` until the shard is complete, so a killed job resumes
    even where a workflow manager deletes its incomplete output). ``labeller`` replaces the
    reference (tests)."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard must be in [0, {n_shards}), got {shard}")
    if base not in REFERENCES:
        raise ValueError(f"base {base!r}: augmentation knows {', '.join(REFERENCES)}")
    method, reference = REFERENCES[base]
    labeller = labeller or reference
    sel = load_selected(selected)
    fingerprint = {"base": base, "method": method, "selection": sel["settings"],
                   "shard": shard, "n_shards": n_shards}
    out = Path(out)
    # Progress goes to a side file, renamed to ``out`` when the shard is complete: a workflow
    # manager deletes the declared output of a killed job, never this file.
    progress = out.with_name(out.name.removesuffix(".npz") + ".partial.npz")
    done: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for path in (out, progress):
        if not path.exists():
            continue
        old = load_npz_checked(path, SHARD_FORMAT_VERSION, ("index", "energies", "forces",
                                                            "settings"))
        if json.loads(str(old["settings"])) != fingerprint:
            raise ValueError(f"{path} was labelled for another selection or shard layout; "
                             "delete it to relabel")
        done = {int(i): (old["energies"][k], old["forces"][k])
                for k, i in enumerate(old["index"].tolist())}
        break
    todo = [k for k in range(shard, len(sel["pos"]), n_shards) if k not in done]
    log(f"shard {shard}/{n_shards}: {len(done)} frame(s) labelled before, {len(todo)} to do "
        f"({method})")
    from pyscf import lib

    old_threads = lib.num_threads()
    lib.num_threads(threads)
    try:
        for k in todo:
            started = time.perf_counter()
            try:
                e, f = labeller(sel["z"], sel["pos"][k])
            except RuntimeError as err:
                raise RuntimeError(f"{out}: selected frame {k}: {err}") from err
            done[k] = (np.asarray(e, dtype=np.float64), np.asarray(f, dtype=np.float64))
            _save_shard(progress, done, fingerprint)
            log(f"frame {k}: S1-S0 {e[1] - e[0]:.3f} eV (model said "
                f"{sel['predicted'][k][1] - sel['predicted'][k][0]:.3f}), "
                f"{time.perf_counter() - started:.0f} s")
    finally:
        lib.num_threads(old_threads)
    if progress.exists():
        os.replace(progress, out)
    elif not out.exists():
        _save_shard(out, done, fingerprint)  # an empty shard still gets its file
    return out


def _save_shard(out: Path, done: dict, fingerprint: dict) -> None:
    order = sorted(done)
    n_at = next(iter(done.values()))[1].shape[1] if done else 0
    save_npz_atomic(out, {
        "index": np.asarray(order, dtype=np.int64),
        "energies": np.stack([done[k][0] for k in order]) if order else np.zeros((0, 2)),
        "forces": np.stack([done[k][1] for k in order]) if order else np.zeros((0, 2, n_at, 3)),
        "settings": np.asarray(json.dumps(fingerprint, sort_keys=True)),
    }, SHARD_FORMAT_VERSION)


def prepare_augmented(base: str, cache_dir: str | os.PathLike = "resources",
                      log: Callable[[str], None] = _log) -> Path:
    """Merge the base cache, the selection and its :data:`AUG_SHARDS` labelled shards into
    ``<cache>/<base>-aug/<base>-aug.npz``. Raises ``FileNotFoundError`` naming the missing
    input and ``ValueError`` if a selected frame is in no shard."""
    from fusion.data.stilbene import (
        FORMAT_VERSION,
        STILBENE_SMILES,
        STILBENE_TORSION_SMARTS,
        TorsionGeometryBuilder,
        dihedral_deg,
        load_stilbene,
    )

    key = augmented_key(base)
    inputs = _inputs(base, cache_dir)  # base cache, selection, shards
    base_path = inputs[0]
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{key} is built from {', '.join(missing)}, which do(es) not "
                                "exist yet: run the workflow (rules prepare_dataset, "
                                "augment_select, augment_label) first")
    frames = load_stilbene(base_path)
    sel = load_selected(inputs[1])
    labelled: dict[int, tuple] = {}
    for path in inputs[2:]:
        d = load_npz_checked(path, SHARD_FORMAT_VERSION, ("index", "energies", "forces"))
        labelled.update({int(i): (d["energies"][k], d["forces"][k])
                         for k, i in enumerate(d["index"].tolist())})
    missing_frames = sorted(set(range(len(sel["pos"]))) - set(labelled))
    if missing_frames:
        raise ValueError(f"selected frame(s) {missing_frames[:10]} of {inputs[1]} are in no "
                         "labelled shard")
    if not np.array_equal(sel["z"], frames.z):
        raise ValueError(f"{inputs[1]} is not a selection of {base} molecules (atom order "
                         "differs)")
    torsion_atoms = TorsionGeometryBuilder(STILBENE_SMILES, STILBENE_TORSION_SMARTS,
                                           0).torsion_atoms
    k_all = range(len(sel["pos"]))
    settings = {**frames.settings, "augmented_from": base, "selection": sel["settings"],
                "n_base": len(frames), "n_dynamics": len(sel["pos"])}
    out = family_cache_path(key, cache_dir)
    save_npz_atomic(out, {
        "z": frames.z,
        "pos": np.concatenate([frames.pos, sel["pos"]]),
        "energies": np.concatenate([frames.energies, np.stack([labelled[k][0] for k in k_all])]),
        "forces": np.concatenate([frames.forces, np.stack([labelled[k][1] for k in k_all])]),
        "torsion": np.concatenate([frames.torsion, [dihedral_deg(p, torsion_atoms)
                                                    for p in sel["pos"]]]),
        "origin": np.asarray(["base"] * len(frames) + ["dynamics"] * len(sel["pos"])),
        "settings": np.asarray(json.dumps(settings, sort_keys=True)),
    }, FORMAT_VERSION)
    log(f"{out}: {len(frames)} {base} frames + {len(sel['pos'])} labelled dynamics frames")
    return out


def augmented_split(n_base: int, n_frames: int, n_train: int | None = None,
                    n_val: int | None = None, n_test: int | None = None
                    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The split of ``<base>-aug`` (module docstring) with ``n_frames`` frames of which the
    first ``n_base`` are the base's: ``({"train", "val", "test"}, base test, dynamics
    test)``, frame indices."""
    from fusion.data.xtb_md import frame_split

    base = frame_split(n_base, n_train, n_val, n_test)
    k = n_base + np.arange(n_frames - n_base)
    held_out = (k - n_base) % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1
    splits = {"train": np.concatenate([k[~held_out], base["train"]]), "val": base["val"],
              "test": np.concatenate([k[held_out], base["test"]])}
    return ({name: v.astype(np.int64) for name, v in splits.items()}, base["test"],
            k[held_out].astype(np.int64))


def load_augmented(base: str, cache_dir: str | os.PathLike = "resources",
                   n_train: int | None = None, n_val: int | None = None,
                   n_test: int | None = None, seed: int = 0):
    """``<base>-aug`` as ``(Structures, splits)``. ``n_train``/``n_val``/``n_test`` size the
    split of the **base** frames exactly as for ``<base>`` (so a run given the driver's split
    sizes trains on the driver's base frames); the dynamics frames are added on top."""
    from fusion.data.stilbene import frames_structures, load_stilbene

    key = augmented_key(base)
    path = family_cache_path(key, cache_dir)
    frames = load_stilbene(path)
    n_base = int(frames.settings.get("n_base", -1))
    if not 0 < n_base <= len(frames):
        raise cache_error(path, "settings lack 'n_base' (not an augmented cache?)")
    splits, _, _ = augmented_split(n_base, len(frames), n_train, n_val, n_test)
    return frames_structures(frames, key), splits


def _inputs(base: str, cache_dir) -> list[Path]:
    return [family_cache_path(base, cache_dir), selected_path(base, cache_dir),
            *(shard_path(base, s, cache_dir) for s in range(AUG_SHARDS))]


def _register() -> None:
    for base, (method, _) in REFERENCES.items():
        key = augmented_key(base)
        register_family(DatasetFamily(key, partial(family_cache_path, key),
                                      partial(prepare_augmented, base),
                                      inputs=partial(_inputs, base)))
        register(DatasetSpec(
            key=key, loader=partial(load_augmented, base), family=key,
            card={
                "name": f"{base} plus {AUG_FRAMES} frames from one round of "
                        "trajectory-driven augmentation",
                "source": f"the {base} frames, plus {AUG_FRAMES} geometries visited by a "
                          f"surface-hopping ensemble of a model trained on {base} (the "
                          "workflow's `augment.driver` run), labelled with the same "
                          f"reference ({method})",
                "license": "generated here (no third-party data)",
                "offline": True,
                "states": ["S0", "S1"],
                "units": "energies eV (total, per state; reported meV), forces eV/Å "
                         "(reported meV/Å), torsion degrees",
                "report_unit": "meV",
                "split": f"the {base} split for its frames; of the dynamics frames every "
                         "third is test, the rest train",
            },
        ))


_register()
