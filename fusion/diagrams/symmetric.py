"""Symmetric fusion trees: chain couplings of nu copies of one tensor (MACE's product basis).

For one node and one channel, let ``x`` be the concatenation of the coupling irreps
``ir_1 + ... + ir_K`` (dimension ``D``; for MACE ``0e+1o+2e+3o``, ``D = 16``). A *chain path*
of correlation ``nu`` is an admissible labelling of the chain tree ``((x x) x) ... x``: leaf
irreps and the label of every internal edge. Its value is a homogeneous polynomial of degree
``nu`` in ``x`` with values in the output irrep. With the same tensor on every leaf most paths
are linearly dependent, so we select an *independent path basis* by a rank test.

Everything here is exact set-up work in float64 (paths, coupling tensors, symmetric monomial
coefficients, basis selection, folding into the fast kernel's layout); the fast evaluation lives
in :mod:`fusion.blocks.product`.

Conventions follow mace-torch's ``U_matrix_real`` (``_wigner_nj``) exactly: real CG tensors from
``e3nn.o3.wigner_3j``, "component" normalisation (each vertex scaled by ``sqrt(2 l_out + 1)``),
path order = the order of ``_wigner_nj`` (leaves in irreps order, stable sort by output irrep at
every level). So ``basis="full"`` reproduces mace's path set column by column.
"""

from __future__ import annotations

import fusion._mace_first  # noqa: F401  (mace before e3nn)

# isort: split

import contextlib
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache

import torch
from e3nn import o3

Irrep = o3.Irrep


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run set-up on one thread: its ops are tiny, and on a busy machine intra-op threads
    waiting for each other made it 100x slower (measured here)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# --------------------------------------------------------------------------------------
# Coupling irreps
# --------------------------------------------------------------------------------------
def coupling_irreps(irreps: o3.Irreps | str | Sequence) -> tuple[list[Irrep], int]:
    """``C x ir_1 + ... + C x ir_K`` -> ([ir_1, ..., ir_K], C).

    MACE's product acts channelwise on node features whose irreps all have the same
    multiplicity ``C`` (the channels); repeated irreps are not allowed (they would be channels).
    """
    irreps = o3.Irreps(irreps)
    muls = {mul for mul, _ in irreps}
    if len(muls) != 1:
        raise ValueError(
            f"node features {irreps} must have one multiplicity (the channel count) for every "
            f"irrep, got multiplicities {sorted(muls)}"
        )
    irs = [ir for _, ir in irreps]
    if len(set(irs)) != len(irs):
        raise ValueError(f"node features {irreps} repeat an irrep; expected C x (ir_1+...+ir_K)")
    return irs, muls.pop()


def irreps_slices(irs: Sequence[Irrep]) -> list[slice]:
    """Position of each coupling irrep inside the ``D``-vector."""
    out, i = [], 0
    for ir in irs:
        out.append(slice(i, i + ir.dim))
        i += ir.dim
    return out


# --------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChainPath:
    """An admissible labelling of the chain tree ``((x_1 x_2) x_3) ... x_nu``.

    ``leaves[i]`` indexes the coupling irrep on leaf ``i``; ``labels[0]`` is leaf 1's irrep and
    ``labels[v]`` the output label of vertex ``v`` (``labels[-1]`` is the output irrep).
    """

    leaves: tuple[int, ...]
    labels: tuple[Irrep, ...]

    @property
    def nu(self) -> int:
        return len(self.leaves)

    @property
    def ir_out(self) -> Irrep:
        return self.labels[-1]

    def vertices(self, irs: Sequence[Irrep]) -> list[tuple[Irrep, Irrep, Irrep]]:
        """(left, right, out) label triple of each vertex, bottom-up."""
        return [
            (self.labels[v - 1], irs[self.leaves[v]], self.labels[v]) for v in range(1, self.nu)
        ]


def mace_filter(nu: int) -> list[Irrep] | None:
    """Internal-label filter mace-torch applies (``U_matrix_real``, no cuequivariance)."""
    if nu == 4:
        return [Irrep(l, 1 if l % 2 == 0 else -1) for l in range(12)]
    return None


def enumerate_chain_paths(
    irs: Sequence[Irrep],
    nu: int,
    filter_ir_mid: Sequence[Irrep] | None = None,
    lmax_internal: int | None = None,
) -> list[ChainPath]:
    """All chain paths of ``nu`` leaves, in mace-torch's ``_wigner_nj`` order.

    ``filter_ir_mid`` (as mace) restricts every vertex output, ``lmax_internal`` only the
    internal edges. The list is sorted by output irrep (stable), like mace's.
    """
    if nu < 1:
        raise ValueError(f"correlation order must be >= 1, got {nu}")
    filt = None if filter_ir_mid is None else {Irrep(ir) for ir in filter_ir_mid}
    if nu == 1:  # mace's base case: leaves in irreps order, not sorted
        return [ChainPath((k,), (ir,)) for k, ir in enumerate(irs)]
    out = []
    for left in enumerate_chain_paths(irs, nu - 1, filter_ir_mid, lmax_internal):
        if nu - 1 >= 2 and lmax_internal is not None and left.ir_out.l > lmax_internal:
            continue  # left.ir_out is an internal edge of the longer chain
        for k, ir in enumerate(irs):
            for ir_o in left.ir_out * ir:
                if filt is not None and ir_o not in filt:
                    continue
                out.append(ChainPath(left.leaves + (k,), left.labels + (ir_o,)))
    return sorted(out, key=lambda p: p.ir_out)


def path_tensor(path: ChainPath, irs: Sequence[Irrep], dtype=torch.float64) -> torch.Tensor:
    """Dense coupling tensor ``T[m, i_1, ..., i_nu]`` of a path (mace's ``U`` column).

    Value of the path on ``x``: ``sum T[m, i_1..i_nu] x[i_1] ... x[i_nu]``. Set-up only (size
    ``(2l+1) D^nu``); never used in the forward pass.
    """
    sl = irreps_slices(irs)
    D = sum(ir.dim for ir in irs)
    T = torch.eye(D, dtype=dtype)[sl[path.leaves[0]]]  # [d_1, D]
    for v in range(1, path.nu):
        ir_l, ir_r, ir_o = path.labels[v - 1], irs[path.leaves[v]], path.labels[v]
        cg = o3.wigner_3j(ir_o.l, ir_l.l, ir_r.l, dtype=dtype) * ir_o.dim**0.5  # [o, l, r]
        C = (
            (cg.permute(0, 2, 1).reshape(-1, ir_l.dim) @ T.flatten(1))
            .reshape(ir_o.dim, ir_r.dim, -1)
            .transpose(1, 2)
        )  # [o, D^v, d_r]: mace's einsum("jk,ijl->ikl", T, cg)
        E = torch.zeros((ir_o.dim,) + (D,) * v + (D,), dtype=dtype)
        E[..., sl[path.leaves[v]]] = C.reshape((ir_o.dim,) + (D,) * v + (ir_r.dim,))
        T = E
    return T


# --------------------------------------------------------------------------------------
# Symmetric monomials (colex order: sorted by largest index first, so that "largest index
# <= m" is always a prefix)
# --------------------------------------------------------------------------------------
@cache
def monomials(D: int, degree: int) -> tuple[tuple[int, ...], ...]:
    """Sorted index tuples ``i_1 <= ... <= i_d`` of degree-d monomials in colex order."""
    if degree == 0:
        return ((),)
    lower = monomials(D, degree - 1)
    out = []
    for m in range(D):
        out.extend(t + (m,) for t in lower[: n_monomials(m + 1, degree - 1)])
    return tuple(out)


def n_monomials(D: int, degree: int) -> int:
    """Number of degree-d monomials in D variables (= those with largest index < D)."""
    return math.comb(D + degree - 1, degree) if degree > 0 else 1


@cache
def _sym_index(D: int, degree: int) -> torch.Tensor:
    """For every ordered index tuple (flattened, ``D^d``): its monomial's colex position."""
    pos = {t: i for i, t in enumerate(monomials(D, degree))}
    idx = [pos[tuple(sorted(t))] for t in itertools.product(range(D), repeat=degree)]
    return torch.tensor(idx, dtype=torch.long)


def symmetric_coefficients(T: torch.Tensor) -> torch.Tensor:
    """``T[m, i_1..i_nu]`` -> coefficients ``[m, monomial]`` of the polynomial it defines on x."""
    M, D, nu = T.shape[0], T.shape[1], T.dim() - 1
    idx = _sym_index(D, nu)
    return torch.zeros(M, len(monomials(D, nu)), dtype=T.dtype).index_add_(1, idx, T.reshape(M, -1))


def monomial_values(x: torch.Tensor, degree: int) -> torch.Tensor:
    """``x [S, D]`` -> all degree-d monomials ``[S, n_monomials]`` (colex order)."""
    D = x.shape[-1]
    idx = torch.tensor(monomials(D, degree), dtype=torch.long).reshape(-1, degree)
    return x[:, idx].prod(-1) if degree > 0 else x.new_ones(x.shape[0], 1)


# --------------------------------------------------------------------------------------
# Independent basis
# --------------------------------------------------------------------------------------
def independent_columns(
    values: torch.Tensor, rtol: float = 1e-8, scale: float | None = None
) -> list[int]:
    """Greedy maximal independent subset of the columns of ``values [rows, P]``.

    Columns are taken in order and kept when they add rank (Gram-Schmidt with
    re-orthogonalisation, float64); so the basis prefers the earliest paths (low internal l).

    The zero test is against the *input scale*, never against the other columns: a column is
    zero when its norm is ``<= rtol * scale``, with ``scale`` the norm a generic non-zero
    column has (default ``sqrt(rows)``: unit-variance inputs through component-normalised
    couplings give entries of order one). A group whose paths all vanish (e.g. odd outputs
    of a symmetric product that only the antisymmetric part could reach) thus keeps none,
    where a threshold relative to the group's own largest column would keep rounding noise.
    A kept column must also add ``rtol`` of its own norm to the span.
    """
    V = values.to(torch.float64)
    if scale is None:
        scale = float(V.shape[0]) ** 0.5
    Q = V.new_zeros(V.shape[0], 0)
    keep = []
    for p in range(V.shape[1]):
        v = V[:, p]
        if v.norm() <= rtol * scale:
            continue
        r = v - Q @ (Q.T @ v)
        r = r - Q @ (Q.T @ r)  # second pass: keeps Q orthonormal to ~1e-16
        if r.norm() > rtol * v.norm():
            Q = torch.cat([Q, (r / r.norm())[:, None]], dim=1)
            keep.append(p)
    return keep


def random_path_values(
    coefficients: torch.Tensor, D: int, n_samples: int, seed: int = 0
) -> torch.Tensor:
    """Path outputs on random inputs, one column per path: ``[n_samples * M, P]``.

    ``coefficients [P, M, n_mono]`` (exact polynomials); inputs ``x ~ N(0, 1)^D``.
    """
    P, M, _ = coefficients.shape
    nu = round(_degree_from_count(D, coefficients.shape[-1]))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_samples, D, generator=g, dtype=torch.float64)
    mono = monomial_values(x, nu)  # [S, n_mono]
    vals = torch.einsum("sk,pmk->smp", mono, coefficients.to(torch.float64))
    return vals.reshape(n_samples * M, P)


def _degree_from_count(D: int, n: int) -> int:
    for d in range(0, 16):
        if n_monomials(D, d) == n:
            return d
    raise ValueError(f"{n} is not a monomial count for D={D}")


@dataclass
class PathGroup:
    """The paths of one (output irrep, correlation order) pair."""

    i_out: int
    ir_out: Irrep
    nu: int
    paths: list[ChainPath]  # selected basis
    all_paths: list[ChainPath]  # full chain path set (mace's U columns)
    selected: list[int]  # positions of ``paths`` inside ``all_paths``
    coefficients: torch.Tensor  # [P, 2l+1, n_monomials(D, nu)] float64, selected paths
    rank: int  # rank of the full path set (= len(paths) for basis="independent")


class SymmetricBasis:
    """Selected chain paths of correlation 1..``correlation`` for each output irrep.

    ``basis="full"``: every chain path (mace's weights, one per path); ``"independent"``: a
    maximal linearly independent subset, chosen greedily by a rank test on the path outputs
    over random inputs (same span, fewer weights). Groups are ordered by output irrep, then
    by ``nu = 1..correlation``.

    ``use_mace_filter`` (default: only for ``basis="full"``) applies mace-torch's filter on
    every vertex label at correlation 4 (natural parity, ``l < 12``; its ``U_matrix_real``
    without cuequivariance). The independent basis does not: with unnatural-parity inputs
    (``0e+0o+1e+1o``) the filter drops whole outputs and rank (``0e`` at nu 4: 9 of 12),
    which mace's reduced basis (``use_reduced_cg=True``) keeps. Unfiltered, the independent
    counts are the multiplicities of each output in ``Sym^nu`` of the inputs, so the
    independent basis spans both mace bases.
    """

    def __init__(
        self,
        irreps_in: o3.Irreps | str | Sequence[Irrep],
        irreps_out: o3.Irreps | str | Sequence[Irrep],
        correlation: int,
        basis: str = "independent",
        lmax_internal: int | None = None,
        use_mace_filter: bool | None = None,
        n_samples: int | None = None,
        seed: int = 0,
    ) -> None:
        if basis not in ("independent", "full"):
            raise ValueError(f"basis must be 'independent' or 'full', got {basis!r}")
        if use_mace_filter is None:
            use_mace_filter = basis == "full"
        with single_thread():
            self._build(
                irreps_in,
                irreps_out,
                correlation,
                basis,
                lmax_internal,
                use_mace_filter,
                n_samples,
                seed,
            )

    def _build(
        self,
        irreps_in,
        irreps_out,
        correlation,
        basis,
        lmax_internal,
        use_mace_filter,
        n_samples,
        seed,
    ) -> None:
        if isinstance(irreps_in, (str, o3.Irreps)):
            irs = [ir for _, ir in o3.Irreps(irreps_in)]
        else:
            irs = [Irrep(ir) for ir in irreps_in]
        outs = (
            [ir for _, ir in o3.Irreps(irreps_out)]
            if not isinstance(irreps_out, (list, tuple))
            else [Irrep(ir) for ir in irreps_out]
        )
        if not isinstance(correlation, int) or isinstance(correlation, bool) or correlation < 1:
            raise ValueError(f"correlation must be an integer >= 1, got {correlation!r}")
        if basis not in ("independent", "full"):
            raise ValueError(f"basis must be 'independent' or 'full', got {basis!r}")
        self.irs, self.irreps_out, self.correlation, self.basis = irs, outs, correlation, basis
        self.D = sum(ir.dim for ir in irs)
        self.groups: list[PathGroup] = []
        for i_out, ir_out in enumerate(outs):
            for nu in range(1, correlation + 1):
                filt = mace_filter(nu) if use_mace_filter else None
                allp = [
                    p
                    for p in enumerate_chain_paths(irs, nu, filt, lmax_internal)
                    if p.ir_out == ir_out
                ]
                coef = (
                    torch.stack([symmetric_coefficients(path_tensor(p, irs)) for p in allp])
                    if allp
                    else torch.zeros(0, ir_out.dim, n_monomials(self.D, nu), dtype=torch.float64)
                )
                if allp:
                    # Enough samples that S*M >> number of paths and S >= monomial count.
                    S = n_samples or max(2 * n_monomials(self.D, nu) // ir_out.dim, 64)
                    vals = random_path_values(coef, self.D, S, seed=seed + 7919 * nu + i_out)
                    indep = independent_columns(vals)
                else:
                    indep = []
                sel = indep if basis == "independent" else list(range(len(allp)))
                self.groups.append(
                    PathGroup(
                        i_out, ir_out, nu, [allp[i] for i in sel], allp, sel, coef[sel], len(indep)
                    )
                )

        # Outputs no symmetric polynomial reaches (no chain path at all, or every path's
        # symmetric part vanishes, e.g. 1e from 1o x 1o): identically zero, no weights.
        # mace-torch accepts them too (its output there is zero as well), so they are
        # reported here, not an error; ``unreachable_message`` says it in words.
        self.unreachable = [
            ir for i, ir in enumerate(outs) if not any(g.rank for g in self.groups if g.i_out == i)
        ]
        self.unreachable_message = (
            f"output irrep(s) {', '.join(map(str, self.unreachable))} cannot be reached from "
            f"inputs {'+'.join(str(ir) for ir in irs)} with correlation {correlation}"
            + (f" and lmax_internal {lmax_internal}" if lmax_internal is not None else "")
            + " (no symmetric product of the inputs has them): they are identically zero"
            if self.unreachable
            else ""
        )

    @property
    def num_paths(self) -> int:
        return sum(len(g.paths) for g in self.groups)

    def counts(self) -> dict[str, dict[int, int]]:
        """``{ir_out: {nu: number of selected paths}}``."""
        out: dict[str, dict[int, int]] = {}
        for g in self.groups:
            out.setdefault(str(g.ir_out), {})[g.nu] = len(g.paths)
        return out

    def group(self, i_out: int, nu: int) -> PathGroup:
        return self.groups[i_out * self.correlation + (nu - 1)]


# --------------------------------------------------------------------------------------
# Fast-kernel layout: out[m] = sum_k x_k * sum_r K[(k, m), r] * row_r(x), block-diagonal
# --------------------------------------------------------------------------------------
def reflection_signatures(irs: Sequence[Irrep]) -> list[int] | None:
    """3-bit sign pattern of every basis component under the reflections x, y, z -> -x, -y, -z.

    In e3nn's real basis each component is even or odd under each axis reflection (the
    representation matrices are diagonal, +-1). An equivariant polynomial can only couple a
    monomial to an output component of the same total pattern (XOR of its factors'), which is
    why ~7/8 of a dense coupling kernel is zero. ``None`` if some matrix is not diagonal.
    """
    irreps = o3.Irreps([(1, ir) for ir in irs])
    sig = [0] * irreps.dim
    for bit, diag in enumerate(([-1.0, 1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, -1.0])):
        D = irreps.D_from_matrix(torch.diag(torch.tensor(diag, dtype=torch.float64)))
        d = torch.diagonal(D)
        if (D - torch.diag(d)).abs().max() > 1e-9 or ((d.abs() - 1).abs() > 1e-9).any():
            return None
        for i in range(irreps.dim):
            sig[i] |= int(d[i] < 0) << bit
    return sig


class KernelLayout:
    """Layout of the folded kernel used by :class:`fusion.blocks.product.FusionProduct`.

    Every degree-nu monomial ``x_{i_1} ... x_{i_nu}`` (sorted indices) is written as
    ``x_k * row`` with ``k = i_nu`` (the *last leaf*) and ``row`` the remaining degree-(nu-1)
    monomial, so products ``A_i A_j`` appear for ``i <= j`` only. Rows are all monomials of
    degree ``0..correlation-1`` (``1``, ``x_i``, ``x_i x_j``, ...); output "pairs" are
    ``(k, m)``: last leaf and output component. Per (element, channel) the kernel is
    ``H[(k, m)] = sum_r K[(k, m), r] row_r`` and ``out[m] = sum_k x_k H[(k, m)]``.

    By the reflection selection rule (:func:`reflection_signatures`) ``K`` is block diagonal
    once rows and pairs are sorted by pattern class: one small GEMM per class instead of a
    dense one (~5x fewer flops for lmax 3). Rows and pairs with no non-zero coefficient in
    the basis are dropped.

    Attributes used by the kernel: ``row_index [top, R]`` (positions into ``[1, x]``; a row is
    the product of its ``top`` factors), ``pair_k``, ``pair_m`` (``[P]``), ``classes`` =
    ``[(p0, p1, r0, r1, offset)]`` (pairs ``p0:p1`` x rows ``r0:r1``, flat offset in ``Q``).
    """

    def __init__(self, basis: SymmetricBasis, use_signatures: bool | None = None):
        self.basis = basis
        self.irs, self.irreps_out = list(basis.irs), list(basis.irreps_out)
        self.D, self.correlation = basis.D, basis.correlation
        self.top = self.correlation - 1  # highest row degree
        self.out_slices = irreps_slices(self.irreps_out)
        self.M = sum(ir.dim for ir in self.irreps_out)
        if use_signatures is None:  # below correlation 3 the blocks are a few rows: one GEMM
            use_signatures = self.correlation >= 3  # is faster than eight tiny ones (measured)
        sig = reflection_signatures(self.irs) if use_signatures else None
        sig_out = reflection_signatures(self.irreps_out) if sig is not None else None
        if sig is None or sig_out is None:
            sig, sig_out = [0] * self.D, [0] * self.M

        # every non-zero (pair, row) entry of the basis
        used = set()
        for g in basis.groups:
            if not g.paths:  # no path of this order reaches the output
                continue
            nz = g.coefficients.abs().amax(0) > 0  # [m, monomial]
            mons = monomials(self.D, g.nu)
            off = self.out_slices[g.i_out].start
            for m, j in nz.nonzero().tolist():
                s = mons[j]
                used.add(((s[-1], off + m), s[:-1]))
        rows = sorted({r for _, r in used}, key=lambda t: (len(t), t[::-1]))
        pairs = sorted({p for p, _ in used})

        def row_sig(t):
            v = 0
            for i in t:
                v ^= sig[i]
            return v

        def pair_sig(p):
            return sig[p[0]] ^ sig_out[p[1]]

        for p, r in used:  # the selection rule (a failure here is a bug in the basis)
            assert pair_sig(p) == row_sig(r), (p, r)
        cls = sorted({pair_sig(p) for p in pairs})
        self.rows = [r for c in cls for r in rows if row_sig(r) == c]
        self.pairs = [p for c in cls for p in pairs if pair_sig(p) == c]
        self.classes, p0, r0, off = [], 0, 0, 0
        for c in cls:
            n_p = sum(pair_sig(p) == c for p in pairs)
            n_r = sum(row_sig(r) == c for r in rows)
            self.classes.append((p0, p0 + n_p, r0, r0 + n_r, off))
            p0, r0, off = p0 + n_p, r0 + n_r, off + n_p * n_r
        self.Q = off
        self.pair_k = [k for k, _ in self.pairs]
        self.pair_m = [m for _, m in self.pairs]
        width = max(self.top, 1)  # correlation 1: one factor, the constant
        self.row_index = [
            [(r[t] + 1 if t < len(r) else 0) for r in self.rows] for t in range(width)
        ]
        # rows are exactly [1, x] in order (correlation 2, one class): no gather needed
        self.rows_identity = self.rows == [()] + [(i,) for i in range(self.D)]
        self._row_pos = {r: i for i, r in enumerate(self.rows)}
        self._pair_pos = {p: i for i, p in enumerate(self.pairs)}
        self._class_of_pair = [c for c, (a, b, *_) in enumerate(self.classes) for _ in range(a, b)]

    def dense_flops(self) -> tuple[int, int]:
        """Multiply-adds per (node, channel): this block-diagonal kernel vs one dense GEMM."""
        bd = sum((p1 - p0) * (r1 - r0) for p0, p1, r0, r1, _ in self.classes)
        return bd, len(self.pairs) * len(self.rows)

    def fold(self, dtype=torch.float64) -> torch.Tensor:
        """``U [P_total, Q]``: kernel per (element, channel) = ``sum_p w_p U[p]``."""
        with single_thread():
            return self._fold(dtype)

    def _fold(self, dtype) -> torch.Tensor:
        basis = self.basis
        U = torch.zeros(basis.num_paths, self.Q, dtype=torch.float64)
        p0 = 0
        for g in basis.groups:
            mons = monomials(self.D, g.nu)
            m_off = self.out_slices[g.i_out].start
            P = len(g.paths)
            if P == 0:
                continue
            for j, s in enumerate(mons):
                coef = g.coefficients[:, :, j]  # [P, m]
                if not coef.any():
                    continue
                r = self._row_pos[s[:-1]]
                for m in range(g.ir_out.dim):
                    pair = (s[-1], m_off + m)
                    if pair not in self._pair_pos:
                        continue  # all-zero column
                    i = self._pair_pos[pair]
                    q0, q1, r0, r1, off = self.classes[self._class_of_pair[i]]
                    U[p0 : p0 + P, off + (i - q0) * (r1 - r0) + (r - r0)] += coef[:, m]
            p0 += P
        return U.to(dtype)
