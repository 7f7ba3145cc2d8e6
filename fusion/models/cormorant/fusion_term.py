"""The 3-body fusion term of ``cormorant/fusion``.

In atom level ``s`` the fusion diagram ``((F, e), e)`` — a binary tree of two channelwise CG
vertices with the atom's features ``F_i`` and two edge representations as leaves — summed
over *distinct* neighbour pairs::

    T_i = sum_{j != k} Tree(F_i, e_ij, e_ik)
        = Tree(F_i, A_i, A_i) - sum_j Tree(F_i, e_ij, e_ij),     A_i = sum_j e_ij

(exact by multilinearity, O(pairs), as ``fusion.blocks.FusionBlock``'s ``exact`` mode), with
``e_ij,l' = g_ij,l' Y_l'(r_ij)`` the level's edge representations for ``l' <= fusion_lmax_sh``
and internal degrees ``<= fusion_L_int``. Both leaves ``e`` enter through the pair moment
``P_i = A_i (x) A_i - sum_j e_ij (x) e_ij``, so the whole tree is one matmul of
``F_i (x) P_i`` with a precomputed 3-leg coupling matrix. Each path (degrees of the leaves,
the internal edge and the output) gets one complex weight per channel; the paths into each
output degree are summed into ``C`` channels that join the level's CatMix input.

Scale at initialisation: path weights start at ``1 / sqrt(paths into that degree)``; the
term is left at its natural scale. It is a cubic polynomial of small quantities (at the
reference's initialisation the edge representations are ~0.1 and shrink with the level), so
it starts at 1-15 % of the level's input features (RMS, measured on QM9; docs/cormorant.md).
Scaling it up to the features' RMS on the first batch was tried and made training diverge
at the demo's learning rate (loss 2.7e25 at the second AMSGrad step, lr 0.005): with the
edge weights moving by ~30 % per step, a term cubic in them and amplified 10-25x explodes.
"""

from __future__ import annotations

import torch
from torch import nn

from fusion.models.cormorant.layers import stack
from fusion.models.cormorant.so3 import clebsch_gordan, real_matmul

__all__ = ["FusionTerm", "tree_paths"]


def tree_paths(atom_degrees, lmax_sh: int, L_int: int, maxl: int):
    """Paths ``(la, lb, lab, lc, l)`` of the tree ``((F_la, e_lb) -> lab, e_lc) -> l``."""
    paths = []
    for la in atom_degrees:
        for lb in range(lmax_sh + 1):
            for lab in range(abs(la - lb), min(la + lb, L_int) + 1):
                for lc in range(lmax_sh + 1):
                    for l in range(abs(lab - lc), min(lab + lc, maxl) + 1):
                        paths.append((la, lb, lab, lc, l))
    return sorted(paths, key=lambda p: p[-1])


def _tree_matrix(atom_degrees, lmax_sh: int, paths) -> torch.Tensor:
    """``[Df * De * De, sum over paths of 2l+1]``: input index ``(a, b, c)`` with ``a`` the
    stacked atom components, ``b``, ``c`` the stacked edge components (degrees <= lmax_sh)."""
    off_a, pos = {}, 0
    for l in atom_degrees:
        off_a[l], pos = pos, pos + 2 * l + 1
    Df, De = pos, (lmax_sh + 1) ** 2
    cols = []
    for la, lb, lab, lc, l in paths:
        t = torch.einsum("abx,xcm->abcm", clebsch_gordan(la, lb, lab), clebsch_gordan(lab, lc, l))
        block = torch.zeros(Df, De, De, 2 * l + 1, dtype=torch.float64)
        block[off_a[la] : off_a[la] + 2 * la + 1, lb * lb : (lb + 1) ** 2,
              lc * lc : (lc + 1) ** 2] = t
        cols.append(block.reshape(-1, 2 * l + 1))
    return torch.cat(cols, dim=1)


class FusionTerm(nn.Module):
    """``T_i`` for one atom level: ``forward(feats, edge_reps) -> l -> [B, A, C, 2l+1]``."""

    def __init__(self, atom_degrees, channels: int, lmax_sh: int, L_int: int, maxl: int):
        super().__init__()
        self.atom_degrees, self.lmax_sh = tuple(atom_degrees), lmax_sh
        self.paths = tree_paths(self.atom_degrees, lmax_sh, L_int, maxl)
        self.register_buffer("tree", _tree_matrix(self.atom_degrees, lmax_sh, self.paths)
                             .to(torch.get_default_dtype()), False)
        self.out_degrees = tuple(sorted({p[-1] for p in self.paths}))
        self.out_channels = {l: channels for l in self.out_degrees}
        self.weights = nn.ParameterDict()
        for l in self.out_degrees:
            n = sum(1 for p in self.paths if p[-1] == l)
            w = torch.zeros(n, channels, 2)
            w[..., 0] = 1.0 / n**0.5
            self.weights[str(l)] = nn.Parameter(w)

    def forward(self, feats: dict[int, torch.Tensor], edges: dict[int, torch.Tensor]):
        f = stack(feats)  # [B, A, C, Df]
        e = stack({l: edges[l] for l in range(self.lmax_sh + 1)})  # [B, A, A, C, De]
        a = e.sum(2)  # [B, A, C, De]
        et = e.permute(0, 1, 3, 4, 2)  # [B, A, C, De, A_j]
        diag = torch.matmul(et, et.transpose(-1, -2))  # sum_j e_ij (x) e_ij
        moment = (a.unsqueeze(-1) * a.unsqueeze(-2) - diag).flatten(-2)
        values = real_matmul((f.unsqueeze(-1) * moment.unsqueeze(-2)).flatten(-2), self.tree)
        out, pos = {}, 0
        for l in self.out_degrees:
            n = sum(1 for p in self.paths if p[-1] == l)
            v = values[..., pos : pos + n * (2 * l + 1)].unflatten(-1, (n, 2 * l + 1))
            w = torch.view_as_complex(self.weights[str(l)].to(v.real.dtype).contiguous())
            out[l] = torch.einsum("bacpm,pc->bacm", v, w)
            pos += n * (2 * l + 1)
        return out
