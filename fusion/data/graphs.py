"""Radius graphs for molecules and a loader producing mace-torch style batches.

Neighbour lists: molecules have no periodic cell, so an edge ``(s, r)`` joins two
distinct atoms of the same molecule with ``|pos[r] - pos[s]| < r_max`` (strict, as
matscipy's neighbour list used by mace-torch); both directions are present, no
self-edges. :func:`neighbour_lists` computes them for many molecules at once: molecules
are grouped by size ``n`` and each group's ``[m, n, n]`` distance tensor is computed in
one numpy expression (chunked to bound memory). Within a molecule, edges are ordered by
(sender, receiver).

:class:`GraphLoader` precomputes the neighbour lists once and yields batches as dicts of
tensors in the layout of ``docs/architecture.md`` (mace-torch's ``AtomicData`` batch).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fusion.data.composition import element_index
from fusion.data.structures import Structures, ragged_arange

__all__ = ["NeighbourLists", "neighbour_lists", "average_num_neighbors", "GraphLoader"]

# Upper bound on m * n * n distance entries computed at once (~ 8 bytes * 3 each).
_CHUNK_ENTRIES = 1 << 21


@dataclass
class NeighbourLists:
    """Edges of structures ``indices`` (in that order), CSR over structures.

    - ``indices``: ``[K]`` structure indices.
    - ``counts``: ``[K]`` int64, edges per structure; ``offsets``: ``[K + 1]``.
    - ``sender``, ``receiver``: ``[E]`` int32, atom indices local to the structure
      (0 .. n_atoms - 1); edges of structure ``k`` are ``offsets[k]:offsets[k+1]``.
    """

    indices: np.ndarray
    counts: np.ndarray
    offsets: np.ndarray
    sender: np.ndarray
    receiver: np.ndarray

    @property
    def n_edges(self) -> int:
        """Total number of (directed) edges ``E``."""
        return int(self.sender.shape[0])


def neighbour_lists(structures: Structures, indices: np.ndarray | None,
                    r_max: float) -> NeighbourLists:
    """Radius-graph edges (no PBC, no self-edges, distance < ``r_max`` Å) of structures
    ``indices`` (``None`` = all), vectorised across molecules of equal size."""
    if not r_max > 0:
        raise ValueError(f"r_max must be > 0 (Å), got {r_max}")
    idx = np.arange(len(structures)) if indices is None else np.asarray(indices, dtype=np.int64)
    idx = structures.check_indices(idx)
    n = structures.n_atoms[idx]
    starts = structures.offsets[idx]
    r2 = float(r_max) ** 2
    # Pass 1: per size group, the (molecule, sender, receiver) triples, already sorted
    # by (molecule, sender, receiver) within the group (np.nonzero order).
    found = []  # (positions in idx [L], sender [L], receiver [L])
    counts = np.zeros(idx.shape[0], dtype=np.int64)
    for size in np.unique(n):
        size = int(size)
        if size < 2:
            continue
        group = np.nonzero(n == size)[0]  # positions in idx
        chunk = max(1, _CHUNK_ENTRIES // (size * size))
        self_pair = np.eye(size, dtype=bool)
        for c0 in range(0, group.shape[0], chunk):
            g = group[c0:c0 + chunk]
            p = structures.pos[starts[g][:, None] + np.arange(size)]  # [m, n, 3]
            d2 = np.zeros((g.shape[0], size, size))  # [m, n(sender), n(receiver)]
            for k in range(3):
                x = p[:, :, k]
                d2 += np.square(x[:, :, None] - x[:, None, :])
            within = d2 < r2
            within[:, self_pair] = False
            mi, si, ri = np.nonzero(within)
            found.append((g[mi], si.astype(np.int32), ri.astype(np.int32)))
            counts[g] = within.sum(axis=(1, 2))
    offsets = np.zeros(idx.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    # Pass 2: scatter each group's edges into CSR order (no global sort): an edge's
    # slot is its molecule's offset plus its rank inside that molecule's block.
    sender = np.empty(int(offsets[-1]), dtype=np.int32)
    receiver = np.empty(int(offsets[-1]), dtype=np.int32)
    for mol, si, ri in found:
        if mol.shape[0] == 0:
            continue
        first = np.ones(mol.shape[0], dtype=bool)
        first[1:] = mol[1:] != mol[:-1]
        block_start = np.flatnonzero(first)
        rank = np.arange(mol.shape[0]) - np.repeat(block_start, np.diff(
            np.append(block_start, mol.shape[0])))
        dest = offsets[mol] + rank
        sender[dest] = si
        receiver[dest] = ri
    return NeighbourLists(idx, counts, offsets, sender, receiver)


def average_num_neighbors(structures: Structures, indices: np.ndarray | None,
                          r_max: float) -> float:
    """Mean number of neighbours per atom (directed edges / atoms) within ``r_max`` Å
    over structures ``indices`` (``None`` = all): mace-torch's ``avg_num_neighbors``."""
    nl = neighbour_lists(structures, indices, r_max)
    n_atoms = int(structures.n_atoms[nl.indices].sum())
    if n_atoms == 0:
        raise ValueError("average_num_neighbors needs at least one atom")
    return nl.n_edges / n_atoms


class GraphLoader:
    """Batches of radius graphs over structures ``indices``, in mace-torch's layout.

    Parameters: ``structures``; ``indices`` ``[K]`` (structures to iterate over);
    ``batch_size``; ``r_max`` (Å); ``elements`` (sorted atomic numbers, one-hot order;
    an atom whose Z is not listed raises ``ValueError`` here); ``shuffle``; ``seed``;
    ``dtype`` of float tensors (``torch.float32`` default or ``torch.float64``);
    ``drop_last``.

    Shuffling is deterministic: epoch ``e`` (see :meth:`set_epoch`, default 0) visits
    ``indices`` in the order ``np.random.default_rng([seed, e]).permutation(K)``; without
    ``shuffle`` the order of ``indices`` is kept. ``len(loader)`` is the number of batches.

    Each batch (``B`` structures, ``A`` atoms, ``E`` edges) is a dict of tensors:
    ``positions`` [A,3] Å; ``node_attrs`` [A,n_elements] one-hot; ``atomic_numbers``
    [A]; ``edge_index`` [2,E] (sender, receiver, batch-global atom indices);
    ``shifts``, ``unit_shifts`` [E,3] zeros; ``cell`` [B*3,3] zeros; ``batch`` [A];
    ``ptr`` [B+1]; ``head`` [B] zeros; ``weight``, ``energy_weight``, ``forces_weight``,
    ``stress_weight``, ``virials_weight``, ``dipole_weight``, ``charges_weight`` [B]
    ones; ``y`` and ``energy`` [B] (the same tensor, internal units); ``forces`` [A,3]
    when the structures have forces; ``n_atoms`` [B]. Integer tensors are int64.
    """

    _WEIGHT_KEYS = ("weight", "energy_weight", "forces_weight", "stress_weight",
                    "virials_weight", "dipole_weight", "charges_weight")

    def __init__(self, structures: Structures, indices: np.ndarray, batch_size: int,
                 r_max: float, elements: Sequence[int], shuffle: bool = False, seed: int = 0,
                 dtype: torch.dtype = torch.float32, drop_last: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.structures = structures
        self.indices = structures.check_indices(np.asarray(indices))
        self.batch_size = int(batch_size)
        self.r_max = float(r_max)
        self.elements = [int(e) for e in elements]
        if self.elements != sorted(set(self.elements)):
            raise ValueError(f"elements must be sorted distinct atomic numbers, got {elements}")
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.dtype = dtype
        self.drop_last = bool(drop_last)
        self.epoch = 0
        # Per-atom element index for the atoms of `indices` (checked here, fail early).
        atoms = structures.atom_indices(self.indices)
        try:
            elem = element_index(structures.z[atoms], self.elements)
        except ValueError as exc:
            raise ValueError(f"GraphLoader over {structures.meta.get('name', 'structures')}: "
                             f"{exc}") from None
        self._element = np.full(structures.n_atoms_total, -1, dtype=np.int64)
        self._element[atoms] = elem
        self.neighbours = neighbour_lists(structures, self.indices, self.r_max)

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffling order of epoch ``epoch`` (deterministic given ``seed``)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        k = self.indices.shape[0]
        return k // self.batch_size if self.drop_last else math.ceil(k / self.batch_size)

    def _order(self) -> np.ndarray:
        k = self.indices.shape[0]
        if not self.shuffle:
            return np.arange(k)
        return np.random.default_rng([self.seed, self.epoch]).permutation(k)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        order = self._order()
        for b in range(len(self)):
            yield self.collate(order[b * self.batch_size:(b + 1) * self.batch_size])

    def collate(self, positions: np.ndarray) -> dict[str, torch.Tensor]:
        """Batch of the structures ``self.indices[positions]`` (positions into
        ``indices``, so neighbour lists are reused)."""
        positions = np.asarray(positions, dtype=np.int64)
        st, nl = self.structures, self.neighbours
        sidx = self.indices[positions]
        n = st.n_atoms[sidx]
        n_graphs, n_total = sidx.shape[0], int(n.sum())
        atoms = ragged_arange(st.offsets[sidx], n)
        ptr = np.zeros(n_graphs + 1, dtype=np.int64)
        np.cumsum(n, out=ptr[1:])
        ecount = nl.counts[positions]
        edges = ragged_arange(nl.offsets[positions], ecount)
        shift = np.repeat(ptr[:-1], ecount)
        edge_index = np.stack([nl.sender[edges] + shift, nl.receiver[edges] + shift])  # int64
        n_edges = edge_index.shape[1]

        fdt = self.dtype
        node_attrs = torch.zeros(n_total, len(self.elements), dtype=fdt)
        node_attrs[torch.arange(n_total), torch.from_numpy(self._element[atoms])] = 1.0
        y = torch.as_tensor(st.y[sidx], dtype=fdt)
        batch = {
            "positions": torch.as_tensor(st.pos[atoms], dtype=fdt),
            "node_attrs": node_attrs,
            "atomic_numbers": torch.from_numpy(st.z[atoms]),
            "edge_index": torch.from_numpy(edge_index),
            "shifts": torch.zeros(n_edges, 3, dtype=fdt),
            "unit_shifts": torch.zeros(n_edges, 3, dtype=fdt),
            "cell": torch.zeros(n_graphs * 3, 3, dtype=fdt),
            "batch": torch.from_numpy(np.repeat(np.arange(n_graphs, dtype=np.int64), n)),
            "ptr": torch.from_numpy(ptr),
            "head": torch.zeros(n_graphs, dtype=torch.int64),
            "y": y,
            "energy": y,
            "n_atoms": torch.from_numpy(n.copy()),
        }
        for key in self._WEIGHT_KEYS:
            batch[key] = torch.ones(n_graphs, dtype=fdt)
        if st.forces is not None:
            batch["forces"] = torch.as_tensor(st.forces[atoms], dtype=fdt)
        return batch
