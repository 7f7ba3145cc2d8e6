"""Flat, ragged container for a set of molecular structures.

Every dataset in :mod:`fusion.data` is loaded into one :class:`Structures`: the atoms of
all structures are concatenated (``A`` atoms in total, ``M`` structures), and
``n_atoms`` says how many atoms each structure has. Splits are integer index arrays
over structures (``{"train": idx, "val": idx, "test": idx}``).

Units (see ``docs/architecture.md``): positions in Å, energies in eV, forces in eV/Å;
non-energy QM9 targets keep their own unit, recorded in ``meta["unit"]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Structures", "ragged_arange", "take_splits"]


def ragged_arange(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(s, s + c)`` for every ``(s, c)`` pair, vectorised.

    ``starts``, ``counts``: ``[K]`` integer arrays. Returns ``[counts.sum()]`` int64.
    """
    starts = np.asarray(starts, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    # position k of block b maps to starts[b] + k: offset each block by
    # (starts[b] - cumulative count before b) and add a global arange.
    before = np.cumsum(counts) - counts
    return np.repeat(starts - before, counts) + np.arange(total, dtype=np.int64)


def take_splits(stored: dict[str, np.ndarray], n_train: int | None = None,
                n_val: int | None = None, n_test: int | None = None, where: str | None = None,
                items: str = "structures", holder: str | None = None) -> dict[str, np.ndarray]:
    """The first ``n_<split>`` indices of each stored split (``None`` = all of it), as fresh
    int64 arrays. The prefix of a permutation is itself a random subset, and smaller subsets
    nest in larger ones.

    ``stored``: ``{"train", "val", "test"} -> index array``. Asking for more than a split
    holds is a ``ValueError`` naming ``where`` (the dataset) and ``holder`` (what holds the
    splits, e.g. ``"the cache <file>"``; default: the split itself).
    """
    splits = {}
    for name, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        idx = np.array(stored[name], dtype=np.int64)
        if n is not None:
            if not 0 <= n <= idx.shape[0]:
                prefix = f"{where}: " if where else ""
                has = (f"the {name} split has {idx.shape[0]} {items}" if holder is None
                       else f"{holder} holds {idx.shape[0]} {name} {items}")
                raise ValueError(f"{prefix}n_{name} = {n} but {has}")
            idx = idx[:n]
        splits[name] = idx
    return splits


MAX_Z = 118  # oganesson


def atomic_numbers(values, where: str) -> np.ndarray:
    """``values`` as int64 atomic numbers; non-integers (6.7, NaN) raise ``ValueError``
    naming ``where`` and the first bad entry instead of being truncated (6.7 -> 6)."""
    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        whole = np.isfinite(arr) & (arr == np.round(arr))
        if not whole.all():
            bad = int(np.flatnonzero(~whole.reshape(-1))[0])
            raise ValueError(f"{where}[{bad}] = {arr.reshape(-1)[bad].item()!r} is not an atomic "
                             f"number (a whole number 1..{MAX_Z})")
    elif arr.size and arr.dtype.kind not in "iu":
        raise ValueError(f"{where} holds {arr.dtype} values; expected atomic numbers 1..{MAX_Z}")
    return arr.astype(np.int64)


@dataclass
class Structures:
    """A set of ``M`` structures with ``A`` atoms in total, stored as flat arrays.

    Fields (shapes in brackets):

    - ``z``: ``[A]`` int64, atomic numbers of all structures concatenated.
    - ``pos``: ``[A, 3]`` float64, positions in Å.
    - ``n_atoms``: ``[M]`` int64, atoms per structure (each >= 1).
    - ``y``: ``[M]`` float64, graph-level target in internal units (energies in eV,
      after atom-reference subtraction where that applies); ``[M, S]`` for ``S``
      electronic states (energies of S0, S1, ... per structure).
    - ``forces``: ``[A, 3]`` float64 in eV/Å (``[A, S, 3]`` with ``S`` states), or ``None``.
    - ``meta``: dict with ``target``, ``unit`` (internal), ``report_unit``,
      ``report_factor`` (multiply internal values by it to get reported ones), ``name``.

    Arrays are converted to the dtypes above on construction and validated
    (:meth:`validate`); a malformed container raises ``ValueError`` naming the field.
    """

    z: np.ndarray
    pos: np.ndarray
    n_atoms: np.ndarray
    y: np.ndarray
    forces: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.z = atomic_numbers(self.z, "Structures.z")
        self.pos = np.asarray(self.pos, dtype=np.float64)
        self.n_atoms = np.asarray(self.n_atoms, dtype=np.int64)
        self.y = np.asarray(self.y, dtype=np.float64)
        if self.forces is not None:
            self.forces = np.asarray(self.forces, dtype=np.float64)
        self.meta = dict(self.meta)
        self._offsets: np.ndarray | None = None
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Check shapes are consistent and values finite; raise ``ValueError`` otherwise.

        Messages name the field, its shape and the expected shape.
        """

        def fail(name: str, arr: np.ndarray, expected: str) -> None:
            raise ValueError(
                f"Structures.{name} has shape {tuple(arr.shape)}; expected {expected}"
            )

        if self.n_atoms.ndim != 1:
            fail("n_atoms", self.n_atoms, "[M] (1-D, atoms per structure)")
        m = self.n_atoms.shape[0]
        if m and self.n_atoms.min() < 1:
            bad = int(np.argmin(self.n_atoms))
            raise ValueError(
                f"Structures.n_atoms[{bad}] = {int(self.n_atoms[bad])}; every structure "
                "needs at least 1 atom"
            )
        a = int(self.n_atoms.sum())
        if self.z.shape != (a,):
            fail("z", self.z, f"[A] = ({a},) with A = n_atoms.sum()")
        if self.pos.shape != (a, 3):
            fail("pos", self.pos, f"[A, 3] = ({a}, 3) with A = n_atoms.sum()")
        if self.y.ndim == 2 and self.y.shape[0] == m and self.y.shape[1] >= 1:
            s = self.y.shape[1]
            f_shape, f_text = (a, s, 3), f"[A, S, 3] = ({a}, {s}, 3) with S = y.shape[1] states"
        elif self.y.shape == (m,):
            f_shape, f_text = (a, 3), f"[A, 3] = ({a}, 3) with A = n_atoms.sum()"
        else:
            fail("y", self.y, f"[M] = ({m},) or [M, S] = ({m}, S) with M = len(n_atoms)")
        if self.forces is not None and self.forces.shape != f_shape:
            fail("forces", self.forces, f_text)
        if a and (self.z.min() < 1 or self.z.max() > MAX_Z):
            bad = int(np.flatnonzero((self.z < 1) | (self.z > MAX_Z))[0])
            raise ValueError(
                f"Structures.z[{bad}] = {int(self.z[bad])}; expected an atomic number 1..{MAX_Z}"
            )
        for name in ("pos", "y", "forces"):
            arr = getattr(self, name)
            if arr is None or arr.size == 0:
                continue
            finite = np.isfinite(arr)
            if not finite.all():
                bad = np.argwhere(~finite)[0]
                where = ", ".join(str(int(i)) for i in bad)
                raise ValueError(
                    f"Structures.{name} has a non-finite value ({arr[tuple(bad)]}) at "
                    f"[{where}]; expected finite values"
                )

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        """Number of structures ``M``."""
        return int(self.n_atoms.shape[0])

    @property
    def n_structures(self) -> int:
        """Number of structures ``M``."""
        return len(self)

    @property
    def n_states(self) -> int:
        """Electronic states ``S`` labelled per structure (1 when ``y`` is ``[M]``)."""
        return 1 if self.y.ndim == 1 else int(self.y.shape[1])

    @property
    def n_atoms_total(self) -> int:
        """Total number of atoms ``A``."""
        return int(self.z.shape[0])

    @property
    def offsets(self) -> np.ndarray:
        """``[M + 1]`` int64: atoms of structure ``i`` are ``offsets[i]:offsets[i+1]``."""
        if self._offsets is None or self._offsets.shape[0] != len(self) + 1:
            off = np.zeros(len(self) + 1, dtype=np.int64)
            np.cumsum(self.n_atoms, out=off[1:])
            self._offsets = off
        return self._offsets

    @property
    def structure_index(self) -> np.ndarray:
        """``[A]`` int64: index of the structure each atom belongs to."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.n_atoms)

    def elements(self) -> list[int]:
        """Sorted distinct atomic numbers present (the default ``elements`` list)."""
        return [int(v) for v in np.unique(self.z)]

    # ------------------------------------------------------------------ selection
    def atom_indices(self, indices: np.ndarray) -> np.ndarray:
        """``[sum n_atoms[indices]]`` int64: flat atom indices of the given structures,
        in the order of ``indices``."""
        idx = self.check_indices(indices)
        return ragged_arange(self.offsets[idx], self.n_atoms[idx])

    def subset(self, indices: np.ndarray) -> Structures:
        """New :class:`Structures` holding structures ``indices`` (in that order).

        ``indices``: ``[K]`` integer array (or bool mask ``[M]``); arrays are copied.
        ``meta`` is shallow-copied, except that entries which are per-structure arrays
        (numpy arrays with leading dimension ``M``, e.g. ``qm9_index``) are indexed too.
        """
        idx = self.check_indices(indices)
        atoms = ragged_arange(self.offsets[idx], self.n_atoms[idx])
        return Structures(
            z=self.z[atoms],
            pos=self.pos[atoms],
            n_atoms=self.n_atoms[idx],
            y=self.y[idx],
            forces=None if self.forces is None else self.forces[atoms],
            meta={
                key: value[idx]
                if isinstance(value, np.ndarray) and value.ndim >= 1
                and value.shape[0] == len(self) else value
                for key, value in self.meta.items()
            },
        )

    def check_indices(self, indices: np.ndarray) -> np.ndarray:
        """Validated ``[K]`` int64 structure indices from an integer array or ``[M]`` bool
        mask; negative indices wrap; ``IndexError`` if out of range."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(
                    f"boolean mask has shape {idx.shape}; expected [M] = ({len(self)},)"
                )
            return np.nonzero(idx)[0].astype(np.int64)
        if idx.size == 0:
            return np.zeros(0, dtype=np.int64)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(
                f"structure indices must be a 1-D integer array; got shape {idx.shape}, "
                f"dtype {idx.dtype}"
            )
        idx = idx.astype(np.int64, copy=False)
        if idx.min() < -len(self) or idx.max() >= len(self):
            raise IndexError(
                f"structure index out of range: min {int(idx.min())}, max {int(idx.max())}, "
                f"M = {len(self)}"
            )
        return np.where(idx < 0, idx + len(self), idx)

    def __repr__(self) -> str:
        name = self.meta.get("name", "?")
        return (
            f"Structures(name={name!r}, M={len(self)}, A={self.n_atoms_total}, "
            f"forces={'yes' if self.forces is not None else 'no'})"
        )
