"""Downloaded force-field benchmarks: rMD17 (whole archive), original MD17, 3BPA and xxMD.

``rmd17-<mol>`` (the author's split files, the study's rMD17) lives in :mod:`fusion.data.rmd17`.

All of them are loaded into :class:`~fusion.data.structures.Structures` with ``y`` the
total energy in eV and ``forces`` in eV/Å (reported in meV and meV/Å). Raw files are
fetched with :func:`fusion.data.download.fetch` (resumable, sha256-checked, a clear error
without network) into ``<cache_dir>/downloads``; each dataset family is then converted
once into ``<cache_dir>/<family>/<family>.npz`` (atomic write, format-versioned).

============ ============================ ===================================================
family       source                       split
============ ============================ ===================================================
rmd17-full-  figshare 12672038 (rMD17,     official ``index_{train,test}_0N.csv`` (N = 1..5):
<mol>        the whole 100k-frame archive)
                                          the 1,000 train indices permuted with
                                          ``RandomState(0)``: 950 train / 50 val; 1,000 test
md17-<mol>   sgdml.org / quantum-machine  ``RandomState(0)`` permutation: 950 / 50 / 1,000
             ``md17_<mol>.npz``
3bpa         BOTNet-datasets              train/val from ``train_300K.xyz`` (450 / 50 after a
             ``dataset_3BPA.tar.gz``      ``RandomState(0)`` permutation); test = the file
                                          named by the key (300K, 600K, 1200K, dih_beta*)
xxmd-<mol>-  github zpengmei/xxMD         the ``<code>_{train,val,test}_<state>.xyz`` files
<state>      (CASSCF s0/s1/s2, DFT uks)
xxmd-<mol>   the s0, s1, s2 caches above   as the per-state files; ``y`` [M, 3] and forces
             joined frame by frame          [A, 3, 3] (S0, S1, S2), ``meta["states"]``;
                                          stilbene: ``meta["torsion"]`` (degrees)
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
from fusion.data.structures import MAX_Z, Structures, atomic_numbers, take_splits

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
    "XXMD_CASSCF_STATES",
    "XXMD_SAME_FRAME_TOL",
    "xxmd_state_caches",
    "prepare_xxmd_states",
    "load_xxmd_states",
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
    z = atomic_numbers(np.asarray(arrays[keys["z"]]).reshape(-1), f"{source}: {keys['z']!r}")
    if z.size and (z.min() < 1 or z.max() > MAX_Z):
        bad = int(np.flatnonzero((z < 1) | (z > MAX_Z))[0])
        raise ValueError(f"{source}: {keys['z']!r}[{bad}] = {int(z[bad])}; expected an atomic "
                         f"number 1..{MAX_Z}")
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


def decode_text(data: bytes, source: str) -> str:
    """``data`` as UTF-8 text; a ``ValueError`` naming ``source`` (file or archive member)
    and the byte offset otherwise."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{source}: not UTF-8 text (byte {err.start}: {err.reason}); "
                         "a binary or corrupt file where text was expected") from None


def _frames_of_xyz(data: bytes, source: str) -> dict[str, np.ndarray]:
    fr = parse_extxyz(decode_text(data, source), source)
    return {"z": fr.z, "pos": fr.pos, "n_atoms": fr.n_atoms, "energy": fr.energy,
            "forces": fr.forces}


def _load_frames(path: Path, extra: tuple[str, ...] = (), n_states: int | None = None
                 ) -> dict[str, np.ndarray]:
    """A frames cache with its shapes checked; ``n_states``: multi-state labels (energy
    [M, S], forces [A, S, 3], ``states`` [S]; ``torsion`` [M] when in ``extra``)."""
    raw = load_npz_checked(path, CACHE_FORMAT_VERSION, _FRAME_KEYS + extra)
    m, a = raw["n_atoms"].shape[0], int(raw["n_atoms"].sum())
    per_state = () if n_states is None else (n_states,)
    shapes = {"z": (a,), "pos": (a, 3), "energy": (m, *per_state),
              "forces": (a, *per_state, 3), "subset": (m,)}
    if n_states is not None:
        shapes.update(states=(n_states,), torsion=(m,))
    for key, shape in shapes.items():
        if key in raw and raw[key].shape != shape:
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
    for k, line in enumerate(decode_text(data, source).splitlines()):
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
    path = family_cache_path(f"rmd17-full-{molecule}", cache_dir)
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
    path = family_cache_path(f"rmd17-full-{molecule}", cache_dir)
    _lookup(molecule, RMD17_MOLECULES, "rMD17")
    if not path.exists():
        prepare_rmd17(molecule, cache_dir, opener)
    extra = tuple(f"{s}_{k}" for s in ("train", "test") for k in range(1, 6))
    raw = _load_frames(path, extra)
    train, val = _val_from_train(raw[f"train_{split_index}"], 50)
    stored = {"train": train, "val": val, "test": raw[f"test_{split_index}"]}
    return _structures(raw, f"rmd17-full-{molecule}"), take_splits(
        stored, n_train, n_val, n_test, where=f"rmd17-full-{molecule}")


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
#: SA-CASSCF states of every xxMD molecule; the multi-state datasets ``xxmd-<molecule>``
#: label all of them (names in ``meta["states"]``: S0, S1, S2).
XXMD_CASSCF_STATES = ("s0", "s1", "s2")
#: Å: an atom of one frame may sit this far apart in two state files and still be the same.
XXMD_SAME_FRAME_TOL = 1e-6
# stilbene's central torsion on a bond graph without bond orders (rdkit connectivity from
# distances): ring carbon, the two chain carbons, ring carbon.
_STILBENE_GRAPH_TORSION_SMARTS = "[#6;R]~[#6;!R]~[#6;!R]~[#6;R]"
_TORSION_SEARCH_FRAMES = 20  # frames tried in turn until one's bond graph shows the torsion


def _xxmd_files(molecule: str, state: str) -> dict[str, str]:
    code = _lookup(molecule, XXMD_MOLECULES, "xxMD")
    if state not in XXMD_STATES:
        raise ValueError(f"unknown xxMD state {state!r}; valid: {list(XXMD_STATES)}")
    return {split: f"{code}_{split}_{XXMD_STATES[state]}.xyz" for split in ("train", "val",
                                                                             "test")}


def _xxmd_state_zip(molecule: str, state: str) -> str:
    """The per-state zip inside the repository archive: ``sti_s0.zip`` (CASSCF, under
    ``xxMD-CASSCF/sti/s0/``) or ``sti.zip`` (DFT, under ``xxMD-DFT/sti/``)."""
    code = XXMD_MOLECULES[molecule]
    return f"{code}.zip" if state == "dft" else f"{code}_{XXMD_STATES[state]}.zip"


def _xxmd_members(zf: zipfile.ZipFile, archive: Path, folder: str, files: dict[str, str],
                  state_zip: str) -> dict[str, tuple[str, bytes]]:
    """``split -> (source name, bytes)`` of the xyz ``files`` under ``folder``: members of the
    archive itself (an unpacked layout) or of the per-state zip ``state_zip`` in it (the
    GitHub archive's layout: ``xxMD-CASSCF/sti/s0/sti_s0.zip`` holding the three files)."""
    found: dict[str, tuple[str, bytes]] = {}

    def take(names: list[str], read, prefix: str) -> None:
        for name in names:
            for split, fname in files.items():
                if split not in found and os.path.basename(name) == fname:
                    found[split] = (f"{prefix}{name}", read(name))

    under = [i.filename for i in zf.infolist() if f"/{folder}/" in f"/{i.filename}"]
    take(under, zf.read, f"{archive}:")
    for name in under:
        if len(found) == len(files) or os.path.basename(name) != state_zip:
            continue
        source = f"{archive}:{name}"
        try:
            with zipfile.ZipFile(io.BytesIO(zf.read(name))) as inner:
                take([i.filename for i in inner.infolist()], inner.read, f"{source}:")
        except zipfile.BadZipFile as err:
            raise ValueError(f"{source}: not a readable zip archive ({err}); the download is "
                             "truncated or corrupt: delete it and download it again") from err
    missing = [files[split] for split in files if split not in found]
    if missing:
        raise ValueError(f"{archive}: no {folder}/.../{missing[0]} in the archive, neither as a "
                         f"member nor inside {folder}/.../{state_zip}")
    return found


def prepare_xxmd(molecule: str, state: str, cache_dir: str | os.PathLike = "resources",
                 opener=None) -> Path:
    """Convert ``<code>_{train,val,test}_<state>.xyz`` from the xxMD repository archive
    (CASSCF states in ``xxMD-CASSCF/<code>/<state>/<code>_<state>.zip``, DFT ``uks`` files in
    ``xxMD-DFT/<code>/<code>.zip``; an archive with these zips unpacked is read as well)."""
    files = _xxmd_files(molecule, state)
    archive = fetch(XXMD_ARCHIVE, cache_dir, opener=opener)
    family = f"xxmd-{molecule}-{state}"
    folder = "xxMD-DFT" if state == "dft" else "xxMD-CASSCF"
    try:
        with zipfile.ZipFile(archive) as zf:
            members = _xxmd_members(zf, archive, folder, files, _xxmd_state_zip(molecule, state))
    except zipfile.BadZipFile as err:
        raise ValueError(f"{archive}: not a readable zip archive ({err}); it is truncated or "
                         "corrupt: delete it and download it again") from err
    parts = [(split, _frames_of_xyz(members[split][1], members[split][0]))
             for split in ("train", "val", "test")]
    path = family_cache_path(family, cache_dir)
    save_npz_atomic(path, _concat(parts), CACHE_FORMAT_VERSION)
    return path


def _file_splits(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The split of the file names: frame indices of each ``subset`` (train, val, test)."""
    return {name: np.flatnonzero(raw["subset"] == name) for name in ("train", "val", "test")}


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
    return _structures(raw, family), take_splits(_file_splits(raw), n_train, n_val, n_test,
                                                 where=family)


# ---------------------------------------------------------------------- xxMD, all states
def xxmd_state_caches(molecule: str, cache_dir: str | os.PathLike = "resources") -> list[Path]:
    """The per-state caches (``xxmd-<molecule>-s0/s1/s2``) the multi-state cache is built from."""
    _lookup(molecule, XXMD_MOLECULES, "xxMD")
    return [family_cache_path(f"xxmd-{molecule}-{state}", cache_dir)
            for state in XXMD_CASSCF_STATES]


def _first_frame_difference(ref: dict[str, np.ndarray], raw: dict[str, np.ndarray],
                            ref_files: dict[str, str],
                            files: dict[str, str]) -> tuple[str, str] | None:
    """``(split, what differs)`` for the first way the frames of ``raw`` differ from those
    of ``ref`` (per-split counts, atom counts, atomic numbers, positions beyond
    :data:`XXMD_SAME_FRAME_TOL` Å), or ``None``. Frames are named 0-based in their file."""
    for split in ("train", "val", "test"):
        n_ref, n = (int((r["subset"] == split).sum()) for r in (ref, raw))
        if n_ref != n:
            return split, f"{ref_files[split]} holds {n_ref} frames, {files[split]} holds {n}"
    offsets = np.concatenate([[0], np.cumsum(ref["n_atoms"])])  # [M + 1]
    first_of = {name: int(idx[0]) if idx.size else 0 for name, idx in _file_splits(ref).items()}

    def in_file(frame: int) -> tuple[str, int]:
        split = str(ref["subset"][frame])
        return split, frame - first_of[split]

    bad = np.flatnonzero(ref["n_atoms"] != raw["n_atoms"])
    if bad.size:
        split, i = in_file(int(bad[0]))
        return split, (f"frame {i} has {int(ref['n_atoms'][bad[0]])} atoms in "
                       f"{ref_files[split]}, {int(raw['n_atoms'][bad[0]])} in {files[split]}")
    bad = np.flatnonzero(ref["z"] != raw["z"])
    if bad.size:
        atom = int(bad[0])
        frame = int(np.searchsorted(offsets, atom, side="right")) - 1
        split, i = in_file(frame)
        return split, (f"{ref_files[split]} and {files[split]} differ first at frame {i}: atom "
                       f"{atom - int(offsets[frame])} is Z={int(ref['z'][atom])} in one and "
                       f"Z={int(raw['z'][atom])} in the other")
    apart = np.linalg.norm(ref["pos"] - raw["pos"], axis=1)  # [A] Å
    frame_apart = np.maximum.reduceat(apart, offsets[:-1])  # [M] Å, worst atom per frame
    bad = np.flatnonzero(frame_apart > XXMD_SAME_FRAME_TOL)
    if bad.size:
        split, i = in_file(int(bad[0]))
        worst_split, worst_i = in_file(int(np.argmax(frame_apart)))
        return split, (f"{ref_files[split]} and {files[split]} differ first at frame {i} (an "
                       f"atom {frame_apart[bad[0]]:.3g} Å apart); largest position difference "
                       f"{frame_apart.max():.3g} Å (frame {worst_i} of {files[worst_split]})")
    return None


def _check_same_frames(molecule: str,
                       per_state: list[tuple[str, Path, dict[str, np.ndarray]]]) -> None:
    """Raise ``ValueError`` unless every state's frames are the first state's (see
    :func:`_first_frame_difference`), naming both xyz files, the first differing frame and
    the largest position difference, and the caches compared."""
    ref_state, ref_path, ref = per_state[0]
    ref_files = _xxmd_files(molecule, ref_state)
    for state, path, raw in per_state[1:]:
        files = _xxmd_files(molecule, state)
        difference = _first_frame_difference(ref, raw, ref_files, files)
        if difference is not None:
            split, what = difference
            raise ValueError(
                f"xxmd-{molecule}: the CASSCF state files do not hold the same frames: {what}; "
                f"expected the same frames in the same order in {ref_files[split]} and "
                f"{files[split]} (same atomic numbers, positions equal to "
                f"{XXMD_SAME_FRAME_TOL:g} Å). Compared caches {ref_path} and {path} (built "
                f"from {XXMD_ARCHIVE.name})")


def _stilbene_torsion_deg(raw: dict[str, np.ndarray], source: str) -> np.ndarray:
    """``[M]`` central C=C torsion of every stilbene frame, degrees in [0, 180].

    The four atoms (ring C, chain C, chain C, ring C) are found once, on the bond graph
    rdkit derives from the distances of a frame (the first of the first
    ``_TORSION_SEARCH_FRAMES`` frames with exactly one such chain), so any atom order works;
    every frame must list the same elements in the same order. The angle is
    :func:`fusion.data.stilbene.dihedral_deg`, as for ``stilbene-tddft``.
    """
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    from fusion.data.stilbene import dihedral_deg

    n_atoms = raw["n_atoms"]
    n = int(n_atoms[0])
    bad = np.flatnonzero(n_atoms != n)
    if bad.size:
        raise ValueError(f"{source}: frame {int(bad[0])} has {int(n_atoms[bad[0]])} atoms, "
                         f"frame 0 has {n}; the torsion needs one atom order in every frame")
    z = raw["z"].reshape(-1, n)  # [M, n]
    pos = raw["pos"].reshape(-1, n, 3)  # [M, n, 3] Å
    bad = np.flatnonzero((z != z[0]).any(axis=1))
    if bad.size:
        raise ValueError(f"{source}: frame {int(bad[0])} lists other elements than frame 0; "
                         "the torsion needs one atom order in every frame")
    table = Chem.GetPeriodicTable()
    symbols = [table.GetElementSymbol(int(v)) for v in z[0]]
    pattern = Chem.MolFromSmarts(_STILBENE_GRAPH_TORSION_SMARTS)
    tried = min(len(pos), _TORSION_SEARCH_FRAMES)
    for frame in range(tried):
        block = f"{n}\n\n" + "".join(f"{s} {x:.8f} {y:.8f} {w:.8f}\n"
                                     for s, (x, y, w) in zip(symbols, pos[frame]))
        mol = Chem.MolFromXYZBlock(block)
        rdDetermineBonds.DetermineConnectivity(mol)
        Chem.FastFindRings(mol)  # ring membership for the R / !R queries
        matches = mol.GetSubstructMatches(pattern)
        if len(matches) == 1:
            atoms = tuple(int(a) for a in matches[0])
            return np.array([dihedral_deg(p, atoms) for p in pos])
    raise ValueError(f"{source}: no frame among the first {tried} has exactly one chain "
                     "ring C - C - C - ring C in its bond graph; expected stilbene (C14H12, "
                     "two phenyl rings joined by C=C)")


def prepare_xxmd_states(molecule: str, cache_dir: str | os.PathLike = "resources",
                        opener=None) -> Path:
    """Build ``<cache_dir>/xxmd-<molecule>/xxmd-<molecule>.npz``: the S0, S1 and S2 labels of
    the same frames, from the per-state caches (each made from the one repository archive by
    :func:`prepare_xxmd` when missing).

    Cache arrays: ``z`` [A], ``pos`` [A, 3] Å, ``n_atoms`` [M], ``energy`` [M, 3] eV (total),
    ``forces`` [A, 3, 3] eV/Å (atom, state, xyz), ``subset`` [M] (train/val/test, the file
    names), ``states`` [3] (``S0``, ``S1``, ``S2``); stilbene also ``torsion`` [M] degrees.
    The state files must hold the same frames (see :func:`_check_same_frames`).
    """
    _lookup(molecule, XXMD_MOLECULES, "xxMD")
    per_state = []
    for state, path in zip(XXMD_CASSCF_STATES, xxmd_state_caches(molecule, cache_dir)):
        if not path.exists():
            prepare_xxmd(molecule, state, cache_dir, opener)
        per_state.append((state, path, _load_frames(path)))
    _check_same_frames(molecule, per_state)
    first = per_state[0][2]
    out = {key: first[key] for key in ("z", "pos", "n_atoms", "subset")}
    out["energy"] = np.stack([raw["energy"] for _, _, raw in per_state], axis=1)  # [M, S] eV
    out["forces"] = np.stack([raw["forces"] for _, _, raw in per_state], axis=1)  # [A, S, 3]
    out["states"] = np.array([state.upper() for state in XXMD_CASSCF_STATES])
    if molecule == "stilbene":
        files = _xxmd_files(molecule, XXMD_CASSCF_STATES[0])
        out["torsion"] = _stilbene_torsion_deg(
            first, f"xxmd-{molecule} ({', '.join(files.values())})")
    path = family_cache_path(f"xxmd-{molecule}", cache_dir)
    save_npz_atomic(path, out, CACHE_FORMAT_VERSION)
    return path


def load_xxmd_states(molecule: str, cache_dir: str | os.PathLike = "resources",
                     n_train: int | None = None, n_val: int | None = None,
                     n_test: int | None = None, seed: int = 0,
                     opener=None) -> tuple[Structures, dict[str, np.ndarray]]:
    """xxMD ``molecule`` with all CASSCF states: ``y`` [M, 3] S0/S1/S2 total energies (eV),
    ``forces`` [A, 3, 3] (eV/Å), ``meta["states"]``; stilbene adds ``meta["torsion"]`` [M]
    (degrees). Split: the file names (train/val/test), cut to the first ``n_*``; ``seed``
    is the training seed and does not change it."""
    _lookup(molecule, XXMD_MOLECULES, "xxMD")
    family = f"xxmd-{molecule}"
    path = family_cache_path(family, cache_dir)
    if not path.exists():
        prepare_xxmd_states(molecule, cache_dir, opener)
    extra = ("states", "torsion") if molecule == "stilbene" else ("states",)
    raw = _load_frames(path, extra, n_states=len(XXMD_CASSCF_STATES))
    structures = _structures(raw, family)
    structures.meta["states"] = [str(state) for state in raw["states"]]
    if "torsion" in raw:
        structures.meta["torsion"] = raw["torsion"]
    return structures, take_splits(_file_splits(raw), n_train, n_val, n_test, where=family)


_UNITS = "energy eV (reported meV), forces eV/Å (reported meV/Å)"


def _register() -> None:
    for mol in RMD17_MOLECULES:
        family = f"rmd17-full-{mol}"
        register_family(DatasetFamily(family, partial(family_cache_path, family),
                                      partial(prepare_rmd17, mol)))
        register(DatasetSpec(family, partial(load_rmd17, mol), family=family, card={
            "name": f"rMD17 {mol} (whole figshare archive, 100k frames)",
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
        family = f"xxmd-{mol}"
        register_family(DatasetFamily(family, partial(family_cache_path, family),
                                      partial(prepare_xxmd_states, mol),
                                      inputs=partial(xxmd_state_caches, mol)))
        states = [state.upper() for state in XXMD_CASSCF_STATES]
        register(DatasetSpec(family, partial(load_xxmd_states, mol), family=family, card={
            "name": f"xxMD {mol} SA-CASSCF, states {'/'.join(states)} of the same frames",
            "source": f"{XXMD_ARCHIVE.url}; Pengmei, Shu & Liu, arXiv:2308.11155 (the "
                      f"xxmd-{mol}-s0/s1/s2 caches joined frame by frame)",
            "license": "see github.com/zpengmei/xxMD",
            "sha256": "not published (branch archive); recorded on first download",
            "offline": False, "states": states,
            "units": "energies eV (total, per state; reported meV), forces eV/Å (reported "
                     "meV/Å)" + (", torsion degrees" if mol == "stilbene" else ""),
            "report_unit": "meV",
            "split": f"file names {code}_{{train,val,test}}_s{{0,1,2}}.xyz (the same frames "
                     "in every state)",
        }))


_register()
