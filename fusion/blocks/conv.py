"""``FusionConv``: mace-torch's interaction convolution as one fusion-tree contraction.

mace-torch's interaction blocks compute, per edge ``e = (s -> r)``, an e3nn ``"uvu"``
``TensorProduct`` of the sender's features with the edge's spherical harmonics, weighted per
edge, channel and path by the radial MLP, and sum the messages over each receiver::

    M[r, (p, c, k)] = sum_{e: r(e) = r} w[e, p, c] sum_{i, j} B_p[i, j, k] x[s(e), c, i] Y[e, j]

(``p``: instruction/path, ``c``: channel, ``i``/``j``/``k``: components of the input,
harmonic and output irreps of path ``p``; ``B_p`` the Wigner-3j block with e3nn's
normalisation). As a fusion diagram this is the tree ``((x, Y), w)`` with the edge sum at the
root. e3nn evaluates it path by path (dozens of small ops, each with its own slice/copy
in the backward); :class:`FusionConv` evaluates all paths at once, with rows
``r = (p, i)`` (each path's input components, ``R = sum_p dim(in_p)``):

1. ``xw[e, c, r] = x[s(e), c, i(r)] * w[e, p(r), c]`` (the radial weight folded into the
   sender's features; both spreads are matmuls with 0/1 matrices),
2. ``G[e, r, q] = sum_j Y[e, j] B[j, r, q]`` with ``q = (p, k)`` over all paths' outputs and
   ``B`` block-diagonal in the paths (one matmul on edges; no channel axis),
3. ``T[e] = xw[e] @ G[e]`` (one batched matmul ``[E, C, R] x [E, R, Q]``) and
   ``M = scatter_sum_r T`` (one index_add),

then returns ``M`` in e3nn's layout. ``B`` is read off the wrapped e3nn ``TensorProduct`` by
evaluating it on basis vectors, so the constants are e3nn's own (exact to rounding; tested to
1e-12 in float64 against ``conv_tp`` + ``scatter_sum``). Every step is a plain torch op, so
autograd gives the gradients the force loss needs (w.r.t. positions through ``Y`` and ``w``,
then w.r.t. the weights).

mace-torch calls a convolution that sums over edges itself when the interaction has a
``conv_fusion`` attribute; :func:`install_fusion_conv` sets that and swaps ``conv_tp``.
"""

from __future__ import annotations

import fusion._mace_first  # noqa: F401  (mace before e3nn)

# isort: split

import torch
from e3nn import o3
from torch import nn

__all__ = ["FusionConv", "install_fusion_conv"]


def _uvu_instructions(tp) -> list:
    modes = {ins.connection_mode for ins in tp.instructions}
    if modes != {"uvu"} or tp.shared_weights or tp.internal_weights:
        raise ValueError(
            "FusionConv needs an e3nn TensorProduct with 'uvu' instructions and per-edge "
            f"external weights (mace-torch's conv_tp); got modes {sorted(modes)}, "
            f"shared_weights={tp.shared_weights}, internal_weights={tp.internal_weights}"
        )
    return list(tp.instructions)


class FusionConv(nn.Module):
    """Sum over edges of a ``"uvu"`` tensor product (see the module docstring).

    Args:
        tp: the e3nn ``TensorProduct`` to reproduce (``irreps_in1``: node features with one
            multiplicity ``C`` for every irrep; ``irreps_in2``: edge attributes with
            multiplicity 1; per-edge weights ``[E, weight_numel]``).

    ``forward(node_feats [N, irreps_in1.dim], edge_attrs [E, irreps_in2.dim],
    weights [E, weight_numel], edge_index [2, E])`` -> ``[N, irreps_out.dim]``.
    """

    def __init__(self, tp: nn.Module) -> None:
        super().__init__()
        instructions = _uvu_instructions(tp)
        self.irreps_in1 = o3.Irreps(tp.irreps_in1)
        self.irreps_in2 = o3.Irreps(tp.irreps_in2)
        self.irreps_out = o3.Irreps(tp.irreps_out)
        muls = {mul for mul, _ in self.irreps_in1}
        if len(muls) != 1 or any(mul != 1 for mul, _ in self.irreps_in2):
            raise ValueError(
                "FusionConv needs one multiplicity for every node irrep and multiplicity 1 "
                f"for the edge attributes; got {self.irreps_in1} and {self.irreps_in2}"
            )
        C = muls.pop()
        I, J = self.irreps_in1.dim // C, self.irreps_in2.dim
        out_dims = [self.irreps_out[ins.i_out].ir.dim for ins in instructions]
        for ins in instructions:
            if self.irreps_out[ins.i_out].mul != C:
                raise ValueError("FusionConv: every output irrep needs the input multiplicity")
        if sorted(ins.i_out for ins in instructions) != list(range(len(self.irreps_out))):
            raise ValueError("FusionConv: every output irrep must come from one instruction")
        self.channels, self.n_paths = C, len(instructions)
        self.weight_numel = int(tp.weight_numel)
        # Offsets of each input irrep inside one channel's components [I].
        comp_off = [0]
        for _, ir in self.irreps_in1:
            comp_off.append(comp_off[-1] + ir.dim)
        self._in_slices = [(s.start, s.stop, ir.dim) for s, (_, ir) in
                           zip(self.irreps_in1.slices(), self.irreps_in1)]
        # Outputs q = (path, k) in instruction order; where each lands in e3nn's layout.
        q_off = [0]
        for d in out_dims:
            q_off.append(q_off[-1] + d)
        Q = q_off[-1]
        # Rows r = (path p, input component i of p's input irrep): R = sum_p dim(in_p).
        rows_i, rows_p = [], []
        for p, ins in enumerate(instructions):
            c0 = comp_off[ins.i_in1]
            for m in range(self.irreps_in1[ins.i_in1].ir.dim):
                rows_i.append(c0 + m)
                rows_p.append(p)
        R = len(rows_i)
        dtype = torch.get_default_dtype()
        # x[e, c, i] -> x[e, c, i(r)] and w[e, c, p] -> w[e, c, p(r)] as matmuls with 0/1
        # matrices (their backward is a matmul too; gathers on the last axis are slow)
        eye_i, eye_p = torch.eye(I, dtype=dtype), torch.eye(self.n_paths, dtype=dtype)
        self.register_buffer("select_i", eye_i[:, rows_i].contiguous(), persistent=False)
        self.register_buffer("select_p", eye_p[:, rows_p].contiguous(), persistent=False)
        # output columns (q0, q1) of each path, in e3nn's output order
        self._out_blocks = [(q_off[p], q_off[p + 1]) for p in
                            sorted(range(self.n_paths), key=lambda p: instructions[p].i_out)]
        B = self._probe(tp, C, I, J, Q, comp_off, q_off, instructions)  # [J, I, Q]
        # Block-diagonal in the paths: row r only feeds path p(r)'s outputs.
        q_path = torch.repeat_interleave(torch.arange(self.n_paths), torch.tensor(out_dims))
        mask = (torch.tensor(rows_p)[:, None] == q_path[None, :]).to(B.dtype)  # [R, Q]
        Brq = B[:, rows_i, :] * mask  # [J, R, Q]
        self.register_buffer("B", Brq.reshape(J, R * Q).to(dtype), persistent=False)

        self._dims = (C, R, J, Q)
        # Keep the wrapped module's own state (its empty weight, output mask and Wigner-3j
        # buffers) under the same names, so state dicts (checkpoints) are interchangeable
        # between interaction_kernel "fusion" and "e3nn".
        for name, param in tp.named_parameters(recurse=False):
            self.register_parameter(name, param)
        for name, buf in tp.named_buffers(recurse=False):
            self.register_buffer(name, buf, persistent=name not in tp._non_persistent_buffers_set)
        for name, child in tp.named_children():
            self.add_module(name, child)

    @staticmethod
    @torch.no_grad()
    def _probe(tp, C, I, J, Q, comp_off, q_off, instructions) -> torch.Tensor:
        """``B[j, i, q]`` from ``tp`` on basis vectors (float64, all weights 1)."""
        dtype = torch.float64
        irreps_in1 = o3.Irreps(tp.irreps_in1)
        x1 = torch.zeros(I * J, irreps_in1.dim, dtype=dtype)
        x2 = torch.zeros(I * J, J, dtype=dtype)
        for b, (s, (_, ir)) in enumerate(zip(irreps_in1.slices(), irreps_in1)):
            for m in range(ir.dim):
                i = comp_off[b] + m
                for j in range(J):
                    x1[i * J + j, s.start + m: s.stop: ir.dim] = 1.0  # every channel
                    x2[i * J + j, j] = 1.0
        w = torch.ones(I * J, tp.weight_numel, dtype=dtype)
        tp64 = tp.to(dtype) if next(tp.buffers(), torch.empty(0)).dtype != dtype else tp
        out = tp64(x1, x2, w)  # [I*J, irreps_out.dim]
        if tp64 is not tp:
            tp.to(torch.get_default_dtype())
        irreps_out = o3.Irreps(tp.irreps_out)
        slices = irreps_out.slices()
        B = torch.zeros(I, J, Q, dtype=dtype)
        for p, ins in enumerate(instructions):
            s, d = slices[ins.i_out], irreps_out[ins.i_out].ir.dim
            block = out[:, s].reshape(I, J, -1, d)  # [I, J, C, d]: equal over channels
            if not torch.equal(block, block[:, :, :1].expand_as(block)):
                raise RuntimeError("FusionConv probe: path differs between channels")
            B[:, :, q_off[p]:q_off[p + 1]] = block[:, :, 0]
        return B.permute(1, 0, 2)  # [J, I, Q]

    def channels_last(self, node_feats: torch.Tensor) -> torch.Tensor:
        """e3nn layout ``[N, irreps_in1.dim]`` -> ``[N, C, I]``."""
        N = node_feats.shape[0]
        C = self.channels
        return torch.cat([node_feats[:, a:b].reshape(N, C, d) for a, b, d in self._in_slices],
                         dim=-1)

    def forward(self, node_feats: torch.Tensor, edge_attrs: torch.Tensor,
                weights: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        C, R, _, Q = self._dims
        N, E = node_feats.shape[0], edge_attrs.shape[0]
        x = self.channels_last(node_feats).index_select(0, edge_index[0])  # [E, C, I]
        w = weights.reshape(E, self.n_paths, C).transpose(1, 2)  # [E, C, P]
        xw = (x @ self.select_i.to(x.dtype)) * (w @ self.select_p.to(w.dtype))  # [E, C, R]
        G = (edge_attrs @ self.B.to(edge_attrs.dtype)).view(E, R, Q)  # [E, R, Q]
        T = torch.bmm(xw, G)  # [E, C, Q]
        M = T.new_zeros(N, C, Q).index_add(0, edge_index[1], T)  # [N, C, Q]
        return torch.cat([M[:, :, q0:q1].reshape(N, -1) for q0, q1 in self._out_blocks],
                         dim=-1)  # [N, irreps_out.dim]


def install_fusion_conv(model: nn.Module) -> int:
    """Swap every mace-torch interaction's ``conv_tp`` (+ scatter) for a :class:`FusionConv`.

    Returns the number of interactions changed. The function computed is unchanged (to
    rounding); parameters are untouched (``conv_tp`` has none).
    """
    n = 0
    for module in model.modules():
        tp = getattr(module, "conv_tp", None)
        if tp is None or isinstance(tp, FusionConv) or not hasattr(module, "conv_tp_weights"):
            continue
        module.conv_tp = FusionConv(tp)
        module.conv_fusion = True  # mace-torch then passes edge_index and skips its scatter
        n += 1
    return n
