"""GFN2-xTB atomic-orbital tensors as equivariant node and edge features (UNiTE).

For one molecule (atomic numbers ``z`` [n], positions ``pos`` [n, 3] in Å) :func:`run_xtb`
runs GFN2-xTB with tblite and returns four AO-basis matrices:

- ``S`` overlap (dimensionless), ``H`` the core Hamiltonian H0 (tblite's
  ``hamiltonian-matrix``; Hartree), ``P`` the valence density matrix (electrons) and
  ``F = S C diag(eps) C^T S`` the converged Fock matrix (Hartree),

plus the xTB total energy in eV. Matrices are rotated from tblite's real-orbital order into
e3nn's real spherical-harmonic basis (:data:`TBLITE_TO_E3NN`, determined by rotating a
molecule and fitting, and checked in ``tests/data/test_xtb_features.py``):

- p shells: tblite orders (p_y, p_z, p_x); e3nn 0.4.4's l=1 basis is (x, y, z),
- d shells: tblite orders (d_xy, d_yz, d_z2, d_xz, d_x2-y2) with z as polar axis; e3nn's
  l=2 basis uses y as polar axis, so the map is an orthogonal 5x5 matrix, not a permutation.

Each atom-pair block ``M[a, b]`` with shells ``(l1, l2)`` transforms as
``D_l1(R) M D_l2(R)^T``; contracting with the orthogonal Clebsch-Gordan map
(:func:`fusion.diagrams.cg.coupling`) splits it into irreps ``L = |l1-l2| .. l1+l2`` with
parity ``(-1)^(l1+l2)``. Node features come from the diagonal blocks (``a = b``; only
``l1 <= l2``, and for ``l1 = l2`` only the symmetric ``L``), edge features from the
off-diagonal blocks (all ordered ``(l1, l2)``). Atom pairs whose blocks are all below
``threshold`` in every matrix are dropped, so the edge list (and the cost of everything
downstream) is linear in the matrices' non-zero blocks.

The irreps layout is fixed per feature type by ``lmax`` (the largest shell l of the
elements; 1 for H, C, N, O, F in GFN2-xTB, 2 from Na on): every atom has one slot per
``l <= lmax`` (GFN2-xTB has at most one shell per l per element), absent shells are zero.

Edges are stored once per unordered pair ``a < b``; :class:`XtbGraphLoader` adds the
reverse edge ``M[b, a] = M[a, b]^T`` whose irreps are the same numbers with sign
``(-1)^(l1+l2+L)`` and ``(l1, l2)`` swapped (:func:`reverse_edge_columns`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusion.data.cache import cache_error, load_npz_checked, save_npz_atomic

__all__ = [
    "MATRICES",
    "BOHR_PER_ANGSTROM",
    "HARTREE_TO_EV",
    "MAX_Z",
    "TBLITE_TO_E3NN",
    "XtbResult",
    "MoleculeFeatures",
    "XtbFeatureSet",
    "XtbGraphLoader",
    "make_xtb_loader",
    "feature_arrays",
    "feature_layout",
    "layout_irreps",
    "reverse_edge_columns",
    "run_xtb",
    "decompose",
    "molecule_features",
    "compute_feature_set",
    "save_feature_set",
    "load_feature_set",
    "element_lmax",
]

MATRICES = ("S", "H", "P", "F")
BOHR_PER_ANGSTROM = 1.0 / 0.529177210903  # CODATA 2018 Bohr radius
HARTREE_TO_EV = 27.211386245988
MAX_Z = 86  # tblite's GFN2-xTB parametrisation covers H..Rn
FEATURE_FORMAT_VERSION = 1

_S3 = np.sqrt(3.0) / 2.0
#: ``tblite_vector = TBLITE_TO_E3NN[l] @ e3nn_vector`` for one shell of angular momentum l.
TBLITE_TO_E3NN: dict[int, np.ndarray] = {
    0: np.eye(1),
    1: np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]),
    2: np.array([
        [0.0, 1.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 1.0, 0.0],
        [0.0, 0.0, -0.5, 0.0, _S3],
        [1.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, -_S3, 0.0, -0.5],
    ]),
}


def element_lmax(z: Sequence[int]) -> int:
    """Largest shell l of GFN2-xTB over elements ``z`` (1 for H..F, 2 from Na on, except
    K; checked against tblite in the tests)."""
    z = np.asarray(z, dtype=np.int64)
    if z.size == 0:
        return 0
    _check_elements(z, "element_lmax")
    return int(max(_shells_of(int(v))[-1] for v in np.unique(z)))


_SHELLS: dict[int, tuple[int, ...]] = {}


def _shells_of(z: int) -> tuple[int, ...]:
    """Shell angular momenta of element ``z`` in GFN2-xTB (from tblite, cached)."""
    if z not in _SHELLS:
        from tblite.interface import Calculator

        calc = Calculator("GFN2-xTB", np.array([z]), np.zeros((1, 3)))
        _SHELLS[z] = tuple(int(v) for v in calc.get("angular-momenta"))
    return _SHELLS[z]


def _check_elements(z: np.ndarray, where: str) -> None:
    bad = (z < 1) | (z > MAX_Z)
    if bad.any():
        k = int(np.argmax(bad))
        raise ValueError(
            f"{where}: atom {k} has atomic number {int(z[k])}; GFN2-xTB (tblite) supports "
            f"Z = 1..{MAX_Z}"
        )


# ------------------------------------------------------------------------- layout
def feature_layout(lmax: int, diagonal: bool) -> list[tuple[str, int, int, int]]:
    """Irreps layout ``[(matrix, l1, l2, L), ...]`` of node (``diagonal=True``) or edge
    features: for every matrix in :data:`MATRICES`, shell pairs ``(l1, l2)`` (``l1 <= l2``
    and only symmetric ``L`` for diagonal blocks), every ``L`` in ``|l1-l2| .. l1+l2``."""
    out = []
    for name in MATRICES:
        for l1 in range(lmax + 1):
            for l2 in range(lmax + 1):
                if diagonal and l2 < l1:
                    continue
                for L in range(abs(l1 - l2), l1 + l2 + 1):
                    if diagonal and l1 == l2 and (2 * l1 - L) % 2:
                        continue  # antisymmetric part of a symmetric block: always zero
                    out.append((name, l1, l2, L))
    return out


def layout_irreps(layout: Sequence[tuple[str, int, int, int]]) -> str:
    """e3nn irreps string of ``layout`` (one ``1x`` entry per row, not simplified)."""
    return "+".join(f"1x{L}{'e' if (l1 + l2) % 2 == 0 else 'o'}" for _, l1, l2, L in layout)


def reverse_edge_columns(lmax: int) -> tuple[np.ndarray, np.ndarray]:
    """``(columns [De], signs [De])``: features of edge ``b -> a`` are
    ``features(a -> b)[:, columns] * signs`` (block transpose; CG swap symmetry)."""
    layout = feature_layout(lmax, diagonal=False)
    start = np.cumsum([0] + [2 * L + 1 for *_, L in layout])
    where = {entry: k for k, entry in enumerate(layout)}
    columns, signs = [], []
    for name, l1, l2, L in layout:
        k = where[(name, l2, l1, L)]
        columns.extend(range(start[k], start[k] + 2 * L + 1))
        signs.extend([(-1.0) ** (l1 + l2 + L)] * (2 * L + 1))
    return np.asarray(columns, dtype=np.int64), np.asarray(signs)


# ------------------------------------------------------------------------- xtb
@dataclass
class XtbResult:
    """GFN2-xTB matrices of one molecule in the e3nn basis (tblite AO count ``K``).

    ``matrices``: name -> ``[K, K]`` (S dimensionless, H and F in Hartree, P electrons);
    ``energy``: total energy in eV; ``ao_atom`` [K]: atom of each AO; ``ao_l`` [K]: its
    shell l; ``ao_m`` [K]: its component (0..2l) in e3nn order.
    """

    matrices: dict[str, np.ndarray]
    energy: float
    ao_atom: np.ndarray
    ao_l: np.ndarray
    ao_m: np.ndarray


def _check_molecule(z, pos, where: str) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(z)
    pos = np.asarray(pos, dtype=np.float64)
    if z.ndim != 1 or not np.issubdtype(z.dtype, np.integer):
        raise ValueError(f"{where}: z must be a 1-D integer array [n], got shape {z.shape}, "
                         f"dtype {z.dtype}")
    if pos.shape != (z.shape[0], 3):
        raise ValueError(f"{where}: pos has shape {pos.shape}; expected [n, 3] = "
                         f"({z.shape[0]}, 3) in Å")
    if z.shape[0] == 0:
        raise ValueError(f"{where}: the molecule has no atoms")
    z = z.astype(np.int64)
    _check_elements(z, where)
    finite = np.isfinite(pos)
    if not finite.all():
        k = int(np.argwhere(~finite)[0, 0])
        raise ValueError(f"{where}: pos of atom {k} is {pos[k].tolist()}; expected finite "
                         "coordinates in Å")
    return z, pos


def run_xtb(z, pos, where: str = "molecule", accuracy: float = 1.0) -> XtbResult:
    """GFN2-xTB single point with tblite (one call, verbosity 0).

    ``z`` [n] atomic numbers (1..86), ``pos`` [n, 3] in Å (converted to Bohr for
    tblite). ``where`` names the molecule in error messages. Raises ``ValueError`` for
    unsupported elements or non-finite positions and ``RuntimeError`` (naming ``where``)
    when the SCF fails.
    """
    from tblite.exceptions import TBLiteRuntimeError
    from tblite.interface import Calculator

    z, pos = _check_molecule(z, pos, where)
    try:
        calc = Calculator("GFN2-xTB", z, pos * BOHR_PER_ANGSTROM)
        calc.set("verbosity", 0)
        calc.set("save-integrals", 1)
        calc.set("accuracy", accuracy)
        res = calc.singlepoint()
    except TBLiteRuntimeError as err:
        raise RuntimeError(f"{where}: GFN2-xTB (tblite) failed: {err}") from err
    shell_l = np.asarray(calc.get("angular-momenta"), dtype=np.int64)  # [n_shell]
    shell_atom = np.asarray(calc.get("shell-map"), dtype=np.int64)  # [n_shell]
    ao_shell = np.asarray(calc.get("orbital-map"), dtype=np.int64)  # [K]
    S = np.asarray(res.get("overlap-matrix"))  # [K, K]
    H = np.asarray(res.get("hamiltonian-matrix"))
    P = np.asarray(res.get("density-matrix"))
    C = np.asarray(res.get("orbital-coefficients"))  # [K (AO), K (MO)]
    eps = np.asarray(res.get("orbital-energies"))  # [K] Hartree
    SC = S @ C
    F = (SC * eps) @ SC.T
    # orthogonal AO transform tblite -> e3nn, block-diagonal over shells
    K = ao_shell.shape[0]
    T = np.zeros((K, K))  # e3nn = T @ tblite
    ao_m = np.zeros(K, dtype=np.int64)
    first = np.searchsorted(ao_shell, np.arange(shell_l.shape[0]))
    for l, start in zip(shell_l, first):
        sl = slice(start, start + 2 * l + 1)
        T[sl, sl] = TBLITE_TO_E3NN[int(l)].T
        ao_m[sl] = np.arange(2 * l + 1)
    matrices = {name: T @ M @ T.T for name, M in zip(MATRICES, (S, H, P, F))}
    return XtbResult(matrices=matrices, energy=float(res.get("energy")) * HARTREE_TO_EV,
                     ao_atom=shell_atom[ao_shell], ao_l=shell_l[ao_shell], ao_m=ao_m)


# ------------------------------------------------------------------------- decomposition
def _slot_offsets(lmax: int) -> list[int]:
    return [l * l for l in range(lmax + 1)]  # s at 0, p at 1..3, d at 4..8


def _padded(result: XtbResult, n_atoms: int, lmax: int) -> np.ndarray:
    """``[n_mat, n, n_slot, n, n_slot]``: matrices with every atom padded to one slot per
    l <= lmax (zeros where the element has no such shell)."""
    if int(result.ao_l.max()) > lmax:
        raise ValueError(f"the molecule has shells up to l = {int(result.ao_l.max())} but the "
                         f"feature layout was built for lmax = {lmax}")
    n_slot = (lmax + 1) ** 2
    slot = result.ao_l * result.ao_l + result.ao_m  # [K]
    flat = result.ao_atom * n_slot + slot  # [K]
    out = np.zeros((len(MATRICES), n_atoms * n_slot, n_atoms * n_slot))
    for k, name in enumerate(MATRICES):
        out[k][np.ix_(flat, flat)] = result.matrices[name]
    return out.reshape(len(MATRICES), n_atoms, n_slot, n_atoms, n_slot)


def decompose(blocks: np.ndarray, layout: Sequence[tuple[str, int, int, int]],
              lmax: int) -> np.ndarray:
    """Irreps of atom-pair blocks.

    ``blocks``: ``[n_mat, P, n_slot, n_slot]`` padded blocks of ``P`` atom pairs in the
    e3nn basis. Returns ``[P, D]`` in the order of ``layout`` (``D = sum(2L+1)``).
    """
    import torch

    from fusion.diagrams.cg import coupling

    offsets = _slot_offsets(lmax)
    index = {name: k for k, name in enumerate(MATRICES)}
    parts = []
    for name, l1, l2, L in layout:
        b = blocks[index[name], :, offsets[l1]:offsets[l1] + 2 * l1 + 1,
                   offsets[l2]:offsets[l2] + 2 * l2 + 1]  # [P, 2l1+1, 2l2+1]
        cg = coupling(l1, l2, L, dtype=torch.float64).numpy()  # orthogonal map
        parts.append(np.einsum("pab,abm->pm", b, cg))
    return np.concatenate(parts, axis=1) if parts else np.zeros((blocks.shape[1], 0))


@dataclass
class MoleculeFeatures:
    """Features of one molecule: ``node`` [n, D_node], ``edge`` [E, D_edge] for the pairs
    ``edge_index`` [2, E] (row 0 = a, row 1 = b, ``a < b``, block ``M[a, b]``),
    ``energy`` the xTB total energy in eV."""

    node: np.ndarray
    edge: np.ndarray
    edge_index: np.ndarray
    energy: float


def molecule_features(z, pos, lmax: int | None = None, threshold: float = 1e-5,
                      where: str = "molecule") -> MoleculeFeatures:
    """Node and (sparse) edge irreps features of one molecule (see module docstring).

    ``lmax``: layout (default: :func:`element_lmax` of ``z``); ``threshold``: a pair
    ``a < b`` is kept when some entry of its blocks (any matrix, e3nn basis, atomic units)
    has ``|value| > threshold`` (0 keeps every pair with a non-zero entry).
    """
    z, pos = _check_molecule(z, pos, where)
    lmax = element_lmax(z) if lmax is None else int(lmax)
    result = run_xtb(z, pos, where)
    n = z.shape[0]
    padded = _padded(result, n, lmax)  # [n_mat, n, s, n, s]
    atoms = np.arange(n)
    diag = padded[:, atoms, :, atoms, :].transpose(1, 0, 2, 3)  # [n_mat, n, s, s]
    node = decompose(diag, feature_layout(lmax, True), lmax)
    a, b = np.triu_indices(n, k=1)
    size = np.abs(padded).max(axis=(0, 2, 4))  # [n, n] largest entry per atom pair
    keep = size[a, b] > threshold
    a, b = a[keep], b[keep]
    pair_blocks = padded[:, a, :, b, :].transpose(1, 0, 2, 3)  # [n_mat, E, s, s]
    edge = decompose(pair_blocks, feature_layout(lmax, False), lmax)
    return MoleculeFeatures(node=node, edge=edge, edge_index=np.stack([a, b]),
                            energy=result.energy)


# ------------------------------------------------------------------------- feature sets
@dataclass
class XtbFeatureSet:
    """Features of ``M`` molecules, concatenated (ragged, like ``Structures``).

    ``node`` [A, D_node], ``node_counts`` [M]; ``edge`` [E, D_edge] (float32 or float64),
    ``edge_index`` [2, E] atom indices within each molecule (``a < b``), ``edge_counts``
    [M]; ``energy`` [M] xTB total energies (eV); ``lmax``; ``threshold``.
    """

    node: np.ndarray
    node_counts: np.ndarray
    edge: np.ndarray
    edge_index: np.ndarray
    edge_counts: np.ndarray
    energy: np.ndarray
    lmax: int
    threshold: float

    def __post_init__(self) -> None:
        self.node_offsets = np.concatenate([[0], np.cumsum(self.node_counts)]).astype(np.int64)
        self.edge_offsets = np.concatenate([[0], np.cumsum(self.edge_counts)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.node_counts.shape[0])

    @property
    def irreps_node(self) -> str:
        return layout_irreps(feature_layout(self.lmax, True))

    @property
    def irreps_edge(self) -> str:
        return layout_irreps(feature_layout(self.lmax, False))


def compute_feature_set(z: np.ndarray, pos: np.ndarray, n_atoms: np.ndarray,
                        lmax: int | None = None, threshold: float = 1e-5,
                        dtype=np.float32, names: Sequence[str] | None = None) -> XtbFeatureSet:
    """Features of every molecule of a flat ``(z [A], pos [A, 3] Å, n_atoms [M])`` set,
    stored as ``dtype``; ``names[i]`` names molecule i in error messages."""
    z = np.asarray(z, dtype=np.int64)
    n_atoms = np.asarray(n_atoms, dtype=np.int64)
    lmax = element_lmax(z) if lmax is None else int(lmax)
    offsets = np.concatenate([[0], np.cumsum(n_atoms)])
    nodes, edges, index, n_edges, energy = [], [], [], [], []
    for i in range(n_atoms.shape[0]):
        sl = slice(offsets[i], offsets[i + 1])
        where = names[i] if names is not None else f"molecule {i}"
        feats = molecule_features(z[sl], pos[sl], lmax, threshold, where)
        nodes.append(feats.node.astype(dtype))
        edges.append(feats.edge.astype(dtype))
        index.append(feats.edge_index)
        n_edges.append(feats.edge.shape[0])
        energy.append(feats.energy)
    d_node = sum(2 * L + 1 for *_, L in feature_layout(lmax, True))
    d_edge = sum(2 * L + 1 for *_, L in feature_layout(lmax, False))
    return XtbFeatureSet(
        node=np.concatenate(nodes) if nodes else np.zeros((0, d_node), dtype),
        node_counts=n_atoms.copy(),
        edge=np.concatenate(edges) if edges else np.zeros((0, d_edge), dtype),
        edge_index=np.concatenate(index, axis=1) if index else np.zeros((2, 0), np.int64),
        edge_counts=np.asarray(n_edges, dtype=np.int64),
        energy=np.asarray(energy, dtype=np.float64),
        lmax=lmax,
        threshold=float(threshold),
    )


_FEATURE_KEYS = ("xtb_node", "xtb_node_counts", "xtb_edge", "xtb_edge_index", "xtb_edge_counts",
                 "xtb_energy", "xtb_lmax", "xtb_threshold")


def feature_arrays(features: XtbFeatureSet) -> dict[str, np.ndarray]:
    """The arrays of ``features`` under ``xtb_*`` keys (to save alongside other arrays)."""
    return {
        "xtb_node": features.node, "xtb_node_counts": features.node_counts,
        "xtb_edge": features.edge, "xtb_edge_index": features.edge_index,
        "xtb_edge_counts": features.edge_counts, "xtb_energy": features.energy,
        "xtb_lmax": np.asarray(features.lmax), "xtb_threshold": np.asarray(features.threshold),
    }


def save_feature_set(path: str | os.PathLike, features: XtbFeatureSet,
                     extra: dict[str, np.ndarray] | None = None) -> Path:
    """Write ``features`` (and ``extra`` arrays) to an ``.npz`` cache atomically."""
    return save_npz_atomic(path, {**feature_arrays(features), **(extra or {})},
                           FEATURE_FORMAT_VERSION)


def load_feature_set(path: str | os.PathLike,
                     required: Sequence[str] = ()) -> tuple[XtbFeatureSet, dict[str, np.ndarray]]:
    """Load and check a cache written by :func:`save_feature_set`.

    Returns ``(features, other arrays)``; raises ``CacheError`` naming ``path`` when
    arrays are missing or their shapes disagree.
    """
    raw = load_npz_checked(path, FEATURE_FORMAT_VERSION, (*_FEATURE_KEYS, *required))
    lmax = int(raw["xtb_lmax"])
    features = XtbFeatureSet(
        node=raw["xtb_node"], node_counts=raw["xtb_node_counts"].astype(np.int64),
        edge=raw["xtb_edge"], edge_index=raw["xtb_edge_index"].astype(np.int64),
        edge_counts=raw["xtb_edge_counts"].astype(np.int64), energy=raw["xtb_energy"],
        lmax=lmax, threshold=float(raw["xtb_threshold"]),
    )
    d_node = sum(2 * L + 1 for *_, L in feature_layout(lmax, True))
    d_edge = sum(2 * L + 1 for *_, L in feature_layout(lmax, False))
    checks = [
        ("xtb_node", features.node.shape, (int(features.node_counts.sum()), d_node)),
        ("xtb_edge", features.edge.shape, (int(features.edge_counts.sum()), d_edge)),
        ("xtb_edge_index", features.edge_index.shape, (2, int(features.edge_counts.sum()))),
        ("xtb_energy", features.energy.shape, features.node_counts.shape),
    ]
    for key, shape, expected in checks:
        if tuple(shape) != tuple(expected):
            raise cache_error(path, f"array {key!r} has shape {tuple(shape)}; expected "
                                    f"{tuple(expected)} (lmax {lmax})")
    if not (np.isfinite(features.node).all() and np.isfinite(features.edge).all()):
        raise cache_error(path, "it contains non-finite xTB features")
    rest = {k: v for k, v in raw.items() if k not in _FEATURE_KEYS}
    return features, rest


# ------------------------------------------------------------------------- batches
class XtbGraphLoader:
    """Batches of molecules with xTB features, for :func:`fusion.train.trainer.train`.

    ``structures``: :class:`~fusion.data.structures.Structures` whose molecule ``i`` has
    features ``features`` molecule ``i``; ``indices``: the molecules to iterate.
    Each batch is a dict (``B`` molecules, ``A`` atoms, ``E`` directed edges):

    - ``node_feats`` [A, D_node], ``edge_feats`` [E, D_edge] (both directions of every
      stored pair), ``edge_index`` [2, E] (row 0 sender j, row 1 receiver i, block
      ``M[i, j]``), ``node_attrs`` [A, n_elements] one-hot, ``atomic_numbers`` [A],
      ``positions`` [A, 3] Å, ``batch`` [A], ``ptr`` [B+1], ``n_atoms`` [B],
      ``y`` / ``energy`` [B] target (eV), ``xtb_energy`` [B] eV, ``num_graphs`` (int).
    """

    def __init__(self, structures, features: XtbFeatureSet, indices, batch_size: int,
                 elements: Sequence[int], shuffle: bool = False, seed: int = 0, dtype=None):
        import torch

        from fusion.data.composition import element_index

        if len(features) != len(structures):
            raise ValueError(f"XtbGraphLoader: features hold {len(features)} molecules, the "
                             f"structures {len(structures)}")
        if batch_size < 1:
            raise ValueError(f"XtbGraphLoader: batch_size must be >= 1, got {batch_size}")
        self.structures = structures
        self.features = features
        self.indices = structures.check_indices(np.asarray(indices))
        self.batch_size = int(batch_size)
        self.elements = tuple(int(e) for e in elements)
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.dtype = dtype or torch.get_default_dtype()
        self.species = element_index(structures.z, self.elements)  # [A_all]
        self.rev_columns, self.rev_signs = reverse_edge_columns(features.lmax)

    def __len__(self) -> int:
        return -(-self.indices.shape[0] // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle differently each epoch (deterministic in ``seed`` and ``epoch``)."""
        self.epoch = int(epoch)

    def __iter__(self):
        order = self.indices
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            order = order[rng.permutation(order.shape[0])]
        for start in range(0, order.shape[0], self.batch_size):
            yield self.collate(order[start:start + self.batch_size])

    def collate(self, molecules: np.ndarray) -> dict:
        """The batch dict of ``molecules`` (structure indices)."""
        import torch

        from fusion.data.structures import ragged_arange

        s, f = self.structures, self.features
        n_atoms = s.n_atoms[molecules]  # [B]
        atoms = ragged_arange(s.offsets[molecules], n_atoms)  # [A]
        feat_atoms = ragged_arange(f.node_offsets[molecules], f.node_counts[molecules])
        n_edges = f.edge_counts[molecules]
        edges = ragged_arange(f.edge_offsets[molecules], n_edges)  # [E/2]
        first_atom = np.concatenate([[0], np.cumsum(n_atoms)[:-1]])  # [B]
        shift = np.repeat(first_atom, n_edges)  # [E/2]
        a = f.edge_index[0, edges] + shift
        b = f.edge_index[1, edges] + shift
        forward = f.edge[edges].astype(np.float64)  # block M[a, b]: receiver a, sender b
        backward = forward[:, self.rev_columns] * self.rev_signs  # M[b, a]
        edge_index = np.stack([np.concatenate([b, a]), np.concatenate([a, b])])
        one_hot = np.zeros((atoms.shape[0], len(self.elements)))
        one_hot[np.arange(atoms.shape[0]), self.species[atoms]] = 1.0
        dt = self.dtype
        y = torch.as_tensor(s.y[molecules], dtype=dt)
        return {
            "node_feats": torch.as_tensor(f.node[feat_atoms], dtype=dt),
            "edge_feats": torch.as_tensor(np.concatenate([forward, backward]), dtype=dt),
            "edge_index": torch.as_tensor(edge_index, dtype=torch.long),
            "node_attrs": torch.as_tensor(one_hot, dtype=dt),
            "atomic_numbers": torch.as_tensor(s.z[atoms], dtype=torch.long),
            "positions": torch.as_tensor(s.pos[atoms], dtype=dt),
            "batch": torch.as_tensor(np.repeat(np.arange(len(molecules)), n_atoms),
                                     dtype=torch.long),
            "ptr": torch.as_tensor(np.concatenate([[0], np.cumsum(n_atoms)]), dtype=torch.long),
            "n_atoms": torch.as_tensor(n_atoms, dtype=torch.long),
            "y": y,
            "energy": y,
            "xtb_energy": torch.as_tensor(f.energy[molecules], dtype=dt),
            "num_graphs": int(len(molecules)),
        }


def make_xtb_loader(structures, indices, batch_size: int, elements: Sequence[int],
                    shuffle: bool = False, seed: int = 0, dtype=None) -> XtbGraphLoader:
    """:class:`XtbGraphLoader` over ``structures`` whose ``meta["xtb_features"]`` holds the
    features (the datasets of :mod:`fusion.data.qm9xtb` put it there and set
    ``meta["make_loader"]`` to this function)."""
    features = structures.meta.get("xtb_features")
    if not isinstance(features, XtbFeatureSet):
        raise ValueError(f"structures {structures!r} carry no xTB features "
                         "(meta['xtb_features']); load a qm9xtb-* dataset")
    return XtbGraphLoader(structures, features, indices, batch_size, elements, shuffle, seed,
                          dtype)
