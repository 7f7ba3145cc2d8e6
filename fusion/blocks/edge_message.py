"""Edge messages of a fusion block: ``m_ij = R(r_ij) * (Y(r_hat_ij) (x) W h_j)``, channelwise.

Used by :class:`fusion.blocks.fusion_block.FusionBlock` (see there for the conventions:
``edge_index[0]`` sender ``j``, vectors ``positions[receiver] - positions[sender]``).
"""

from __future__ import annotations

import fusion._mace_first  # noqa: F401  (mace before e3nn)

# isort: split

import itertools
import math
from collections.abc import Sequence

import torch
from e3nn import o3
from torch import nn

from fusion.blocks.radial import RadialEmbedding, RadialMLP
from fusion.diagrams.bilinear import BilinearPlan, bilinear_tensor_ops, sparse_bilinear
from fusion.diagrams.cg import coupling
from fusion.diagrams.irreps import channel_irreps, component_index, parse_irreps

__all__ = ["EdgeMessage", "label_offsets", "labels_and_channels"]


def labels_and_channels(spec, channels, what):
    """Labels and channel count ``C`` of ``spec`` (``"0e+1o"`` with ``channels``, or
    ``"Cx0e+Cx1o"``); ``what`` names the argument in errors."""
    labels, mul = parse_irreps(spec, what)
    if mul is not None and channels is not None and mul != channels:
        raise ValueError(f"{what}: irreps {spec!r} have {mul} channels but channels={channels}")
    C = channels if channels is not None else mul
    if C is None:
        raise ValueError(f"{what}: channel count unknown; pass channels=C or 'Cx0e+Cx1o' irreps")
    return labels, C


def label_offsets(labels) -> dict:
    """label -> first component row in a component-major stack of ``labels``."""
    return dict(zip(labels, itertools.accumulate([0] + [ir.dim for ir in labels])))


class EdgeMessage(nn.Module):
    """``m_ij = R(r_ij) * (Y(r_hat_ij) (x) W h_j)``, channelwise.

    ``W`` is an e3nn linear (per label, ``C -> C``), ``Y`` the spherical harmonics up to
    ``lmax_sh``, ``(x)`` the channelwise CG product with one radial weight per (CG path,
    channel) from an MLP on a Bessel basis with polynomial cutoff. Paths into the same
    message label are summed with ``1/sqrt(#paths)``.

    Shapes: ``forward(node_feats [N, irreps_in.dim], edge_vectors [E, 3], sender [E])``
    -> ``[E, irreps_out.dim]``.
    """

    def __init__(
        self,
        irreps_node,
        irreps_message=None,
        channels: int | None = None,
        lmax_sh: int = 3,
        r_max: float = 5.0,
        num_bessel: int = 8,
        num_polynomial_cutoff: int = 5,
        radial_mlp: Sequence[int] = (64, 64),
    ):
        super().__init__()
        labels_h, C = labels_and_channels(irreps_node, channels, "EdgeMessage irreps_node")
        if not isinstance(lmax_sh, int) or isinstance(lmax_sh, bool) or lmax_sh < 0:
            raise ValueError(f"lmax_sh must be an integer >= 0, got {lmax_sh!r}")
        sh_labels = [o3.Irrep(l, (-1) ** l) for l in range(lmax_sh + 1)]
        if irreps_message is None:
            labels_m = tuple(sh_labels)
        else:
            labels_m, mul = parse_irreps(irreps_message, "EdgeMessage irreps_message")
            if mul is not None and mul != C:
                raise ValueError(
                    f"EdgeMessage irreps_message {irreps_message!r} has {mul} channels, "
                    f"node features have {C}"
                )
        paths = [
            (y, h, m) for m in labels_m for y in sh_labels for h in labels_h if m in set(y * h)
        ]
        unreachable = [m for m in labels_m if not any(p[2] == m for p in paths)]
        if unreachable:
            raise ValueError(
                f"EdgeMessage: message irreps {', '.join(map(str, unreachable))} cannot come "
                f"from Y(l <= {lmax_sh}) x node irreps {channel_irreps(labels_h, C)}"
            )
        self.channels = C
        self.irreps_in = channel_irreps(labels_h, C)
        self.irreps_out = channel_irreps(labels_m, C)
        self.irreps_sh = o3.Irreps([(1, ir) for ir in sh_labels])
        self.num_paths = len(paths)
        self.paths = tuple(paths)

        self.linear = o3.Linear(self.irreps_in, self.irreps_in)  # W
        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.radial = RadialEmbedding(r_max, num_bessel, num_polynomial_cutoff)
        self.radial_mlp = RadialMLP([num_bessel, *radial_mlp, len(paths) * C])

        off_y, off_h, off_m = (label_offsets(ls) for ls in (sh_labels, labels_h, labels_m))
        dy, dh = self.irreps_sh.dim, sum(ir.dim for ir in labels_h)
        n_into = {m: sum(1 for p in paths if p[2] == m) for m in labels_m}
        self.register_buffer("m_index", torch.argsort(component_index(labels_m, C)), False)
        self.dy, self.dh = dy, dh
        self.dm = sum(ir.dim for ir in labels_m)
        # The message as two sparse bilinear contractions (fusion.diagrams.bilinear; rows of
        # [D, E, C], no [paths, E, C] temporaries, cheap derivatives of every order):
        #   xw[r] = h[b(r)] * w[p(r)]              rows r = (path p, component b of its h)
        #   m[k]  = sum B[a, r, k] * Y[a] * xw[r]  B = the paths' CG blocks / sqrt(#paths)
        rows_b, rows_p = [], []
        for k, (_, h, _) in enumerate(paths):
            rows_b += [off_h[h] + b for b in range(h.dim)]
            rows_p += [k] * h.dim
        B = torch.zeros(dy, len(rows_b), self.dm, dtype=torch.float64)
        for k, (y, h, m) in enumerate(paths):
            r0 = rows_p.index(k)
            block = coupling(y.l, h.l, m.l, dtype=torch.float64) / math.sqrt(n_into[m])
            B[off_y[y]:off_y[y] + y.dim, r0:r0 + h.dim, off_m[m]:off_m[m] + m.dim] += block
        self.register_buffer("h_index", component_index(labels_h, C), False)
        self._xw_plan = BilinearPlan(tuple((b, p, r, 1.0) for r, (b, p) in
                                           enumerate(zip(rows_b, rows_p))), len(rows_b))
        self._m_plan = BilinearPlan(tuple((a, r, k, float(B[a, r, k]))
                                          for a, r, k in B.nonzero().tolist()), self.dm)
        self.register_buffer("xw_terms", self._xw_plan.as_tensor(), False)  # TorchScript
        self.register_buffer("m_terms", self._m_plan.as_tensor(), False)
        self.num_rows = len(rows_b)

    def forward(
        self, node_feats: torch.Tensor, edge_vectors: torch.Tensor, sender: torch.Tensor
    ) -> torch.Tensor:
        E, C = edge_vectors.shape[0], self.channels
        m = self.components(node_feats, edge_vectors, sender)  # [Dm, E, C]
        return m.permute(1, 0, 2).reshape(E, self.dm * C).index_select(1, self.m_index)

    def components(
        self, node_feats: torch.Tensor, edge_vectors: torch.Tensor, sender: torch.Tensor
    ) -> torch.Tensor:
        """The messages in component-major layout ``[Dm, E, C]`` (rows: the message labels'
        components in order), as :class:`MessageFusion` uses them internally."""
        E, C, N = edge_vectors.shape[0], self.channels, node_feats.shape[0]
        lengths = torch.linalg.norm(edge_vectors, dim=1, keepdim=True)  # [E, 1]
        y = self.sh(edge_vectors).t().unsqueeze(-1)  # [DY, E, 1]
        h = self.linear(node_feats).index_select(1, self.h_index).view(N, self.dh, C)
        h = h.transpose(0, 1).contiguous().index_select(1, sender)  # [Dh, E, C]
        r = self.radial_mlp(self.radial(lengths)).view(E, self.num_paths, C)  # [E, P, C]
        r = r.transpose(0, 1)  # [P, E, C]
        if torch.jit.is_scripting():
            xw = bilinear_tensor_ops(h, r, self.xw_terms, self.num_rows)  # [R, E, C]
            return bilinear_tensor_ops(y.expand(-1, -1, C), xw, self.m_terms, self.dm)
        return self._sparse(h, r, y)  # [Dm, E, C]

    @torch.jit.unused
    def _sparse(self, h: torch.Tensor, r: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        xw = sparse_bilinear(h, r, self._xw_plan)  # [R, E, C]
        return sparse_bilinear(y, xw, self._m_plan)  # [Dm, E, C]
