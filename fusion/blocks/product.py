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

from functools import lru_cache

import torch
from e3nn import o3
from e3nn.util.jit import compile_mode
from torch import nn

from fusion.diagrams.symmetric import (
    KernelLayout,
    SymmetricBasis,
    coupling_irreps,
    n_monomials,
)

__all__ = ["FusionProduct", "fold_kernel", "split_fold", "symmetric_product"]


# --------------------------------------------------------------------------------------
# Kernel plan: the plain-int description of the layout the kernel loops over
# --------------------------------------------------------------------------------------
def _plan(layout: KernelLayout) -> dict:
    """Python ints only (TorchScript-friendly lists)."""
    D, top = layout.D, layout.top
    # Degree-d rows (d >= 2) with largest index m: x_m * rows[prev_off : prev_off + cnt].
    grow_deg: list[list[list[int]]] = []  # per degree: [dst, src, cnt, m]
    for d in range(2, top + 1):
        dst, entries = layout.row_offset[d], []
        for m in range(D):
            cnt = n_monomials(m + 1, d - 1)
            entries.append([dst, layout.row_offset[d - 1], cnt, m])
            dst += cnt
        grow_deg.append(entries)
    grow = [g for entries in grow_deg for g in entries]
    blocks = [[s, e, R, off] for (s, e), R, off in zip(layout.blocks, layout.R, layout.offsets)]
    return {
        "D": D,
        "M": layout.M,
        "n_rows": layout.n_rows,
        "grow": grow,
        "grow_deg": grow_deg,
        "blocks": blocks,
    }


def split_fold(U: torch.Tensor, plan: dict) -> list[torch.Tensor]:
    """``U [P, Q]`` (:meth:`KernelLayout.fold`) -> per-block ``U_b [P, d_b*M*R_b]``."""
    return [
        U[:, off : off + (t - s) * plan["M"] * R].contiguous() for s, t, R, off in plan["blocks"]
    ]


def fold_kernel(W: torch.Tensor, Us: list[torch.Tensor], plan: dict) -> list[torch.Tensor]:
    """Path weights ``W [E, P, C]`` -> kernel blocks ``K_b [E, C, d_b*M, R_b]`` (contiguous)."""
    E, _, C = W.shape
    Wt = W.transpose(1, 2)  # [E, C, P]
    return [
        torch.matmul(Wt, Ub).view(E, C, (blk[1] - blk[0]) * plan["M"], blk[2])
        for Ub, blk in zip(Us, plan["blocks"])
    ]


def _rows_inplace(a: torch.Tensor, plan: dict) -> torch.Tensor:
    """``a [c, D, n]`` -> rows ``[c, n_rows, n]`` = [1 | a | degree-2 | ...] (no autograd)."""
    c, D, n = a.shape
    buf = a.new_empty(c, plan["n_rows"], n)
    buf[:, 0].fill_(1.0)
    if plan["n_rows"] > 1:  # correlation 1 needs the constant row only
        buf[:, 1 : 1 + D].copy_(a)
    for dst, src, cnt, m in plan["grow"]:
        torch.mul(buf[:, src : src + cnt], a[:, m : m + 1], out=buf[:, dst : dst + cnt])
    return buf


def _rows_autograd(a: torch.Tensor, grow_deg: list[list[list[int]]]) -> torch.Tensor:
    """Same as :func:`_rows_inplace` with differentiable ops (TorchScript, double backward)."""
    rows = torch.cat([torch.ones_like(a[:, :1]), a], dim=1)
    for entries in grow_deg:  # one degree at a time: its rows only use lower degrees
        pieces = [rows]
        for g in entries:
            src, cnt, m = g[1], g[2], g[3]
            pieces.append(rows[:, src : src + cnt] * a[:, m : m + 1])
        rows = torch.cat(pieces, dim=1)
    return rows


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


def _forward_fast(A, Ks, segs, plan, channel_chunk: int, save_h: bool):
    """``A [C, D, N]`` (nodes grouped by element), ``Ks[b] [E, C, d_b*M, R_b]`` -> ``[C, M, N]``.

    Every GEMM writes a fresh contiguous tensor: ``bmm(out=<strided view>)`` silently falls
    back to one small GEMM per channel (measured: 2x slower).
    """
    C, D, N = A.shape
    M = plan["M"]
    out = A.new_empty(C, M, N)
    hs = []  # per (segment, chunk, block): H_b, kept for the backward's direct term
    for e, n0, n1 in segs:
        n = n1 - n0
        for c0 in range(0, C, channel_chunk):
            c1 = min(c0 + channel_chunk, C)
            a = A[c0:c1, :, n0:n1]  # [c, D, n]
            rows = _rows_inplace(a, plan)  # [c, n_rows, n]
            o = out[c0:c1, :, n0:n1]  # [c, M, n]
            for b, (s, t, R, _) in enumerate(plan["blocks"]):
                h = torch.bmm(Ks[b][e, c0:c1], rows[:, :R])  # [c, d_b*M, n]
                # out[m] = sum_k A_k H[k, m]
                part = (h.view(c1 - c0, t - s, M, n) * a[:, s:t].unsqueeze(2)).sum(1)
                if b == 0:
                    o.copy_(part)
                else:
                    o.add_(part)
                if save_h:
                    hs.append(h)
    return out, hs


def _backward_fast(G, A, Ks, hs, segs, plan, channel_chunk: int, need_a: bool, need_k: bool):
    """Gradients of :func:`_forward_fast` w.r.t. A and the kernel blocks (no autograd graph)."""
    C, D, N = A.shape
    M = plan["M"]
    gA = torch.empty_like(A) if need_a else None
    gKs = [torch.zeros_like(K) for K in Ks] if need_k else None
    i = 0
    for e, n0, n1 in segs:
        n = n1 - n0
        for c0 in range(0, C, channel_chunk):
            c1 = min(c0 + channel_chunk, C)
            c = c1 - c0
            a = A[c0:c1, :, n0:n1]  # [c, D, n]
            g = G[c0:c1, :, n0:n1]  # [c, M, n]
            rows = _rows_inplace(a, plan)  # [c, n_rows, n]
            grows = a.new_zeros(c, plan["n_rows"], n) if need_a else None
            ga = a.new_empty(c, D, n) if need_a else None
            for b, (s, t, R, _) in enumerate(plan["blocks"]):
                # dL/dH_b[k, m] = A_k g_m  [c, d_b*M, n]
                dh = (a[:, s:t].unsqueeze(2) * g.unsqueeze(1)).view(c, (t - s) * M, n)
                if need_k:  # dK_b += dH_b rows_b^T  [c, d_b*M, R]
                    gKs[b][e, c0:c1].baddbmm_(dh, rows[:, :R].transpose(1, 2))
                if need_a:
                    # rows_b gets K_b^T dH_b  [c, R, n]
                    grows[:, :R] += torch.bmm(Ks[b][e, c0:c1].transpose(1, 2), dh)
                    # direct term: dL/dA_k = sum_m H_b[k, m] g_m (H_b recomputed if not kept)
                    h = hs[i + b] if hs else torch.bmm(Ks[b][e, c0:c1], rows[:, :R])
                    torch.sum(h.view(c, t - s, M, n) * g.unsqueeze(1), dim=2, out=ga[:, s:t])
            i += len(plan["blocks"])
            if not need_a:
                continue
            # back through the row construction, top degree first
            for dst, src, cnt, m in reversed(plan["grow"]):
                gr = grows[:, dst : dst + cnt]  # [c, cnt, n]
                grows[:, src : src + cnt].addcmul_(gr, a[:, m : m + 1])
                ga[:, m] += (gr * rows[:, src : src + cnt]).sum(1)
            if plan["n_rows"] > 1:
                ga += grows[:, 1 : 1 + D]
            gA[c0:c1, :, n0:n1] = ga
    return gA, gKs


def _forward_autograd(
    A: torch.Tensor,
    Ks: list[torch.Tensor],
    segs: list[list[int]],
    plan_blocks: list[list[int]],
    grow_deg: list[list[list[int]]],
    M: int,
) -> torch.Tensor:
    """Reference algorithm with differentiable ops (TorchScript, double backward)."""
    C, D, N = A.shape
    outs: list[torch.Tensor] = []
    for seg in segs:
        e, n0, n1 = seg[0], seg[1], seg[2]
        a = A[:, :, n0:n1]
        rows = _rows_autograd(a, grow_deg)
        o = torch.zeros_like(a[:, :M])
        for b, blk in enumerate(plan_blocks):
            s, t, R = blk[0], blk[1], blk[2]
            h = torch.bmm(Ks[b][e], rows[:, :R])  # [C, d_b*M, n]
            o = o + (h.view(C, t - s, M, n1 - n0) * a[:, s:t].unsqueeze(2)).sum(1)
        outs.append(o)
    return torch.cat(outs, dim=2)


class _SymmetricProductFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, A, segs, plan, channel_chunk, save_h, *Ks):
        out, hs = _forward_fast(A, Ks, segs, plan, channel_chunk, save_h and A.requires_grad)
        ctx.save_for_backward(A, *Ks)
        ctx.hs, ctx.segs, ctx.plan, ctx.cc = hs, segs, plan, channel_chunk
        return out

    @staticmethod
    def backward(ctx, G):
        A, *Ks = ctx.saved_tensors
        need_a, need_k = ctx.needs_input_grad[0], any(ctx.needs_input_grad[5:])
        if torch.is_grad_enabled():
            # create_graph=True (e.g. forces in training): differentiate the same algorithm
            # written with differentiable ops, so second derivatives are exact.
            with torch.enable_grad():
                out = _forward_autograd(
                    A, Ks, ctx.segs, ctx.plan["blocks"], ctx.plan["grow_deg"], ctx.plan["M"]
                )
                inputs = ([A] if need_a else []) + (Ks if need_k else [])
                grads = list(torch.autograd.grad(out, inputs, G, create_graph=True))
            gA = grads.pop(0) if need_a else None
            gKs = grads if need_k else [None] * len(Ks)
        else:
            gA, gKs = _backward_fast(
                G.contiguous(), A, Ks, ctx.hs, ctx.segs, ctx.plan, ctx.cc, need_a, need_k
            )
            gKs = gKs if need_k else [None] * len(Ks)
        ctx.hs = None
        return (gA, None, None, None, None, *gKs)


# Keep H (``[C, D*M, N]``) for the backward below this size, else recompute it (one GEMM more).
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
    ``Ks[b] [E, C, d_b*M, R_b]``: folded kernel per last-leaf block (:func:`fold_kernel`);
    returns ``[C, M, N]``. ``channel_chunk``/``node_chunk`` <= 0 picks the device default
    (CPU: 16 channels x 512 nodes, a few MB of rows per GEMM; GPU: everything at once).
    ``fast=False`` runs the same algorithm with plain autograd ops (reference).
    """
    C, D, N = A.shape
    if channel_chunk <= 0:
        channel_chunk = C if A.is_cuda else 16
    if node_chunk <= 0:
        node_chunk = N if A.is_cuda else 512
    segs = _segments(counts, max(node_chunk, 1))
    if not fast:
        return _forward_autograd(A, Ks, segs, plan["blocks"], plan["grow_deg"], plan["M"])
    save_h = C * D * plan["M"] * N * A.element_size() <= SAVE_H_MAX_BYTES
    return _SymmetricProductFn.apply(A, segs, plan, channel_chunk, save_h, *Ks)


# --------------------------------------------------------------------------------------
# Module
# --------------------------------------------------------------------------------------
@lru_cache(maxsize=32)
def _cached_basis(
    irs: str, outs: str, correlation: int, basis: str, lmax_internal: int | None
) -> tuple[SymmetricBasis, KernelLayout, torch.Tensor]:
    """Set-up shared by every layer with the same irreps (a MACE builds one per layer)."""
    sb = SymmetricBasis(irs, outs, correlation, basis=basis, lmax_internal=lmax_internal)
    layout = KernelLayout(sb.irs, sb.irreps_out, correlation)
    return sb, layout, layout.fold(sb)


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
        self.correlation = int(correlation)
        self.use_sc = use_sc
        self.use_agnostic_product = use_agnostic_product
        self.num_elements = 1 if use_agnostic_product else int(num_elements or 1)
        self.basis_kind, self.weights_kind = basis, weights
        self.channel_chunk, self.node_chunk, self.fast = channel_chunk, node_chunk, fast

        irs_s = "+".join(str(ir) for ir in irs)
        outs_s = "+".join(str(ir) for ir in outs)
        sb, layout, U = _cached_basis(irs_s, outs_s, self.correlation, basis, lmax_internal)
        self.symmetric_basis, self.layout = sb, layout
        self.plan = _plan(layout)
        # TorchScript-typed copies of the plan
        self._blocks: list[list[int]] = self.plan["blocks"]
        self._grow_deg: list[list[list[int]]] = self.plan["grow_deg"]
        self._M: int = layout.M
        self._D: int = layout.D
        self._out_dims: list[int] = [ir.dim for ir in outs]
        dtype = torch.get_default_dtype()
        # [P, Q]: blocks [P, d_b*M*R_b] side by side. Derived data (not in the state dict);
        # re-cast from the exact float64 copy on every .to()/.double() (see _apply).
        self._fold64 = U
        self.register_buffer("fold", U.to(dtype), persistent=False)

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
    def _contract_fast(
        self, A: torch.Tensor, Ks: list[torch.Tensor], counts: list[int]
    ) -> torch.Tensor:
        return symmetric_product(
            A, Ks, counts, self.plan, self.channel_chunk, self.node_chunk, fast=True
        )

    def forward(
        self,
        node_feats: torch.Tensor,
        sc: torch.Tensor | None,
        node_attrs: torch.Tensor,
    ) -> torch.Tensor:
        N, C = node_feats.shape[0], node_feats.shape[1]
        E, M = self.num_elements, self._M
        if self.use_agnostic_product:
            elem = torch.zeros(N, dtype=torch.long, device=node_feats.device)
        else:
            elem = node_attrs.argmax(dim=-1)
        # group nodes by element: one GEMM per (element, block)
        perm = torch.argsort(elem, stable=True)
        counts: list[int] = torch.bincount(elem, minlength=E).tolist()
        A = node_feats.index_select(0, perm).permute(1, 2, 0).contiguous()  # [C, D, N]
        W = self.path_weights()  # [E, P, C]
        Wt = W.transpose(1, 2)  # [E, C, P]
        Ks: list[torch.Tensor] = []
        for blk in self._blocks:
            s, t, R, off = blk[0], blk[1], blk[2], blk[3]
            Ub = self.fold[:, off : off + (t - s) * M * R]  # [P, d_b*M*R_b]
            Ks.append(torch.matmul(Wt, Ub).view(E, C, (t - s) * M, R))  # [E, C, d_b*M, R_b]
        if N == 0:
            out = node_feats.new_zeros(C, M, 0)
        elif self.fast and not torch.jit.is_scripting():
            out = self._contract_fast(A, Ks, counts)
        else:
            chunk = self.node_chunk if self.node_chunk > 0 else N
            out = _forward_autograd(
                A, Ks, _segments(counts, chunk), self._blocks, self._grow_deg, M
            )
        # [C, M, N] (element order) -> [N, C, M] (input order) -> mace layout [N, sum C*(2l+1)]
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(N, device=perm.device)
        out = out.permute(2, 0, 1).index_select(0, inv)
        pieces: list[torch.Tensor] = []
        m0 = 0
        for d in self._out_dims:
            pieces.append(out[:, :, m0 : m0 + d].reshape(N, C * d))
            m0 += d
        out = torch.cat(pieces, dim=1)
        out = self.linear(out)
        if self.use_sc and sc is not None:
            return out + sc
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.irreps_in} -> {self.irreps_out}, correlation={self.correlation}, "
            f"basis={self.basis_kind}, weights={self.weights_kind}, "
            f"paths={self.symmetric_basis.num_paths}, elements={self.num_elements}"
        )
