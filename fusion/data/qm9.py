"""QM9 (130,831 characterised molecules) from the ``qm9pack`` wheel's CSV files.

Source: the ``qm9pack`` 1.0.3 wheel (MIT) ships the full QM9 database of Ramakrishnan
et al., Sci. Data 1, 140022 (2014) (CC BY 4.0) as ``qm9pack/data/qm9_part{1,2,3}.csv``,
with the 3,054 molecules that failed the consistency check already left out. We read
those files directly: ``import qm9pack`` fails (it needs ``pkg_resources``) and so does
``importlib.resources.files("qm9pack")`` (it imports the package), so the package
directory is located with ``importlib.util.find_spec`` which does not execute it.

Pipeline:

1. :func:`parse_qm9_csvs` parses the CSVs, vectorised: the ``Elements`` and ``XYZ_Ang``
   string columns are joined into one string each and converted in one call
   (``str.translate`` + byte lookup table, ``np.fromstring``); no per-row ``literal_eval``.
2. :func:`qm9_raw` caches the result in ``<cache_dir>/qm9/qm9.npz`` (atomic write,
   format-versioned, checked on load; see :mod:`fusion.data.cache`).
3. :func:`load_qm9` turns one target column into a :class:`~fusion.data.structures.Structures`
   in internal units (eV for energies, with atom-reference subtraction for U0/U/H/G)
   plus the Cormorant split (:func:`cormorant_split`).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fusion.data.cache import CacheError, cache_error, load_npz_checked, save_npz_atomic
from fusion.data.structures import Structures, ragged_arange, take_splits

__all__ = [
    "HARTREE_TO_EV",
    "QM9_N_MOLECULES",
    "QM9_CSV_FILES",
    "TargetSpec",
    "TARGETS",
    "ATOMREF_HARTREE",
    "CacheError",
    "qm9pack_data_dir",
    "qm9_cache_path",
    "parse_qm9_csvs",
    "preprocess_qm9",
    "qm9_raw",
    "atomref_energy",
    "cormorant_split",
    "target_spec",
    "load_qm9",
]

HARTREE_TO_EV = 27.211386245988  # eV per Hartree (CODATA 2018)
QM9_N_MOLECULES = 130_831  # characterised molecules (133,885 - 3,054)
QM9_CSV_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
CACHE_FORMAT_VERSION = 1

# Atomic numbers of the element symbols that occur in QM9.
_SYMBOL_TO_Z = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}


@dataclass(frozen=True)
class TargetSpec:
    """One QM9 regression target.

    ``column``: CSV column; ``to_internal``: factor from the CSV unit to ``unit``;
    ``unit``: internal unit (``Structures.y``); ``report_unit``/``report_factor``:
    reported value = internal value * ``report_factor``; ``atomref``: whether the sum of
    per-atom reference energies (:data:`ATOMREF_HARTREE`) is subtracted first.
    """

    key: str
    column: str
    unit: str
    report_unit: str
    to_internal: float
    report_factor: float
    atomref: bool
    description: str


def _energy(key: str, column: str, atomref: bool, description: str) -> TargetSpec:
    return TargetSpec(key, column, "eV", "meV", HARTREE_TO_EV, 1000.0, atomref, description)


#: The 12 standard QM9 targets, keyed as in ``qm9-<key>`` dataset names.
TARGETS: dict[str, TargetSpec] = {
    "mu": TargetSpec("mu", "Dipole_debye", "D", "D", 1.0, 1.0, False, "dipole moment"),
    "alpha": TargetSpec("alpha", "Polarizability_bohr3", "bohr^3", "bohr^3", 1.0, 1.0, False,
                        "isotropic polarizability"),
    "homo": _energy("homo", "HOMO_au", False, "HOMO energy"),
    "lumo": _energy("lumo", "LUMO_au", False, "LUMO energy"),
    "gap": _energy("gap", "HOMO_LUMO_gap_au", False, "HOMO-LUMO gap"),
    "r2": TargetSpec("r2", "R2_bohr2", "bohr^2", "bohr^2", 1.0, 1.0, False,
                     "electronic spatial extent"),
    "zpve": _energy("zpve", "ZPVE_au", False, "zero-point vibrational energy"),
    "U0": _energy("U0", "InternalEnergy_0K_au", True, "internal energy at 0 K"),
    "U": _energy("U", "InternalEnergy_298K_au", True, "internal energy at 298.15 K"),
    "H": _energy("H", "Enthalphy_298K_au", True, "enthalpy at 298.15 K"),
    "G": _energy("G", "GibbsFreeEnergy_298K_au", True, "free energy at 298.15 K"),
    "Cv": TargetSpec("Cv", "Heatcapacity_Cv_cal_mol_K", "cal/(mol K)", "cal/(mol K)", 1.0, 1.0,
                     False, "heat capacity at 298.15 K"),
}

#: Raw target columns stored in the cache, in this order.
TARGET_COLUMNS: tuple[str, ...] = tuple(spec.column for spec in TARGETS.values())

#: Standard QM9 atom reference energies (Hartree) of the isolated atoms, per target.
ATOMREF_HARTREE: dict[str, dict[int, float]] = {
    "U0": {1: -0.500273, 6: -37.846772, 7: -54.583861, 8: -75.064579, 9: -99.718730},
    "U": {1: -0.498857, 6: -37.845355, 7: -54.582445, 8: -75.063162, 9: -99.717314},
    "H": {1: -0.497912, 6: -37.844411, 7: -54.581501, 8: -75.062219, 9: -99.716370},
    "G": {1: -0.510927, 6: -37.861317, 7: -54.598897, 8: -75.079532, 9: -99.733544},
}

_CSV_COLUMNS = ["XYZ_file", "Index", "N_atoms", "Elements", "XYZ_Ang", *TARGET_COLUMNS]
_CACHE_KEYS = ("z", "pos", "n_atoms", "index", "targets", "target_columns",
               "source_files", "source_sizes")


# ---------------------------------------------------------------------- locating files
def qm9pack_data_dir() -> Path:
    """Directory holding qm9pack's CSV files (``<site-packages>/qm9pack/data``).

    Found with ``importlib.util.find_spec`` so the (broken) package is never imported.
    Raises ``FileNotFoundError`` if qm9pack is not installed.
    """
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the qm9pack wheel is not installed (pip install qm9pack==1.0.3); it provides "
            "the QM9 CSV files qm9_part1.csv .. qm9_part3.csv"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def qm9_cache_path(cache_dir: str | os.PathLike = "resources") -> Path:
    """Path of the preprocessed QM9 cache: ``<cache_dir>/qm9/qm9.npz``."""
    return Path(cache_dir) / "qm9" / "qm9.npz"


def _csv_paths(data_dir: str | os.PathLike | None) -> list[Path]:
    base = qm9pack_data_dir() if data_dir is None else Path(data_dir)
    paths = [base / name for name in QM9_CSV_FILES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"QM9 CSV file(s) not found: {missing}")
    return paths


# ---------------------------------------------------------------------- parsing
def _symbol_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.int64)
    for sym, z in _SYMBOL_TO_Z.items():
        table[ord(sym)] = z
    return table


_DROP_ELEMENT_CHARS = str.maketrans("", "", "[]', \"")
_DROP_BRACKETS = str.maketrans("[]", "  ")


def _parse_one_csv(path: Path) -> dict[str, np.ndarray]:
    """Parse one qm9pack CSV file into flat arrays (see :func:`parse_qm9_csvs`)."""
    header = pd.read_csv(path, nrows=0).columns
    missing = [c for c in _CSV_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{path}: missing QM9 columns {missing}")
    df = pd.read_csv(path, usecols=_CSV_COLUMNS)
    if df[_CSV_COLUMNS].isna().any().any():
        bad = df.columns[df.isna().any()].tolist()
        raise ValueError(f"{path}: empty values in columns {bad}")
    n_atoms = df["N_atoms"].to_numpy(dtype=np.int64)
    m = len(df)
    a = int(n_atoms.sum())

    # Elements: "['C','H','H']" per row. QM9 symbols are single letters, so after
    # dropping brackets, quotes and commas every character is one atom.
    elem_str = df["Elements"].astype(str)
    per_row = elem_str.str.count(",").to_numpy() + 1
    bad_rows = np.nonzero(per_row != n_atoms)[0]
    if bad_rows.size:
        r = int(bad_rows[0])
        raise ValueError(
            f"{path}: row {r + 2} (Index {int(df['Index'].iloc[r])}) lists {per_row[r]} "
            f"elements but N_atoms = {n_atoms[r]}"
        )
    symbols = "".join(elem_str.tolist()).translate(_DROP_ELEMENT_CHARS)
    codes = np.frombuffer(symbols.encode("ascii"), dtype=np.uint8)
    z = _symbol_table()[codes]
    if codes.shape[0] != a or (z == 0).any():
        unknown = sorted({chr(c) for c in codes[z == 0]})
        raise ValueError(
            f"{path}: could not parse the Elements column (found {codes.shape[0]} single-"
            f"letter symbols for {a} atoms; unexpected characters {unknown}); expected "
            f"symbols among {sorted(_SYMBOL_TO_Z)}"
        )

    # XYZ_Ang: "[[x,y,z],[x,y,z],...]" in Å. Count atoms per row by "[" (one per atom
    # plus the outer one), then parse all numbers at once.
    xyz_str = df["XYZ_Ang"].astype(str)
    per_row = xyz_str.str.count(r"\[").to_numpy() - 1
    bad_rows = np.nonzero(per_row != n_atoms)[0]
    if bad_rows.size:
        r = int(bad_rows[0])
        raise ValueError(
            f"{path}: row {r + 2} (Index {int(df['Index'].iloc[r])}) has {per_row[r]} "
            f"coordinate triples but N_atoms = {n_atoms[r]}"
        )
    numbers = ",".join(xyz_str.tolist()).translate(_DROP_BRACKETS)
    flat = np.fromstring(numbers, dtype=np.float64, sep=",")
    if flat.shape[0] != 3 * a:
        raise ValueError(
            f"{path}: parsed {flat.shape[0]} coordinates from XYZ_Ang, expected 3 * {a} "
            "(a malformed number stops the parser)"
        )
    targets = df[list(TARGET_COLUMNS)].to_numpy(dtype=np.float64)
    return {
        "z": z,
        "pos": flat.reshape(a, 3),
        "n_atoms": n_atoms,
        "index": df["Index"].to_numpy(dtype=np.int64),
        "targets": targets.reshape(m, len(TARGET_COLUMNS)),
    }


def parse_qm9_csvs(data_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Parse ``qm9_part{1,2,3}.csv`` in ``data_dir`` (default: the qm9pack wheel).

    Returns a dict of arrays, molecules sorted by QM9 index:

    - ``z`` ``[A]`` int64, ``pos`` ``[A, 3]`` float64 (Å), ``n_atoms`` ``[M]`` int64,
    - ``index`` ``[M]`` int64 (QM9/GDB-9 index, 1-based, ``dsgdb9nsd_<index>.xyz``),
    - ``targets`` ``[M, 12]`` float64 in the CSV units (Hartree, D, bohr^3, ...),
      columns ``target_columns`` (:data:`TARGET_COLUMNS`),
    - ``source_files`` / ``source_sizes``: file names and byte sizes parsed.

    Raises ``ValueError`` naming the file and row on malformed input.
    """
    paths = _csv_paths(data_dir)
    parts = [_parse_one_csv(p) for p in paths]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    index = out["index"]
    if np.unique(index).shape[0] != index.shape[0]:
        dup = np.unique(index[np.argsort(index)][1:][np.diff(np.sort(index)) == 0])
        raise ValueError(f"QM9 CSVs in {paths[0].parent}: duplicate Index values {dup[:10]}")
    if not (np.diff(index) > 0).all():  # reorder molecules (and their atoms) by index
        order = np.argsort(index, kind="stable")
        offsets = np.concatenate([[0], np.cumsum(out["n_atoms"])])
        atoms = ragged_arange(offsets[order], out["n_atoms"][order])
        out = {"z": out["z"][atoms], "pos": out["pos"][atoms], "n_atoms": out["n_atoms"][order],
               "index": index[order], "targets": out["targets"][order]}
    out["target_columns"] = np.array(TARGET_COLUMNS)
    out["source_files"] = np.array([p.name for p in paths])
    out["source_sizes"] = np.array([p.stat().st_size for p in paths], dtype=np.int64)
    return out


# ---------------------------------------------------------------------- cache
def preprocess_qm9(cache_dir: str | os.PathLike = "resources",
                   data_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Parse the CSVs and (over)write the cache ``<cache_dir>/qm9/qm9.npz`` atomically.

    Returns the parsed arrays (as :func:`parse_qm9_csvs`). Use :func:`qm9_raw` to load
    the cache or build it only when missing.
    """
    raw = parse_qm9_csvs(data_dir)
    save_npz_atomic(qm9_cache_path(cache_dir), raw, CACHE_FORMAT_VERSION)
    return raw


def _check_raw(raw: dict[str, np.ndarray], path: Path) -> None:
    """Shape/dtype consistency of a loaded cache; raises CacheError naming ``path``."""
    n_atoms = raw["n_atoms"]
    if n_atoms.ndim != 1 or n_atoms.dtype.kind != "i":
        raise cache_error(path, f"n_atoms has shape {n_atoms.shape}, dtype {n_atoms.dtype}; "
                                "expected [M] int64")
    m, a = n_atoms.shape[0], int(n_atoms.sum())
    expected = {
        "z": ((a,), "i"), "pos": ((a, 3), "f"), "index": ((m,), "i"),
        "targets": ((m, len(TARGET_COLUMNS)), "f"), "target_columns": ((len(TARGET_COLUMNS),), "U"),
    }
    for key, (shape, kind) in expected.items():
        arr = raw[key]
        if arr.shape != shape or arr.dtype.kind != kind:
            raise cache_error(path, f"array {key!r} has shape {arr.shape}, dtype {arr.dtype}; "
                                    f"expected shape {shape}, dtype kind {kind!r}")
    if tuple(raw["target_columns"].tolist()) != TARGET_COLUMNS:
        raise cache_error(path, f"target_columns {raw['target_columns'].tolist()} differ from "
                                f"{list(TARGET_COLUMNS)}")
    if not (np.isfinite(raw["pos"]).all() and np.isfinite(raw["targets"]).all()):
        raise cache_error(path, "it contains non-finite positions or targets")


def qm9_raw(cache_dir: str | os.PathLike = "resources",
            data_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Raw QM9 arrays (see :func:`parse_qm9_csvs`) from the cache, building it if absent.

    An existing cache is loaded and checked (format version, keys, shapes, finiteness);
    if it is unreadable or inconsistent, or was built from source files whose sizes
    differ from the CSVs in ``data_dir`` (when those are present), :class:`CacheError`
    is raised naming the file. It is never silently rebuilt.
    """
    path = qm9_cache_path(cache_dir)
    if not path.exists():
        return preprocess_qm9(cache_dir, data_dir)
    raw = load_npz_checked(path, CACHE_FORMAT_VERSION, _CACHE_KEYS)
    _check_raw(raw, path)
    try:
        paths = _csv_paths(data_dir)
    except FileNotFoundError:
        return raw  # source not available here: trust the (checked) cache
    sizes = [p.stat().st_size for p in paths]
    if [p.name for p in paths] != raw["source_files"].tolist() or \
            sizes != raw["source_sizes"].tolist():
        raise cache_error(path, f"it was built from other source files (sizes "
                                f"{raw['source_sizes'].tolist()}) than those in "
                                f"{paths[0].parent} (sizes {sizes})")
    return raw


# ---------------------------------------------------------------------- targets, splits
def target_spec(target: str) -> TargetSpec:
    """The :class:`TargetSpec` of ``target``; ``ValueError`` listing valid targets."""
    if target not in TARGETS:
        raise ValueError(f"unknown QM9 target {target!r}; valid targets: {list(TARGETS)}")
    return TARGETS[target]


def atomref_energy(z: np.ndarray, n_atoms: np.ndarray, target: str) -> np.ndarray:
    """``[M]`` float64: sum of atom reference energies (Hartree) per molecule.

    ``z``: ``[A]`` atomic numbers; ``n_atoms``: ``[M]``; ``target`` in U0, U, H, G.
    """
    if target not in ATOMREF_HARTREE:
        raise ValueError(f"no atom references for target {target!r}; "
                         f"available: {list(ATOMREF_HARTREE)}")
    table = np.full(int(max(ATOMREF_HARTREE[target])) + 1, np.nan)
    for zz, e in ATOMREF_HARTREE[target].items():
        table[zz] = e
    z = np.asarray(z, dtype=np.int64)
    if z.size and (z.max() >= table.shape[0] or np.isnan(table[z]).any()):
        raise ValueError(f"atom references exist only for Z in {sorted(ATOMREF_HARTREE[target])}")
    mol = np.repeat(np.arange(len(n_atoms)), n_atoms)
    return np.bincount(mol, weights=table[z], minlength=len(n_atoms))


def cormorant_split(n: int = QM9_N_MOLECULES, seed: int = 0,
                    n_train: int = 100_000) -> dict[str, np.ndarray]:
    """Cormorant's QM9 split over ``n`` molecules (ordered by QM9 index).

    ``perm = np.random.RandomState(seed).permutation(n)`` (identical to Cormorant's
    ``np.random.seed(0); np.random.permutation(n)`` for ``seed=0``); sizes
    ``n_test = int(0.1 * n)``, ``n_train = min(n_train, int(0.8 * n))``,
    ``n_val = n - n_train - n_test``; ``train = perm[:n_train]``,
    ``val = perm[n_train:n_train + n_val]``, ``test = perm[n_train + n_val:]``
    (the order of Cormorant's ``np.split(perm, [Ntrain, Ntrain + Nvalid])``). For
    n = 130,831: 100,000 / 17,748 / 13,083.
    """
    perm = np.random.RandomState(seed).permutation(n).astype(np.int64)
    n_test = int(0.1 * n)
    n_tr = min(n_train, int(0.8 * n))
    n_val = n - n_tr - n_test
    return {"train": perm[:n_tr], "val": perm[n_tr:n_tr + n_val], "test": perm[n_tr + n_val:]}


def load_qm9(target: str, cache_dir: str | os.PathLike = "resources",
             data_dir: str | os.PathLike | None = None, n_train: int | None = None,
             n_val: int | None = None, n_test: int | None = None,
             seed: int = 0) -> tuple[Structures, dict[str, np.ndarray]]:
    """QM9 with one target as ``(Structures, splits)``.

    ``Structures`` holds all molecules (sorted by QM9 index) with ``y`` in internal units
    (energies in eV after subtracting atom references for U0/U/H/G; other targets in
    their own unit, see :data:`TARGETS`). ``splits`` = :func:`cormorant_split` with
    ``seed`` (0 = Cormorant's split), cut to the first ``n_train``/``n_val``/``n_test``.
    ``data_dir`` overrides the qm9pack CSV directory (used by tests with fixture CSVs).
    """
    spec = target_spec(target)
    raw = qm9_raw(cache_dir, data_dir)
    col = TARGET_COLUMNS.index(spec.column)
    value = raw["targets"][:, col].copy()
    if spec.atomref:
        value -= atomref_energy(raw["z"], raw["n_atoms"], spec.key)
    y = value * spec.to_internal
    structures = Structures(
        z=raw["z"], pos=raw["pos"], n_atoms=raw["n_atoms"], y=y, forces=None,
        meta={
            "name": f"qm9-{spec.key}", "target": spec.key, "column": spec.column,
            "unit": spec.unit, "report_unit": spec.report_unit,
            "report_factor": spec.report_factor, "atomref_subtracted": spec.atomref,
            "qm9_index": raw["index"],
        },
    )
    splits = take_splits(cormorant_split(len(structures), seed=seed), n_train, n_val, n_test)
    return structures, splits
