"""FusionProduct: a fast, parsimonious drop-in for mace-torch's ``EquivariantProductBasisBlock``.

For node n with element e and channel c, the product basis is

    B[n, c] = sum_{nu=1..correlation} sum_{paths p of order nu} W[e, p, c] * path_p(A[n, c])

(chain fusion trees over nu copies of the same A, :mod:`fusion.diagrams.symmetric`), followed by
an e3nn ``Linear`` and the skip connection ``sc`` exactly like mace's block.

Fast kernel (CPU and GPU, see docs/fusion-product.md for the measurements):

* every path is a homogeneous polynomial in ``x = A[n, c]``; a degree-nu monomial is
  ``x_k * row`` with ``k`` its largest index (the last leaf) and ``row`` a monomial of degree
  nu-1 whose indices are all ``<= k`` - i.e. products ``A_i A_j`` only for ``i <= j``, as the
  leaves are the same tensor;
* the path weights and all CG tensors are folded, per (element, channel), into one kernel
  ``K[e, c]`` (``U [P, Q]`` precomputed, ``K = W @ U``: cheap, ``E*C*P*Q`` flops);
* nodes are grouped by element, so each group is a batched GEMM over channels
  ``H = K[e, c] @ rows(A)`` (one per last-leaf irrep block, over a row prefix), and
  ``out[m] = sum_k A_k H[k, m]``;
* channels and nodes are processed in cache-sized chunks on CPU;
* a hand-written backward (``torch.autograd.Function``): autograd of the gathers and
  in-place row construction would be slow and memory-hungry. Double backward (forces in
  training) falls back to autograd of the same algorithm written with differentiable ops.
"""

from __future__ import annotations

import fusion._mace_first  # noqa: F401  (mace before e3nn)

# isort: split

import contextlib
import contextvars
import warnings
from functools import lru_cache

import torch
from e3nn import o3
from e3nn.util.jit import compile_mode
from torch import nn

from fusion.diagrams.symmetric import KernelLayout, SymmetricBasis, coupling_irreps

__all__ = ["FusionProduct", "fold_kernel", "kernel_plan", "second_order_pass",
           "symmetric_product"]


# --------------------------------------------------------------------------------------
# Kernel
# --------------------------------------------------------------------------------------
def kernel_plan(layout: KernelLayout) -> dict:
    """Plain-int description of the layout (TorchScript-friendly) plus its index tensors."""
    return {
        "M": layout.M,
        "classes": [list(c) for c in layout.classes],  # [p0, p1, r0, r1, offset]
        "row_index": torch.tensor(layout.row_index, dtype=torch.long),  # [top, R] into [1, x]
        "pair_kx": torch.tensor(layout.pair_k, dtype=torch.long) + 1,  # [P] into [1, x]
        "pair_m": torch.tensor(layout.pair_m, dtype=torch.long),  # [P]
        "rows_identity": layout.rows_identity,  # rows == [1, x]: skip the gather
    }


def fold_kernel(W: torch.Tensor, U: torch.Tensor, classes: list[list[int]]) -> list[torch.Tensor]:
    """Path weights ``W [E, P_paths, C]`` -> per-class kernels ``K [E, C, P_cls, R_cls]``."""
    E, _, C = W.shape
    Wt = W.transpose(1, 2)  # [E, C, P_paths]
    Ks: list[torch.Tensor] = []
    for cl in classes:
        p0, p1, r0, r1, off = cl[0], cl[1], cl[2], cl[3], cl[4]
        n = (p1 - p0) * (r1 - r0)
        Ks.append(torch.matmul(Wt, U[:, off : off + n]).view(E, C, p1 - p0, r1 - r0))
    return Ks


def _rows(ae: torch.Tensor, plan: dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``ae = [1, x] [c, 1+D, n]`` -> rows ``[c, R, n]`` and their factors (each ``[c, R, n]``;
    a row is the product of its factors, gathered from ``ae``)."""
    if plan["rows_identity"]:
        return ae, [ae]
    ri = plan["row_index"]
    f = [ae.index_select(1, ri[t]) for t in range(ri.shape[0])]
    rows = f[0] if len(f) == 1 else torch.mul(f[0], f[1])
    for t in range(2, len(f)):
        rows.mul_(f[t])
    return rows, f


def _segments(counts: list[int], node_chunk: int) -> list[list[int]]:
    """[element, n0, n1] node ranges, grouped by element, at most ``node_chunk`` long."""
    segs: list[list[int]] = []
    n0 = 0
    for e, cnt in enumerate(counts):
        s = n0
        while s < n0 + cnt:
            t = min(s + node_chunk, n0 + cnt)
            segs.append([e, s, t])
            s = t
        n0 += cnt
    return segs


def _chunks(C: int, channel_chunk: int) -> list[list[int]]:
    return [[c0, min(c0 + channel_chunk, C)] for c0 in range(0, C, channel_chunk)]


def _forward_tile(Ae, Ks, plan, e: int, n0: int, n1: int, c0: int, c1: int, out):
    """One tile: ``out[c0:c1, :, n0:n1] += ...``; returns H ``[c, P, n]``.

    Rows = products of gathered factors; one batched GEMM per reflection class
    (``K_cls [c, P_cls, R_cls] @ rows[cls] [c, R_cls, n]``, fresh contiguous outputs:
    ``bmm(out=<strided view>)`` silently falls back to one GEMM per channel);
    ``out[m] += x_k H[(k, m)]`` with one index_add.
    """
    ae = Ae[c0:c1, :, n0:n1]  # [c, 1+D, n]
    rows, _ = _rows(ae, plan)  # [c, R, n]
    hs = [
        torch.bmm(K[e, c0:c1], rows[:, r0:r1]) for K, (_, _, r0, r1, _) in zip(Ks, plan["classes"])
    ]
    h = torch.cat(hs, dim=1) if len(hs) > 1 else hs[0]  # [c, P, n]
    out[c0:c1, :, n0:n1].index_add_(1, plan["pair_m"], h * ae.index_select(1, plan["pair_kx"]))
    return h


def _backward_tile(G, Ae, Ks, h, plan, e, n0, n1, c0, c1, gAe, gKs, need_a, need_k):
    """Gradients of one tile into ``gAe[c0:c1, :, n0:n1]`` and ``gKs[b][e, c0:c1]``."""
    pkx = plan["pair_kx"]
    ae = Ae[c0:c1, :, n0:n1]  # [c, 1+D, n]
    gm = G[c0:c1, :, n0:n1].index_select(1, plan["pair_m"])  # dL/dout[m] per pair  [c, P, n]
    dh = gm * ae.index_select(1, pkx)  # dL/dH  [c, P, n]
    rows, f = _rows(ae, plan)
    grows = []
    for b, (p0, p1, r0, r1, _) in enumerate(plan["classes"]):
        if need_k:  # dK += dH rows^T  [c, P_cls, R_cls]
            gKs[b][e, c0:c1].baddbmm_(dh[:, p0:p1], rows[:, r0:r1].transpose(1, 2))
        if need_a:  # d rows = K^T dH  [c, R_cls, n]
            grows.append(torch.bmm(Ks[b][e, c0:c1].transpose(1, 2), dh[:, p0:p1]))
    if not need_a:
        return
    gae = gAe[c0:c1, :, n0:n1]
    if h is None:  # H was not kept: recompute (one GEMM per class more)
        hs = [
            torch.bmm(K[e, c0:c1], rows[:, r0:r1])
            for K, (_, _, r0, r1, _) in zip(Ks, plan["classes"])
        ]
        h = torch.cat(hs, dim=1) if len(hs) > 1 else hs[0]
    gae.index_add_(1, pkx, h * gm)  # direct term of out[m] = sum_k x_k H[(k, m)]
    gr = torch.cat(grows, dim=1) if len(grows) > 1 else grows[0]  # [c, R, n]
    if plan["rows_identity"]:  # rows are ae itself
        gae.add_(gr)
        return
    ri = plan["row_index"]
    for t in range(len(f)):  # rows = prod_t f_t
        other = None
        for u in range(len(f)):
            if u != t:
                other = f[u] if other is None else other * f[u]
        gae.index_add_(1, ri[t], gr if other is None else gr * other)


# Intra-op threads while CPU tiles run (0: torch's setting, the default). Tiles are small ops:
# with OpenMP threads inside every op, one core busy with another process stalls every op's
# barrier - on this shared 2-core machine 2 threads were 2-7x slower than 1 (1 here halved it;
# the rest is the module's other small ops). A pool of Python threads over tiles was no
# better (GIL hand-offs under load). On a shared machine prefer torch.set_num_threads(1).
CPU_TILE_THREADS = 0


def _run_tiles(fn, n_segs: int, n_chunks: int, on_cpu: bool) -> dict:
    """Run ``fn(seg_index, chunk_index)`` over all tiles; returns ``{(s, c): result}``."""
    n_threads = torch.get_num_threads()
    single = on_cpu and CPU_TILE_THREADS > 0 and n_threads != CPU_TILE_THREADS
    if single:
        torch.set_num_threads(CPU_TILE_THREADS)
    try:
        return {(i, j): fn(i, j) for j in range(n_chunks) for i in range(n_segs)}
    finally:
        if single:
            torch.set_num_threads(n_threads)


def _forward_fast(Ae, Ks, segs, plan, channel_chunk: int, save_h: bool):
    """``Ae = [1, A] [C, 1+D, N]`` (nodes grouped by element) -> ``out [C, M, N]``, H tiles."""
    C, _, N = Ae.shape
    out = Ae.new_zeros(C, plan["M"], N)
    chunks = _chunks(C, channel_chunk)

    def tile(i, j):
        (e, n0, n1), (c0, c1) = segs[i], chunks[j]
        h = _forward_tile(Ae, Ks, plan, e, n0, n1, c0, c1, out)
        return h if save_h else None

    return out, _run_tiles(tile, len(segs), len(chunks), not Ae.is_cuda)


def _backward_fast(G, Ae, Ks, hs, segs, plan, channel_chunk, need_a, need_k):
    """Gradients of :func:`_forward_fast` w.r.t. ``Ae`` and the class kernels (no graph)."""
    C = Ae.shape[0]
    gAe = torch.zeros_like(Ae) if need_a else None
    gKs = [torch.zeros_like(K) for K in Ks] if need_k else None
    chunks = _chunks(C, channel_chunk)

    def tile(i, j):
        (e, n0, n1), (c0, c1) = segs[i], chunks[j]
        h = hs.get((i, j)) if hs else None
        _backward_tile(G, Ae, Ks, h, plan, e, n0, n1, c0, c1, gAe, gKs, need_a, need_k)

    _run_tiles(tile, len(segs), len(chunks), not Ae.is_cuda)
    return gAe, gKs


def _forward_autograd(
    Ae: torch.Tensor,
    Ks: list[torch.Tensor],
    segs: list[list[int]],
    classes: list[list[int]],
    row_index: torch.Tensor,
    pair_kx: torch.Tensor,
    pair_m: torch.Tensor,
    M: int,
) -> torch.Tensor:
    """The same algorithm with differentiable ops (TorchScript, double backward, reference)."""
    C = Ae.shape[0]
    outs: list[torch.Tensor] = []
    for seg in segs:
        e, n0, n1 = seg[0], seg[1], seg[2]
        ae = Ae[:, :, n0:n1]
        rows = ae.index_select(1, row_index[0])  # (a copy of ae when rows are [1, x])
        for t in range(1, row_index.shape[0]):
            rows = rows * ae.index_select(1, row_index[t])
        hs: list[torch.Tensor] = []
        for b, cl in enumerate(classes):
            hs.append(torch.bmm(Ks[b][e], rows[:, cl[2] : cl[3]]))
        h = torch.cat(hs, dim=1)
        prod = h * ae.index_select(1, pair_kx)
        outs.append(
            torch.zeros(C, M, n1 - n0, dtype=Ae.dtype, device=Ae.device).index_add(1, pair_m, prod)
        )
    return torch.cat(outs, dim=2)


class _SymmetricProductFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, Ae, segs, plan, channel_chunk, save_h, *Ks):
        save_h = save_h and Ae.requires_grad
        out, hs = _forward_fast(Ae, Ks, segs, plan, channel_chunk, save_h)
        ctx.save_for_backward(Ae, *Ks)
        ctx.hs = hs if save_h else None
        ctx.segs, ctx.plan, ctx.cc = segs, plan, channel_chunk
        return out

    @staticmethod
    def backward(ctx, G):
        Ae, *Ks = ctx.saved_tensors
        need_a, need_k = ctx.needs_input_grad[0], any(ctx.needs_input_grad[5:])
        plan = ctx.plan
        if torch.is_grad_enabled():
            # create_graph=True (e.g. forces in training): differentiate the same algorithm
            # written with differentiable ops, so second derivatives are exact.
            with torch.enable_grad():
                out = _forward_autograd(
                    Ae,
                    Ks,
                    ctx.segs,
                    plan["classes"],
                    plan["row_index"],
                    plan["pair_kx"],
                    plan["pair_m"],
                    plan["M"],
                )
                inputs = ([Ae] if need_a else []) + (Ks if need_k else [])
                grads = list(torch.autograd.grad(out, inputs, G, create_graph=True))
            gA = grads.pop(0) if need_a else None
            gKs = grads if need_k else [None] * len(Ks)
        else:
            gA, gKs = _backward_fast(
                G.contiguous(), Ae, Ks, ctx.hs, ctx.segs, plan, ctx.cc, need_a, need_k
            )
            gKs = gKs if need_k else [None] * len(Ks)
        ctx.hs = None
        return (gA, None, None, None, None, *gKs)


# Keep H (``[C, P, N]``) for the backward below this size, else recompute it (one GEMM more).
SAVE_H_MAX_BYTES = 1 << 28


def symmetric_product(
    A: torch.Tensor,
    Ks: list[torch.Tensor],
    counts: list[int],
    plan: dict,
    channel_chunk: int = 0,
    node_chunk: int = 0,
    fast: bool = True,
) -> torch.Tensor:
    """Folded symmetric contraction on element-grouped nodes.

    ``A [C, D, N]``: features, nodes sorted by element, ``counts[e]`` nodes of element e;
    ``Ks``: per-class kernels (:func:`fold_kernel`); returns ``[C, M, N]``.
    ``channel_chunk``/``node_chunk`` <= 0 picks the device default (CPU: tiles of about
    ``CPU_TILE_BYTES``; GPU: everything at once). ``fast=False``: plain autograd ops.
    """
    C, D, N = A.shape
    if node_chunk <= 0:
        node_chunk = N if A.is_cuda else CPU_NODE_CHUNK
    if channel_chunk <= 0 and A.is_cuda:
        channel_chunk = C
    elif channel_chunk <= 0:  # tile of ~CPU_TILE_BYTES: rows + H + dH of c channels x n nodes
        n = min(node_chunk, max(counts) if counts else 1)
        R, P = plan["row_index"].shape[1], plan["pair_m"].shape[0]
        per_channel = max(n, 1) * (R + 2 * P + D + 1) * A.element_size()
        channel_chunk = max(1, min(C, CPU_TILE_BYTES // per_channel))
    segs = _segments(counts, max(node_chunk, 1))
    Ae = torch.cat([A.new_ones(C, 1, N), A], dim=1)  # [C, 1+D, N]: row factors index [1, x]
    if not fast:
        return _forward_autograd(
            Ae,
            Ks,
            segs,
            plan["classes"],
            plan["row_index"],
            plan["pair_kx"],
            plan["pair_m"],
            plan["M"],
        )
    save_h = C * len(plan["pair_m"]) * N * A.element_size() <= SAVE_H_MAX_BYTES
    return _SymmetricProductFn.apply(Ae, segs, plan, channel_chunk, save_h, *Ks)


# CPU tiling (docs/fusion-product.md): nodes per range, bytes of working set per channel chunk
# (8 channels x 333 nodes at lmax 3, correlation 3, float32 was the measured optimum).
CPU_NODE_CHUNK = 512
CPU_TILE_BYTES = 3 << 20


_SECOND_ORDER = contextvars.ContextVar("fusion_product_second_order", default=False)


@contextlib.contextmanager
def second_order_pass(enabled: bool = True):
    """Within: FusionProduct evaluates with differentiable ops from the start.

    Training on forces differentiates the product twice (forces with ``create_graph``, then
    the parameter gradients). The fast kernel's backward then re-runs the product with
    differentiable ops anyway, so running those ops in the forward saves the fast forward
    and the re-run (about a quarter of the product's time in a training step on forces).
    The models enter this when they compute forces in training mode; the numbers are the
    same either way (tested)."""
    token = _SECOND_ORDER.set(bool(enabled))
    try:
        yield
    finally:
        _SECOND_ORDER.reset(token)


# --------------------------------------------------------------------------------------
# Module
# --------------------------------------------------------------------------------------
@lru_cache(maxsize=32)
def _cached_basis(
    irs: str, outs: str, correlation: int, basis: str, lmax_internal: int | None
) -> tuple[SymmetricBasis, KernelLayout, torch.Tensor]:
    """Set-up shared by every layer with the same irreps (a MACE builds one per layer)."""
    sb = SymmetricBasis(irs, outs, correlation, basis=basis, lmax_internal=lmax_internal)
    layout = KernelLayout(sb)
    return sb, layout, layout.fold()


@compile_mode("script")
class FusionProduct(nn.Module):
    """Drop-in for mace-torch's ``EquivariantProductBasisBlock`` built on symmetric fusion trees.

    ``forward(node_feats [N, C, D], sc [N, irreps_out.dim] | None, node_attrs [N, E])`` ->
    ``[N, irreps_out.dim]``, like mace: ``D`` = dimension of one copy of the coupling irreps
    (``(lmax+1)^2`` for ``0e+1o+2e+3o``); node_attrs one-hot over elements (argmax is used,
    as mace's cuequivariance path does).

    Args:
        node_feats_irreps: ``C x (ir_1 + ... + ir_K)``, e.g. ``64x0e+64x1o+64x2e+64x3o``.
        target_irreps: ``C x (out irreps)``, e.g. ``64x0e+64x1o``.
        correlation: highest order nu; orders 1..nu are summed.
        use_sc: add ``sc`` after the linear (mace's residual).
        num_elements: number of species (weights per species).
        use_agnostic_product: one weight set for all species (mace's option).
        basis: ``"independent"`` (a maximal linearly independent set of chain paths: the same
            function space as mace with about a third of the weights) or ``"full"`` (every
            chain path: mace's weights one to one).
        weights: ``"path"`` (one weight per path, channel and element) or ``"vertex"``
            (per (vertex, label triple, channel); the root vertex per element too: the path
            weight is the product along the tree).
        lmax_internal: cap on internal edge labels (None: no cap, as mace).
        channel_chunk, node_chunk: kernel tiling (<= 0: device default).
        fast: use the hand-written kernel (False: same algorithm with autograd ops).
    """

    def __init__(
        self,
        node_feats_irreps: o3.Irreps | str,
        target_irreps: o3.Irreps | str,
        correlation: int,
        use_sc: bool = True,
        num_elements: int | None = None,
        use_agnostic_product: bool = False,
        basis: str = "independent",
        weights: str = "path",
        lmax_internal: int | None = None,
        channel_chunk: int = 0,
        node_chunk: int = 0,
        fast: bool = True,
    ) -> None:
        super().__init__()
        if weights not in ("path", "vertex"):
            raise ValueError(f"weights must be 'path' or 'vertex', got {weights!r}")
        self.irreps_in = o3.Irreps(node_feats_irreps)
        self.irreps_out = o3.Irreps(target_irreps)
        irs, C = coupling_irreps(self.irreps_in)
        outs, C_out = coupling_irreps(self.irreps_out)
        if C_out != C:
            raise ValueError(
                f"target_irreps {self.irreps_out} must have the channel count {C} of "
                f"node_feats_irreps {self.irreps_in} for every irrep"
            )
        self.num_channels = C
        if num_elements is not None and int(num_elements) < 1:
            raise ValueError(f"num_elements must be >= 1, got {num_elements!r}")
        self.correlation = int(correlation)
        self._in_dim = sum(ir.dim for ir in irs)  # D of node_feats [N, C, D]
        self.use_sc = use_sc
        self.use_agnostic_product = use_agnostic_product
        self.num_elements = 1 if use_agnostic_product else int(num_elements or 1)
        self.basis_kind, self.weights_kind = basis, weights
        self.channel_chunk, self.node_chunk, self.fast = channel_chunk, node_chunk, fast

        irs_s = "+".join(str(ir) for ir in irs)
        outs_s = "+".join(str(ir) for ir in outs)
        sb, layout, U = _cached_basis(irs_s, outs_s, self.correlation, basis, lmax_internal)
        self.symmetric_basis, self.layout = sb, layout
        # outputs no symmetric product reaches: zero (as mace's), no weights; said once here
        self.unreachable_outputs = [str(ir) for ir in sb.unreachable]
        if sb.unreachable:
            warnings.warn(f"FusionProduct: {sb.unreachable_message}", stacklevel=2)
        plan = kernel_plan(layout)
        self._classes: list[list[int]] = plan["classes"]
        self._rows_identity: bool = plan["rows_identity"]
        self._M: int = layout.M
        self._out_dims: list[int] = [ir.dim for ir in outs]
        for name in ("row_index", "pair_kx", "pair_m"):
            self.register_buffer(name, plan[name], persistent=False)
        dtype = torch.get_default_dtype()
        # [P, Q]: blocks [P, d_b*M*R_b] side by side. Derived data (not in the state dict);
        # re-cast from the exact float64 copy on every .to()/.double() (see _apply).
        self._fold64 = U
        self.register_buffer("fold", U.to(dtype), persistent=False)
        # kernel output row (c * M + m) of each column of mace's layout (irrep, c, m)
        out_rows = [
            c * layout.M + sl.start + m
            for sl in layout.out_slices
            for c in range(C)
            for m in range(sl.stop - sl.start)
        ]
        self.register_buffer("out_rows", torch.tensor(out_rows), persistent=False)

        E, P = self.num_elements, sb.num_paths
        # (start, stop) of each (output irrep, nu) group in the path axis
        self.group_slices: list[tuple[int, int]] = []
        p0 = 0
        for g in sb.groups:
            self.group_slices.append((p0, p0 + len(g.paths)))
            p0 += len(g.paths)
        if weights == "path":
            w = torch.randn(E, P, C)
            for p0, p1 in self.group_slices:
                w[:, p0:p1] /= max(p1 - p0, 1)  # mace's init: randn / num_params
            self.weight = nn.Parameter(w)  # [E, P, C]
            # TorchScript compiles both branches of path_weights: keep the names, empty
            for name in ("vertex_root", "vertex_inner", "vertex_root_index", "vertex_inner_index"):
                self.register_buffer(name, torch.zeros(0, dtype=torch.long), persistent=False)
        else:
            self.register_buffer("weight", torch.zeros(0), persistent=False)
            self._init_vertex_weights(sb, E, C)

        self.linear = o3.Linear(
            self.irreps_out, self.irreps_out, internal_weights=True, shared_weights=True
        )

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        # float32 -> float64 must not keep float32 rounding of the CG coefficients
        self.fold = self._fold64.to(device=self.fold.device, dtype=self.fold.dtype)
        return self

    # ---- weights ---------------------------------------------------------------------
    def _init_vertex_weights(self, sb: SymmetricBasis, E: int, C: int) -> None:
        """Tables of per-vertex weights; a path's weight is the product along its tree."""
        inner: dict = {}  # (nu, depth, triple) -> row, shared by elements and outputs
        root: dict = {}  # (nu, triple) -> row, per element
        idx_root, idx_inner = [], []
        depth_max = max(self.correlation - 2, 1)
        for g in sb.groups:
            for p in g.paths:
                trip = p.vertices(sb.irs)
                key_root = (p.nu, trip[-1] if trip else (p.ir_out,))
                idx_root.append(root.setdefault(key_root, len(root)))
                rows = [inner.setdefault((p.nu, d, t), len(inner)) for d, t in enumerate(trip[:-1])]
                idx_inner.append(rows + [-1] * (depth_max - len(rows)))  # -1: constant one
        n_inner = len(inner)
        idx = torch.tensor(idx_inner, dtype=torch.long)
        self.register_buffer("vertex_inner_index", torch.where(idx < 0, n_inner, idx))
        self.register_buffer("vertex_root_index", torch.tensor(idx_root, dtype=torch.long))
        counts = torch.bincount(self.vertex_root_index, minlength=len(root)).clamp_min(1)
        self.vertex_root = nn.Parameter(torch.randn(E, len(root), C))  # [E, T_root, C]
        self.vertex_inner = nn.Parameter(torch.randn(n_inner, C))  # [T_inner, C]
        with torch.no_grad():  # scale like mace: ~1 / (number of paths sharing the root)
            self.vertex_root /= counts.to(self.vertex_root.dtype)[None, :, None]
        self.vertex_triples = {"root": root, "inner": inner}

    def path_weights(self) -> torch.Tensor:
        """Weight of every basis path, ``[E, P, C]``."""
        if self.weights_kind == "path":
            return self.weight
        ones = self.vertex_inner.new_ones(1, self.vertex_root.shape[-1])  # "no inner vertex"
        inner = torch.cat([self.vertex_inner, ones], dim=0)[self.vertex_inner_index]  # [P, d, C]
        return self.vertex_root[:, self.vertex_root_index] * inner.prod(1)[None]

    # ---- forward -----------------------------------------------------------------------
    @torch.jit.unused
    def _plan(self) -> dict:
        return {
            "M": self._M,
            "classes": self._classes,
            "row_index": self.row_index,
            "pair_kx": self.pair_kx,
            "pair_m": self.pair_m,
            "rows_identity": self._rows_identity,
        }

    @torch.jit.unused
    def _contract_fast(
        self, A: torch.Tensor, Ks: list[torch.Tensor], counts: list[int]
    ) -> torch.Tensor:
        # inside second_order_pass: the differentiable-ops kernel from the start
        return symmetric_product(
            A, Ks, counts, self._plan(), self.channel_chunk, self.node_chunk,
            fast=not _SECOND_ORDER.get(),
        )

    def forward(
        self,
        node_feats: torch.Tensor,
        sc: torch.Tensor | None,
        node_attrs: torch.Tensor,
    ) -> torch.Tensor:
        out = self.linear(self.product_basis(node_feats, node_attrs))
        if self.use_sc and sc is not None:
            return out + sc
        return out

    @torch.jit.unused
    def _check_inputs(self, node_feats: torch.Tensor, node_attrs: torch.Tensor) -> None:
        want = (self.num_channels, self._in_dim)
        if node_feats.dim() != 3 or tuple(node_feats.shape[1:]) != want:
            raise ValueError(
                f"node_feats must have shape [N, {want[0]}, {want[1]}] for irreps "
                f"{self.irreps_in}, got {list(node_feats.shape)}"
            )
        if not self.use_agnostic_product and (
            node_attrs.dim() != 2
            or node_attrs.shape[0] != node_feats.shape[0]
            or node_attrs.shape[1] != self.num_elements
        ):
            raise ValueError(
                f"node_attrs must be a one-hot of shape [N={node_feats.shape[0]}, "
                f"{self.num_elements} elements], got {list(node_attrs.shape)}"
            )

    def product_basis(self, node_feats: torch.Tensor, node_attrs: torch.Tensor) -> torch.Tensor:
        """``[N, C, D]`` -> ``[N, irreps_out.dim]`` before the linear (mace's
        ``SymmetricContraction`` output, same layout)."""
        if not torch.jit.is_scripting():
            self._check_inputs(node_feats, node_attrs)
        N, C = node_feats.shape[0], node_feats.shape[1]
        E, M = self.num_elements, self._M
        if self.use_agnostic_product:
            elem = torch.zeros(N, dtype=torch.long, device=node_feats.device)
        else:
            elem = node_attrs.argmax(dim=-1)
        # group nodes by element: one GEMM per (element, block)
        perm = torch.argsort(elem, stable=True)
        counts: list[int] = torch.bincount(elem, minlength=E).tolist()
        # row gather + one 2-D transpose (a 3-D permute-copy was 5x slower)
        D = node_feats.shape[2]
        A = node_feats.reshape(N, C * D).index_select(0, perm).t().contiguous().view(C, D, N)
        W = self.path_weights()  # [E, P, C]
        Ks = fold_kernel(W, self.fold, self._classes)  # [E, C, P_cls, R_cls] per class
        if N == 0 or len(self._classes) == 0:  # no nodes, or every output unreachable
            out = node_feats.new_zeros(C, M, N)
        elif self.fast and not torch.jit.is_scripting():
            out = self._contract_fast(A, Ks, counts)
        else:
            chunk = self.node_chunk if self.node_chunk > 0 else N
            Ae = torch.cat([A.new_ones(C, 1, N), A], dim=1)  # [C, 1+D, N]
            out = _forward_autograd(
                Ae,
                Ks,
                _segments(counts, chunk),
                self._classes,
                self.row_index,
                self.pair_kx,
                self.pair_m,
                M,
            )
        # [C, M, N] (element order) -> [N, C, M] (input order) -> mace layout [N, sum C*(2l+1)]
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(N, device=perm.device)
        rows = out.reshape(C * M, N)
        if len(self._out_dims) > 1:  # (c, m) rows -> mace's order (irrep, c, m)
            rows = rows.index_select(0, self.out_rows)
        return rows.t().contiguous().index_select(0, inv)  # [N, C*M]

    def extra_repr(self) -> str:
        return (
            f"{self.irreps_in} -> {self.irreps_out}, correlation={self.correlation}, "
            f"basis={self.basis_kind}, weights={self.weights_kind}, "
            f"paths={self.symmetric_basis.num_paths}, elements={self.num_elements}"
        )
