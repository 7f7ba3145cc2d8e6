"""The modules a :class:`~fusion.diagrams.contract.FusionTree` is made of.

- :class:`Leaf`: an input in e3nn layout ``[N, C * dim]`` -> slots ``[D, N, C]``;
- :class:`Vertex`: one binary CG vertex over all of its label triples (``dense`` matmul with
  a block-sparse CG matrix, or ``sparse`` over the CG non-zeros; weighted or not; optional
  channel mixing);
- :class:`LeafRoot`: the weights of a one-leaf tree.

Layouts, strategies and weights are described in :mod:`fusion.diagrams.contract`.
"""

from __future__ import annotations

import torch
from torch import nn

from fusion.diagrams.bilinear import BilinearPlan, sparse_bilinear

__all__ = ["Leaf", "LeafRoot", "Vertex", "gather_weights"]


def gather_weights(
    weight: torch.Tensor, index: torch.Tensor, species: torch.Tensor | None
) -> torch.Tensor:
    """Rows ``index`` of ``weight [S, W, C]`` -> ``[K, 1, C]`` or per species ``[K, N, C]``."""
    if species is None:
        return weight[0].index_select(0, index).unsqueeze(1)
    w = weight.index_select(1, index)  # [S, K, C]
    return w.index_select(0, species).transpose(0, 1)  # [K, N, C]


class Leaf(nn.Module):
    """e3nn layout ``[N, C * dim]`` -> slots ``[D, N, C]`` (only labels on some path).

    ``from_components``: the same from component-major ``[D_all, N, C]`` (every label of the
    leaf, in order), which producers such as ``EdgeMessage.components`` hand over directly.
    """

    def __init__(self, index: torch.Tensor, num_components: int, channels: int,
                 rows: torch.Tensor):
        super().__init__()
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("rows", rows, persistent=False)
        self.all_rows = bool(torch.equal(rows, torch.arange(rows.numel())))
        self.num_components = num_components
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        x = x.index_select(1, self.index).view(n, self.num_components, self.channels)
        return x.transpose(0, 1)  # [D, N, C]

    def from_components(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.all_rows else x.index_select(0, self.rows)  # [D, N, C]


class Vertex(nn.Module):
    """One binary vertex: ``x [Da, N, C]``, ``y [Db, N, C]`` -> ``[Dout, N, C]``."""

    def __init__(self, left, right, dims, dense, entries, reduce, mixing):
        super().__init__()
        self.left, self.right = left, right
        self.da, self.db, self.dp, self.dout = dims
        self.dense = dense
        i, j, k, coef = entries  # CG non-zeros: out[k] += coef * x[i] * y[j]
        self.weighted = reduce is not None
        self.mixed = mixing is not None
        long = torch.long

        def buf(name, value, kind=None):
            # coefficients stay float64 until used (forward casts), so .double() is exact
            self.register_buffer(name, torch.as_tensor(value, dtype=kind or torch.float64), False)

        empty = torch.zeros(0, dtype=long)
        widx = out = norm = folded = empty
        cg = torch.zeros(0)
        if dense:
            cg = torch.zeros(self.dp, self.da * self.db, dtype=torch.float64)
            cg.index_put_((k, i * self.db + j), coef, accumulate=True)  # [Dp, Da*Db]
            i = j = k = empty
            coef = torch.zeros(0)
            if self.weighted:
                widx, out, norm = reduce  # per product component: weight row, output, norm
        elif self.weighted:
            # weights folded into the CG coefficients: scatter straight to the outputs
            widx, out, norm = reduce
            widx, out, folded = widx[k], out[k], coef * norm[k]
        buf("cg", cg)  # dense: [Dp, Da*Db]
        buf("i", i, long)  # sparse: CG non-zeros, product[k] += coef * x[i] * y[j]
        buf("j", j, long)
        buf("k", k, long)
        buf("coef", coef)
        buf("widx", widx, long)  # weighted: weight row, output row, coefficient
        buf("out", out, long)
        buf("norm", norm)  # dense: normalisation per product component
        buf("folded", folded)  # sparse: coef * normalisation per non-zero
        if self.mixed:
            mix_index, scale = mixing
            buf("mix_index", mix_index, long)
            self.mix_scale = scale
        else:
            buf("mix_index", [], long)
            self.mix_scale = 1.0

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        weight: torch.Tensor,
        mixing: torch.Tensor,
        species: torch.Tensor | None,
        apply_weights: bool = True,
    ) -> torch.Tensor:
        n, c = x.shape[1], x.shape[2]
        weighted = self.weighted and apply_weights
        if self.dense:
            outer = (x.unsqueeze(1) * y.unsqueeze(0)).reshape(self.da * self.db, n * c)
            p = torch.mm(self.cg.to(x.dtype), outer).view(self.dp, n, c)  # [Dp, N, C]
            if weighted:
                w = (
                    gather_weights(weight, self.widx, species)
                    * self.norm.to(x.dtype)[:, None, None]
                )
                p = p.new_zeros(self.dout, n, c).index_add_(0, self.out, p * w)  # [Dout, N, C]
        elif weighted:
            w = gather_weights(weight, self.widx, species) * self.folded.to(x.dtype)[:, None, None]
            prod = x.index_select(0, self.i) * y.index_select(0, self.j) * w  # [nnz, N, C]
            p = prod.new_zeros(self.dout, n, c).index_add_(0, self.out, prod)
        elif not torch.jit.is_scripting():
            p = self._bilinear(x, y)  # [Dp, N, C], no [nnz, N, C] temporaries
        else:
            prod = x.index_select(0, self.i) * y.index_select(0, self.j)  # [nnz, N, C]
            prod = prod * self.coef.to(x.dtype)[:, None, None]
            p = prod.new_zeros(self.dp, n, c).index_add_(0, self.k, prod)  # [Dp, N, C]
        if self.mixed:
            # linear C -> C per label on this internal edge
            p = torch.bmm(p, mixing.index_select(0, self.mix_index)) * self.mix_scale
        return p


    @torch.jit.unused
    def _bilinear(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        plan = self.__dict__.get("_plan")
        if plan is None:  # built on first use from the CG non-zeros (float64, exact)
            plan = BilinearPlan.from_tensors(self.i, self.j, self.k, self.coef, self.dp)
            self.__dict__["_plan"] = plan
        return sparse_bilinear(x, y, plan)


class LeafRoot(nn.Module):
    """Weights of a one-leaf tree: ``out[label] = w[label, c] * x[label]``."""

    def __init__(self, widx, norm):
        super().__init__()
        self.register_buffer("widx", torch.as_tensor(widx, dtype=torch.long), False)
        self.register_buffer("norm", torch.as_tensor(norm, dtype=torch.float64), False)

    def forward(
        self, x: torch.Tensor, weight: torch.Tensor, species: torch.Tensor | None
    ) -> torch.Tensor:
        return (
            x * gather_weights(weight, self.widx, species) * self.norm.to(x.dtype)[:, None, None]
        )
