"""Downloaded force-field benchmarks: rMD17, original MD17, 3BPA and xxMD.

All of them are loaded into :class:`~fusion.data.structures.Structures` with ``y`` the
total energy in eV and ``forces`` in eV/Å (reported in meV and meV/Å). Raw files are
fetched with :func:`fusion.data.download.fetch` (resumable, sha256-checked, a clear error
without network) into ``<cache_dir>/downloads``; each dataset family is then converted
once into ``<cache_dir>/<family>/<family>.npz`` (atomic write, format-versioned).

============ ============================ ===================================================
family       source                       split
============ ============================ ===================================================
rmd17-<mol>  figshare 12672038 (rMD17)    official ``index_{train,test}_0N.csv`` (N = 1..5):
                                          the 1,000 train indices permuted with
                                          ``RandomState(0)``: 950 train / 50 val; 1,000 test
md17-<mol>   sgdml.org / quantum-machine  ``RandomState(0)`` permutation: 950 / 50 / 1,000
             ``md17_<mol>.npz``
3bpa         BOTNet-datasets              train/val from ``train_300K.xyz`` (450 / 50 after a
             ``dataset_3BPA.tar.gz``      ``RandomState(0)`` permutation); test = the file
                                          named by the key (300K, 600K, 1200K, dih_beta*)
xxmd-<mol>-  github zpengmei/xxMD         the ``<code>_{train,val,test}_<state>.xyz`` files
<state>      (CASSCF s0/s1/s2, DFT uks)
============ ============================ ===================================================

Bad input (checked before any cache is written, so nothing else is lost): mismatched
array lengths, NaN/inf values, a frame without energy or forces, an unknown molecule
name; each raises ``ValueError`` naming the file and the frame.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
import zipfile
from functools import partial
from pathlib import Path

import numpy as np

from fusion.data.cache import cache_error, load_npz_checked, save_npz_atomic
from fusion.data.download import RemoteFile, fetch
from fusion.data.extxyz import parse_extxyz
from fusion.data.registry import (
    DatasetFamily,
    DatasetSpec,
    family_cache_path,
    register,
    register_family,
)
from fusion.data.structures import Structures, take_splits

__all__ = [
    "KCAL_MOL_TO_EV",
    "RMD17_MOLECULES",
    "MD17_MOLECULES",
    "BPA_TEST_SETS",
    "XXMD_MOLECULES",
    "XXMD_STATES",
    "RMD17_ARCHIVE",
    "BPA_ARCHIVE",
    "XXMD_ARCHIVE",
    "md17_remote",
    "frames_from_npz",
    "prepare_rmd17",
    "load_rmd17",
    "prepare_md17",
    "load_md17",
    "prepare_3bpa",
    "load_3bpa",
    "prepare_xxmd",
    "load_xxmd",
]

#: kcal/mol -> eV (1 kcal = 4184 J; N_A and e from CODATA 2018), as ASE's units.
KCAL_MOL_TO_EV = 4184.0 / (6.02214076e23 * 1.602176634e-19)
CACHE_FORMAT_VERSION = 1
_FRAME_KEYS = ("z", "pos", "n_atoms", "energy", "forces", "subset")

#: rMD17 molecule name -> name in the archive's files (``rmd17_<file>.npz``).
RMD17_MOLECULES = {
    "aspirin": "aspirin", "azobenzene": "azobenzene", "benzene": "benzene",
    "ethanol": "ethanol", "malonaldehyde": "malonaldehyde", "naphthalene": "naphthalene",
    "paracetamol": "paracetamol", "salicylic-acid": "salicylic", "toluene": "toluene",
    "uracil": "uracil",
}
#: original MD17 molecule name -> file stem at quantum-machine.org (``md17_<stem>.npz``).
MD17_MOLECULES = {
    "aspirin": "aspirin", "benzene": "benzene2017", "ethanol": "ethanol",
    "malonaldehyde": "malonaldehyde", "naphthalene": "naphthalene",
    "salicylic-acid": "salicylic", "toluene": "toluene", "uracil": "uracil",
}
#: 3BPA dataset key suffix -> test file.
BPA_TEST_SETS = {
    "300K": "test_300K.xyz", "600K": "test_600K.xyz", "1200K": "test_1200K.xyz",
    "dih-beta120": "test_dih_beta120.xyz", "dih-beta150": "test_dih_beta150.xyz",
    "dih-beta180": "test_dih_beta180.xyz",
}
BPA_TRAIN_FILE = "train_300K.xyz"
#: xxMD molecule -> file code; states: CASSCF s0/s1/s2 and the M06 DFT ("uks") recalculation.
XXMD_MOLECULES = {"azobenzene": "azo", "dithiophene": "dia", "malonaldehyde": "mal",
                  "stilbene": "sti"}
XXMD_STATES = {"s0": "s0", "s1": "s1", "s2": "s2", "dft": "uks"}

# Upstream files. No sha256 is published for any of them (figshare lists an md5 for the
# rMD17 archive on its page; GitHub archives of a branch change with the branch), so
# sha256=None: the first verified download records it (<file>.sha256) and later uses are
# checked against it. See docs/datasets.md.
RMD17_ARCHIVE = RemoteFile("https://figshare.com/ndownloader/files/23950376",
                           "rmd17.tar.bz2", None)
BPA_ARCHIVE = RemoteFile(
    "https://github.com/davkovacs/BOTNet-datasets/raw/refs/heads/main/dataset_3BPA.tar.gz",
    "dataset_3BPA.tar.gz", None)
XXMD_ARCHIVE = RemoteFile("https://github.com/zpengmei/xxMD/archive/refs/heads/main.zip",
                          "xxMD-main.zip", None)


def md17_remote(molecule: str) -> RemoteFile:
    """The original MD17 npz of ``molecule`` (sGDML / quantum-machine.org)."""
    stem = _lookup(molecule, MD17_MOLECULES, "MD17")
    return RemoteFile(f"http://www.quantum-machine.org/gdml/data/npz/md17_{stem}.npz",
                      f"md17_{stem}.npz", None)


def _lookup(name: str, table: dict, what: str) -> str:
    if name not in table:
        raise ValueError(f"unknown {what} molecule {name!r}; valid: {', '.join(table)}")
    return table[name]


# ---------------------------------------------------------------------- frames, checks
def frames_from_npz(arrays: dict[str, np.ndarray], source: str, keys: dict[str, str],
                    energy_factor: float, forces_factor: float) -> dict[str, np.ndarray]:
    """Flat frames (``z``, ``pos``, ``n_atoms``, ``energy``, ``forces``) from an MD17-style
    npz: one molecule, ``z`` [N], positions/forces [F, N, 3], energies [F] or [F, 1].

    ``keys`` maps ``z``/``pos``/``energy``/``forces`` to the npz names; energies and
    forces are multiplied by the factors (e.g. kcal/mol -> eV). Raises ``ValueError``
    naming ``source``, the array and the frame on missing keys, mismatched lengths or
    non-finite values.
    """
    missing = [v for v in keys.values() if v not in arrays]
    if missing:
        raise ValueError(f"{source}: missing arrays {missing}; found {sorted(arrays)}")
    z = np.asarray(arrays[keys["z"]]).reshape(-1).astype(np.int64)
    pos = np.asarray(arrays[keys["pos"]], dtype=np.float64)
    energy = np.asarray(arrays[keys["energy"]], dtype=np.float64)
    forces = np.asarray(arrays[keys["forces"]], dtype=np.float64)
    n = z.shape[0]
    if energy.ndim == 2 and energy.shape[1] == 1:
        energy = energy[:, 0]
    f = pos.shape[0] if pos.ndim == 3 else -1
    problems = []
    if pos.shape != (f, n, 3):
        problems.append(f"{keys['pos']!r} has shape {pos.shape}, expected [F, {n}, 3]")
    if energy.shape != (f,):
        problems.append(f"{keys['energy']!r} has shape {energy.shape}, expected [F] = ({f},)")
    if forces.shape != (f, n, 3):
        problems.append(f"{keys['forces']!r} has shape {forces.shape}, expected [F, {n}, 3] "
                        f"= ({f}, {n}, 3)")
    if problems:
        raise ValueError(f"{source}: mismatched array lengths: {'; '.join(problems)} "
                         f"({keys['z']!r} lists {n} atoms)")
    for name, arr in ((keys["pos"], pos), (keys["energy"], energy), (keys["forces"], forces)):
        bad = ~np.isfinite(arr)
        if bad.any():
            frame = int(np.argwhere(bad)[0][0])
            raise ValueError(f"{source}: frame {frame}: non-finite value in {name!r}; expected "
                             "finite positions, energies and forces")
    return {"z": np.tile(z, f), "pos": pos.reshape(f * n, 3), "n_atoms": np.full(f, n),
            "energy": energy * energy_factor, "forces": forces.reshape(f * n, 3) * forces_factor}


def _concat(parts: list[tuple[str, dict[str, np.ndarray]]]) -> dict[str, np.ndarray]:
    """Concatenate frame dicts, recording each frame's subset label."""
    out = {k: np.concatenate([p[k] for _, p in parts]) for k in
           ("z", "pos", "n_atoms", "energy", "forces")}
    out["subset"] = np.concatenate([np.full(p["n_atoms"].shape[0], label)
                                    for label, p in parts]).astype(str)
    return out


def _frames_of_xyz(data: bytes, source: str) -> dict[str, np.ndarray]:
    fr = parse_extxyz(data.decode(), source)
    return {"z": fr.z, "pos": fr.pos, "n_atoms": fr.n_atoms, "energy": fr.energy,
            "forces": fr.forces}


def _load_frames(path: Path, extra: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    raw = load_npz_checked(path, CACHE_FORMAT_VERSION, _FRAME_KEYS + extra)
    m, a = raw["n_atoms"].shape[0], int(raw["n_atoms"].sum())
    for key, shape in (("z", (a,)), ("pos", (a, 3)), ("energy", (m,)), ("forces", (a, 3)),
                       ("subset", (m,))):
        if raw[key].shape != shape:
            raise cache_error(path, f"array {key!r} has shape {raw[key].shape}, expected {shape}")
    return raw


def _structures(raw: dict[str, np.ndarray], name: str) -> Structures:
    return Structures(
        z=raw["z"], pos=raw["pos"], n_atoms=raw["n_atoms"], y=raw["energy"],
        forces=raw["forces"],
        meta={"name": name, "target": "energy", "unit": "eV", "report_unit": "meV",
              "report_factor": 1000.0, "forces_unit": "eV/Å", "subset": raw["subset"]},
    )


def _val_from_train(train: np.ndarray, n_val_default: int, seed: int = 0):
    """``(train, val)``: ``train`` permuted with ``RandomState(seed)``, the last
    ``min(n_val_default, len // 10)`` (at least 1) are validation."""
    perm = np.random.RandomState(seed).permutation(train.shape[0])
    shuffled = train[perm]
    n_val = min(n_val_default, max(1, train.shape[0] // 10))  # 50 of 1,000 (rMD17), of 500
    return shuffled[:-n_val], shuffled[-n_val:]


# ---------------------------------------------------------------------- archives
def _tar_members(archive: Path, wanted: dict[str, re.Pattern]) -> dict[str, bytes]:
    """Bytes of the members whose basename matches each pattern (one per key)."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive) as tar:
            for member in tar:
                base = os.path.basename(member.name)
                for key, pattern in wanted.items():
                    if key not in found and member.isfile() and pattern.fullmatch(base):
                        found[key] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ValueError(f"{archive}: cannot read the archive ({err}); it is truncated or "
                         "corrupt: delete it and download it again") from err
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise ValueError(f"{archive}: no member matching {[wanted[k].pattern for k in missing]}")
    return found


def _npz_from_bytes(data: bytes, source: str) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"{source}: not a readable .npz file ({err})") from err


def _index_csv(data: bytes, source: str) -> np.ndarray:
    values = []
    for k, line in enumerate(data.decode().splitlines()):
        text = line.strip().strip(",")
        if not text:
            continue
        try:
            values.append(int(float(text)))
        except ValueError:
            if k == 0:  # a header line
                continue
            raise ValueError(f"{source}: line {k + 1}: {line!r} is not an index") from None
    return np.asarray(values, dtype=np.int64)


# ---------------------------------------------------------------------- rMD17
def prepare_rmd17(molecule: str, cache_dir: str | os.PathLike = "resources",
                  opener=None) -> Path:
    """Convert ``rmd17_<mol>.npz`` and the 5 index splits from the figshare archive.

    Energies kcal/mol -> eV, forces kcal/mol/Å -> eV/Å. The cache also holds
    ``train_1..5``/``test_1..5`` index arrays.
    """
    stem = _lookup(molecule, RMD17_MOLECULES, "rMD17")
    archive = fetch(RMD17_ARCHIVE, cache_dir, opener=opener)
    wanted = {"npz": re.compile(rf"rmd17_{stem}\.npz")}
    for k in range(1, 6):
        wanted[f"train_{k}"] = re.compile(rf"index_train_0{k}\.csv")
        wanted[f"test_{k}"] = re.compile(rf"index_test_0{k}\.csv")
    members = _tar_members(archive, wanted)
    source = f"{archive}:rmd17_{stem}.npz"
    frames = frames_from_npz(_npz_from_bytes(members["npz"], source), source,
                             {"z": "nuclear_charges", "pos": "coords", "energy": "energies",
                              "forces": "forces"}, KCAL_MOL_TO_EV, KCAL_MOL_TO_EV)
    raw = _concat([("all", frames)])
    m = raw["n_atoms"].shape[0]
    for key in wanted:
        if key == "npz":
            continue
        idx = _index_csv(members[key], f"{archive}:{key}")
        if idx.size and (idx.min() < 0 or idx.max() >= m):
            raise ValueError(f"{archive}: split {key} has indices outside 0..{m - 1}")
        raw[key] = idx
    path = family_cache_path(f"rmd17-{molecule}", cache_dir)
    save_npz_atomic(path, raw, CACHE_FORMAT_VERSION)
    return path


def load_rmd17(molecule: str, cache_dir: str | os.PathLike = "resources",
               n_train: int | None = None, n_val: int | None = None,
               n_test: int | None = None, seed: int = 0, split_index: int = 1,
               opener=None) -> tuple[Structures, dict[str, np.ndarray]]:
    """rMD17 ``molecule`` with official split ``split_index`` (1..5): 950 train / 50 val
    (``RandomState(0)`` permutation of the 1,000 train indices) and the 1,000 test
    indices, cut to the first ``n_*``. ``seed`` is the training seed (split fixed)."""
    if split_index not in range(1, 6):
        raise ValueError(f"rMD17 split_index must be 1..5, got {split_index}")
    path = family_cache_path(f"rmd17-{molecule}", cache_dir)
    _lookup(molecule, RMD17_MOLECULES, "rMD17")
    if not path.exists():
        prepare_rmd17(molecule, cache_dir, opener)
    extra = tuple(f"{s}_{k}" for s in ("train", "test") for k in range(1, 6))
    raw = _load_frames(path, extra)
    train, val = _val_from_train(raw[f"train_{split_index}"], 50)
    stored = {"train": train, "val": val, "test": raw[f"test_{split_index}"]}
    return _structures(raw, f"rmd17-{molecule}"), take_splits(
        stored, n_train, n_val, n_test, where=f"rmd17-{molecule}")


# ---------------------------------------------------------------------- MD17
def prepare_md17(molecule: str, cache_dir: str | os.PathLike = "resources",
                 opener=None) -> Path:
    """Convert the original MD17 npz (``z``, ``R`` Å, ``E`` kcal/mol, ``F`` kcal/mol/Å)."""
    remote = md17_remote(molecule)
    path_in = fetch(remote, cache_dir, opener=opener)
    arrays = _npz_from_bytes(path_in.read_bytes(), str(path_in))
    frames = frames_from_npz(arrays, str(path_in), {"z": "z", "pos": "R", "energy": "E",
                                                    "forces": "F"},
                             KCAL_MOL_TO_EV, KCAL_MOL_TO_EV)
    path = family_cache_path(f"md17-{molecule}", cache_dir)
    save_npz_atomic(path, _concat([("all", frames)]), CACHE_FORMAT_VERSION)
    return path


def load_md17(molecule: str, cache_dir: str | os.PathLike = "resources",
              n_train: int | None = 950, n_val: int | None = 50, n_test: int | None = 1000,
              seed: int = 0, opener=None) -> tuple[Structures, dict[str, np.ndarray]]:
    """Original MD17 ``molecule``: ``RandomState(0)`` permutation of all frames, train =
    first ``n_train`` (950), val = next ``n_val`` (50), test = next ``n_test`` (1,000)."""
    _lookup(molecule, MD17_MOLECULES, "MD17")
    path = family_cache_path(f"md17-{molecule}", cache_dir)
    if not path.exists():
        prepare_md17(molecule, cache_dir, opener)
    raw = _load_frames(path)
    m = raw["n_atoms"].shape[0]
    n_train = 950 if n_train is None else n_train
    n_val = 50 if n_val is None else n_val
    n_test = 1000 if n_test is None else n_test
    if n_train + n_val + n_test > m:
        raise ValueError(f"md17-{molecule}: n_train + n_val + n_test = "
                         f"{n_train + n_val + n_test} > {m} frames")
    perm = np.random.RandomState(0).permutation(m).astype(np.int64)
    a, b = n_train, n_train + n_val
    return _structures(raw, f"md17-{molecule}"), {
        "train": perm[:a], "val": perm[a:b], "test": perm[b:b + n_test]}


# ---------------------------------------------------------------------- 3BPA
def prepare_3bpa(cache_dir: str | os.PathLike = "resources", opener=None) -> Path:
    """Convert ``train_300K.xyz`` and the six test files of the BOTNet 3BPA archive."""
    archive = fetch(BPA_ARCHIVE, cache_dir, opener=opener)
    files = {"train_300K": BPA_TRAIN_FILE, **BPA_TEST_SETS}
    members = _tar_members(archive, {k: re.compile(re.escape(v)) for k, v in files.items()})
    parts = [(label, _frames_of_xyz(members[label], f"{archive}:{name}"))
             for label, name in files.items()]
    path = family_cache_path("3bpa", cache_dir)
    save_npz_atomic(path, _concat(parts), CACHE_FORMAT_VERSION)
    return path


def load_3bpa(test_set: str, cache_dir: str | os.PathLike = "resources",
              n_train: int | None = None, n_val: int | None = None,
              n_test: int | None = None, seed: int = 0,
              opener=None) -> tuple[Structures, dict[str, np.ndarray]]:
    """3BPA: train/val from ``train_300K`` (``RandomState(0)`` permutation; 50 val, as
    MACE: 450 / 50), test = the frames of ``test_set`` (a key of :data:`BPA_TEST_SETS`)."""
    if test_set not in BPA_TEST_SETS:
        raise ValueError(f"unknown 3BPA test set {test_set!r}; valid: {list(BPA_TEST_SETS)}")
    path = family_cache_path("3bpa", cache_dir)
    if not path.exists():
        prepare_3bpa(cache_dir, opener)
    raw = _load_frames(path)
    subset = raw["subset"]
    train, val = _val_from_train(np.flatnonzero(subset == "train_300K"), 50)
    test = np.flatnonzero(subset == test_set)
    stored = {"train": train, "val": val, "test": test}
    return _structures(raw, f"3bpa-{test_set}"), take_splits(
        stored, n_train, n_val, n_test, where=f"3bpa-{test_set}")


# ---------------------------------------------------------------------- xxMD
def _xxmd_files(molecule: str, state: str) -> dict[str, str]:
    code = _lookup(molecule, XXMD_MOLECULES, "xxMD")
    if state not in XXMD_STATES:
        raise ValueError(f"unknown xxMD state {state!r}; valid: {list(XXMD_STATES)}")
    return {split: f"{code}_{split}_{XXMD_STATES[state]}.xyz" for split in ("train", "val",
                                                                             "test")}


def prepare_xxmd(molecule: str, state: str, cache_dir: str | os.PathLike = "resources",
                 opener=None) -> Path:
    """Convert ``<code>_{train,val,test}_<state>.xyz`` from the xxMD repository archive
    (CASSCF states under ``xxMD-CASSCF/``, DFT ``uks`` files under ``xxMD-DFT/``)."""
    files = _xxmd_files(molecule, state)
    archive = fetch(XXMD_ARCHIVE, cache_dir, opener=opener)
    family = f"xxmd-{molecule}-{state}"
    folder = "xxMD-DFT" if state == "dft" else "xxMD-CASSCF"
    try:
        with zipfile.ZipFile(archive) as zf:
            names = {}
            for info in zf.infolist():
                base = os.path.basename(info.filename)
                for split, fname in files.items():
                    if base == fname and f"/{folder}/" in f"/{info.filename}":
                        names[split] = info.filename
            missing = sorted(set(files) - set(names))
            if missing:
                raise ValueError(f"{archive}: no {folder}/.../{files[missing[0]]} in the "
                                 "archive")
            parts = [(split, _frames_of_xyz(zf.read(names[split]), f"{archive}:{names[split]}"))
                     for split in ("train", "val", "test")]
    except zipfile.BadZipFile as err:
        raise ValueError(f"{archive}: not a readable zip archive ({err}); it is truncated or "
                         "corrupt: delete it and download it again") from err
    path = family_cache_path(family, cache_dir)
    save_npz_atomic(path, _concat(parts), CACHE_FORMAT_VERSION)
    return path


def load_xxmd(molecule: str, state: str, cache_dir: str | os.PathLike = "resources",
              n_train: int | None = None, n_val: int | None = None,
              n_test: int | None = None, seed: int = 0,
              opener=None) -> tuple[Structures, dict[str, np.ndarray]]:
    """xxMD ``molecule`` in ``state`` (s0, s1, s2, dft) with the split of the file names."""
    _xxmd_files(molecule, state)
    family = f"xxmd-{molecule}-{state}"
    path = family_cache_path(family, cache_dir)
    if not path.exists():
        prepare_xxmd(molecule, state, cache_dir, opener)
    raw = _load_frames(path)
    s = raw["subset"]
    stored = {name: np.flatnonzero(s == name) for name in ("train", "val", "test")}
    return _structures(raw, family), take_splits(stored, n_train, n_val, n_test, where=family)


_UNITS = "energy eV (reported meV), forces eV/Å (reported meV/Å)"


def _register() -> None:
    for mol in RMD17_MOLECULES:
        family = f"rmd17-{mol}"
        register_family(DatasetFamily(family, partial(family_cache_path, family),
                                      partial(prepare_rmd17, mol)))
        register(DatasetSpec(family, partial(load_rmd17, mol), family=family, card={
            "name": f"rMD17 {mol}",
            "source": f"{RMD17_ARCHIVE.url} (figshare 12672038); Christensen & von "
                      "Lilienfeld, Mach. Learn.: Sci. Technol. 1, 045018 (2020)",
            "license": "see the figshare record 12672038",
            "sha256": "not published; recorded on first download",
            "offline": False, "units": _UNITS + "; raw kcal/mol and kcal/mol/Å",
            "split": "official index_train/test_01 (split_index 1..5); 950 train / 50 val "
                     "from the train indices (RandomState(0)), 1,000 test",
            "split_sizes": {"train": 950, "val": 50, "test": 1000},
            "n_structures": 100_000,
        }))
    for mol in MD17_MOLECULES:
        family = f"md17-{mol}"
        register_family(DatasetFamily(family, partial(family_cache_path, family),
                                      partial(prepare_md17, mol)))
        register(DatasetSpec(family, partial(load_md17, mol), family=family, card={
            "name": f"MD17 {mol} (original)",
            "source": f"{md17_remote(mol).url}; Chmiela et al., Sci. Adv. 3, e1603015 (2017)",
            "license": "see sgdml.org (free for research use; no explicit licence file)",
            "sha256": "not published; recorded on first download",
            "offline": False, "units": _UNITS + "; raw kcal/mol and kcal/mol/Å",
            "split": "RandomState(0) permutation of all frames: 950 / 50 / 1,000",
            "split_sizes": {"train": 950, "val": 50, "test": 1000},
        }))
    register_family(DatasetFamily("3bpa", partial(family_cache_path, "3bpa"), prepare_3bpa))
    for test_set, fname in BPA_TEST_SETS.items():
        register(DatasetSpec(f"3bpa-{test_set}", partial(load_3bpa, test_set), family="3bpa",
                             card={
            "name": f"3BPA, train 300 K, test {fname}",
            "source": f"{BPA_ARCHIVE.url}; Kovács et al., J. Chem. Theory Comput. 17, "
                      "7696 (2021)",
            "license": "see github.com/davkovacs/BOTNet-datasets",
            "sha256": "not published; recorded on first download",
            "offline": False, "units": _UNITS,
            "split": f"train_300K.xyz: RandomState(0) permutation, 450 train / 50 val; "
                     f"test = {fname}",
            "split_sizes": {"train": 450, "val": 50},
        }))
    for mol, code in XXMD_MOLECULES.items():
        for state, suffix in XXMD_STATES.items():
            family = f"xxmd-{mol}-{state}"
            register_family(DatasetFamily(family, partial(family_cache_path, family),
                                          partial(prepare_xxmd, mol, state)))
            method = "M06/6-31G (unrestricted DFT)" if state == "dft" else \
                f"SA-CASSCF, state {state.upper()}"
            register(DatasetSpec(family, partial(load_xxmd, mol, state), family=family, card={
                "name": f"xxMD {mol} {method}",
                "source": f"{XXMD_ARCHIVE.url}; Pengmei, Shu & Liu, arXiv:2308.11155",
                "license": "see github.com/zpengmei/xxMD",
                "sha256": "not published (branch archive); recorded on first download",
                "offline": False, "units": _UNITS,
                "split": f"file names {code}_{{train,val,test}}_{suffix}.xyz",
            }))


_register()
