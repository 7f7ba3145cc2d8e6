"""Cormorant (Anderson, Hy & Kondor, NeurIPS 2019) re-implemented on e3nn: ``cormorant/*``.

Written from the paper's description (the reference code's license forbids reuse; nothing of
it is copied). Features are e3nn irreps tensors in the real basis with O(3) labels; a block of
irrep ``l`` with ``C`` channels is laid out as e3nn does (``[C, 2l+1]`` flattened).

Architecture (defaults as published: 4 CG levels, ``maxl = max_sh = 3``, 10 channels)::

    F^0_i   = W_in [onehot(Z_i) x (Z_i / Z_max)^k, k = 0..charge_power]            (C x 0e)
    for s = 1..num_cg_levels:
      edge level:  g^s_ij,l' = mu^s(r_ij) * W^s_edge [g^(s-1)_ij  (+)  F^(s-1)_i . F^(s-1)_j
                                                      (+)  eta^s(r_ij)]      (l' = 0..max_sh)
      atom level:  F^s_i = W^s_mix [ F^(s-1)_i  (+)  CG(F^(s-1)_i (x) F^(s-1)_i)
                                     (+)  sum_j CG((g^s_ij,l' Y^l'(r_hat_ij)) (x) F^(s-1)_j) ]
    E = sum_i MLP(scalars of F^0_i, ..., F^S_i)

- ``(+)`` is concatenation along channels; ``(x)`` is the *channelwise* CG product (channel
  ``c`` with channel ``c``), every admissible ``(l1, l2) -> l <= maxl`` coupling a separate
  set of channels; ``W_mix`` mixes all those channels per output irrep ("CatMix").
- ``F_i . F_j`` is the per-channel, per-irrep dot product (invariant); ``eta`` is a radial
  basis ``(r / r_soft)^-k * {sin, cos}(2 pi f_n r + phi_n)`` with learnable frequencies and
  phases; ``mu(r) = sigmoid((r_cut - r) / w)`` a soft cutoff with learnable radius ``r_cut``
  and width ``w`` per level and edge channel; the hard cutoff is the graph's ``r_max``.
- Scalars gathered from every level (the input level too): the ``0e`` parts and the squared
  norms of every irrep, per channel (squared, as Cormorant's magnitudes: smooth at 0).
- Readout: an MLP with one hidden layer (Cormorant's "PMLP"; width ``readout_hidden`` = 450,
  which puts the default model at 211,445 parameters against the reference's 211,452; see
  docs/cormorant.md), summed over atoms.

Parity. Cormorant's features are SO(3) (complex spherical basis, any coupling allowed, e.g.
the cross product 1 x 1 -> 1). Here every degree ``l`` has both parities (``l e`` and ``l o``,
``C`` real channels each) and every CG coupling is allowed, its output parity the product of
its inputs' (``parity="both"``, the default): the SO(3) function space of Cormorant, made
O(3)-equivariant; ``2C(2l+1)`` real numbers per degree, as Cormorant's ``C`` complex channels.
``parity="natural"`` keeps only ``(-1)^l`` (half the features; couplings with
``l1 + l2 + l`` odd dropped). The energy only sees true scalars, so it is invariant under
rotations *and* inversion.

Target normalisation: the network's atom outputs are the *normalised* per-atom residual;
``E = sum_i e0[Z_i] + scale * sum_i out_i`` with ``e0`` the composition (least-squares)
energies and ``scale`` the std of the per-atom residual (``ModelStats``). The trainer's MSE
on E (eV) is therefore ``scale^2`` times the MSE on the normalised target.

``cormorant/fusion`` (this module too): every atom level gets an extra exact
3-body :class:`~fusion.blocks.fusion_block.FusionBlock` term; the channel count is the
largest with parameters <= the baseline's (``model.fusion_info``). See docs/cormorant.md.
"""

from __future__ import annotations

import fusion._mace_first  # noqa: F401  (mace before e3nn)

# isort: split

import math

import torch
from e3nn import o3
from torch import nn

from fusion.diagrams.cg import coupling
from fusion.models.registry import ModelStats, count_parameters, register

__all__ = [
    "CORMORANT_DEFAULTS",
    "FUSION_DEFAULTS",
    "Cormorant",
    "CGLevel",
    "cormorant_hparams",
    "build_cormorant",
    "choose_fusion_width",
]

# Published defaults (QM9 architecture of the paper; cutoffs and radial basis sizes as the
# reference code's defaults; see docs/cormorant.md).
CORMORANT_DEFAULTS: dict = {
    "num_cg_levels": 4,  # CG levels (edge level + atom level each)
    "maxl": 3,  # largest degree of atom features
    "max_sh": 3,  # largest degree of the spherical harmonics on edges
    "num_channels": 10,  # channels per irrep (per degree and parity)
    "charge_power": 2,  # input scalars: onehot x (Z / Z_max)^k, k = 0..charge_power
    "r_max": 1.73,  # hard cutoff of the graph, Å
    "soft_cut_rad": 1.73,  # initial learnable soft-cutoff radius, Å
    "soft_cut_width": 0.2,  # initial learnable soft-cutoff width, Å
    "basis_pow": 3,  # radial basis: powers (r / r_soft)^-k, k = 0..basis_pow - 1
    "basis_trig": 3,  # radial basis: learnable frequencies (sin and cos each)
    "parity": "both",  # "both" (Cormorant's SO(3) couplings) or "natural" ((-1)^l only)
    "level_gain": 2.0,  # CatMix init std = level_gain / sqrt(fan-in) (Cormorant's level gain)
    "square_pairs": "ordered",  # CG square over all (l1, l2) pairs as published, or "unordered"
    "readout_hidden": 450,  # hidden width of the readout MLP (null: number of scalars)
    "activation": "leaky_relu",  # readout MLP activation
}

# Extra keys of cormorant/fusion.
FUSION_DEFAULTS: dict = {
    "fusion_num_channels": None,  # None: the largest width with params <= baseline
    "fusion_lmax_sh": 1,  # spherical harmonics of the 3-body block's messages
    "fusion_L_int": 1,  # cap on the internal label of the tree ((h, A), A)
    "fusion_radial_MLP": [16],  # hidden layers of the block's radial MLP
    "fusion_num_bessel": 6,  # Bessel functions of the block's radial embedding
}

_ACTIVATIONS = {"leaky_relu": nn.LeakyReLU, "silu": nn.SiLU, "relu": nn.ReLU}


def _is_int(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def cormorant_hparams(hparams: dict, variant: str = "baseline") -> dict:
    """Merge ``hparams`` over the defaults of ``cormorant/variant``; bad keys or values raise
    ``ValueError`` naming the key and listing the valid keys."""
    if not isinstance(hparams, dict):
        raise ValueError(f"cormorant/{variant} hyperparameters must be a dict, got {hparams!r}")
    defaults = dict(CORMORANT_DEFAULTS)
    if variant == "fusion":
        defaults.update(FUSION_DEFAULTS)
    unknown = sorted(set(hparams) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {unknown} for cormorant/{variant}; "
            f"valid keys: {sorted(defaults)}"
        )
    hp = {**defaults, **hparams}
    ints = {"num_cg_levels": 1, "maxl": 0, "max_sh": 0, "num_channels": 1, "charge_power": 0,
            "basis_pow": 1, "basis_trig": 1}
    if variant == "fusion":
        ints.update({"fusion_lmax_sh": 0, "fusion_num_bessel": 1})
    for key, minimum in ints.items():
        if not _is_int(hp[key], minimum):
            raise ValueError(
                f"cormorant/{variant} hyperparameter {key} must be an integer >= {minimum}, "
                f"got {hp[key]!r}"
            )
    for key in ("r_max", "soft_cut_rad", "soft_cut_width", "level_gain"):
        if isinstance(hp[key], bool) or not isinstance(hp[key], (int, float)) or hp[key] <= 0:
            raise ValueError(
                f"cormorant/{variant} hyperparameter {key} must be a positive number (Å), "
                f"got {hp[key]!r}"
            )
    if hp["parity"] not in ("both", "natural"):
        raise ValueError(
            f"cormorant/{variant} hyperparameter parity must be 'both' or 'natural', "
            f"got {hp['parity']!r}"
        )
    if hp["square_pairs"] not in ("ordered", "unordered"):
        raise ValueError(
            f"cormorant/{variant} hyperparameter square_pairs must be 'ordered' or "
            f"'unordered', got {hp['square_pairs']!r}"
        )
    if hp["readout_hidden"] is not None and not _is_int(hp["readout_hidden"], 1):
        raise ValueError(
            f"cormorant/{variant} hyperparameter readout_hidden must be a positive integer or "
            f"null, got {hp['readout_hidden']!r}"
        )
    if hp["activation"] not in _ACTIVATIONS:
        raise ValueError(
            f"cormorant/{variant} hyperparameter activation must be one of "
            f"{sorted(_ACTIVATIONS)}, got {hp['activation']!r}"
        )
    if variant == "fusion":
        for key in ("fusion_num_channels", "fusion_L_int"):
            if hp[key] is not None and not _is_int(hp[key], 0 if key == "fusion_L_int" else 1):
                raise ValueError(
                    f"cormorant/fusion hyperparameter {key} must be a positive integer or "
                    f"null, got {hp[key]!r}"
                )
        mlp = hp["fusion_radial_MLP"]
        if not isinstance(mlp, (list, tuple)) or not all(_is_int(d, 1) for d in mlp):
            raise ValueError(
                "cormorant/fusion hyperparameter fusion_radial_MLP must be a list of positive "
                f"integers, got {mlp!r}"
            )
    return hp


def feature_irreps(channels: int, maxl: int, parity: str) -> o3.Irreps:
    """Atom features: ``C x 0e + C x 0o + C x 1o + C x 1e ...`` (``parity="both"``) or
    ``C x 0e + C x 1o + C x 2e ...`` (``"natural"``), degrees up to ``maxl``. Both parities
    of a degree are adjacent (the layout the CG products rely on)."""
    irs = []
    for l in range(maxl + 1):
        natural = (-1) ** l
        irs.append((channels, (l, natural)))
        if parity == "both":
            irs.append((channels, (l, -natural)))
    return o3.Irreps(irs)


def level_irreps(irreps_in: o3.Irreps, channels: int, maxl: int, max_sh: int,
                 parity: str) -> o3.Irreps:
    """Output irreps of a CG level: :func:`feature_irreps` restricted to those its inputs can
    produce (from scalars only, the first level reaches the natural parities only)."""
    labels = [ir for _, ir in irreps_in]
    reach = set(labels)
    reach |= {ir for a in labels for b in labels for ir in a * b}
    reach |= {ir for l in range(max_sh + 1) for b in labels for ir in o3.Irrep(l, (-1) ** l) * b}
    return o3.Irreps([(m, ir) for m, ir in feature_irreps(channels, maxl, parity) if ir in reach])


# Internal layout: a feature tensor is [D, N, C] (component-major: D = sum of (2l+1) over
# the irreps in order, every irrep with the same C channels), so the CG products are matmuls
# over long contiguous rows. to_e3nn / from_e3nn convert to and from e3nn's flattened layout
# ([N, sum C (2l+1)], channel-major inside each irrep).
def to_e3nn(irreps: o3.Irreps, x: torch.Tensor) -> torch.Tensor:
    """``[D, N, C] -> [N, irreps.dim]`` (e3nn layout)."""
    out, start = [], 0
    for _, ir in irreps:
        out.append(x[start : start + ir.dim].permute(1, 2, 0).reshape(x.shape[1], -1))
        start += ir.dim
    return torch.cat(out, dim=1)


def from_e3nn(irreps: o3.Irreps, x: torch.Tensor) -> torch.Tensor:
    """``[N, irreps.dim]`` (e3nn layout) -> ``[D, N, C]``."""
    out = []
    for (mul, ir), sl in zip(irreps, irreps.slices()):
        out.append(x[:, sl].view(x.shape[0], mul, ir.dim).permute(2, 0, 1))
    return torch.cat(out, dim=0)


def _degree_blocks(irreps: o3.Irreps) -> dict[int, tuple[int, list[int]]]:
    """degree l -> (first column, parities in layout order); a degree's parities must be
    adjacent."""
    blocks: dict[int, tuple[int, list[int]]] = {}
    start, prev = 0, None
    for _, ir in irreps:
        if ir.l in blocks:
            if prev != ir.l:
                raise ValueError(f"irreps {irreps}: both parities of l={ir.l} must be adjacent")
            blocks[ir.l][1].append(ir.p)
        else:
            blocks[ir.l] = (start, [ir.p])
        start += ir.dim
        prev = ir.l
    return blocks


class ChannelwiseCG(nn.Module):
    """Channelwise CG products of two feature tensors, all admissible couplings at once.

    For every pair of degrees ``(l1, l2)`` the real CG coefficients (component-normalised)
    of all ``l3 <= maxl`` are concatenated and applied to every parity combination with two
    matmuls (``y`` against the coefficients, then a batched matmul with ``x``; forward and
    backward stay in BLAS). Per output irrep ``(l3, p3)`` the kept channel groups
    (``p1 p2 = p3``) are then gathered with one ``index_select``. ``square=True`` (the same
    tensor twice): with ``ordered=False`` only irrep pairs ``i1 <= i2`` are kept (no
    duplicate channels); with ``ordered=True`` every ordered pair, as the paper's
    ``F (x) F`` over all ``(l1, l2)``; couplings that vanish identically (same irrep twice,
    odd ``l3``) are dropped in both cases.

    Shapes: ``forward(x [D1, M, C], y [D2, M, C])`` -> list over ``out_irreps`` of
    ``[G, 2l3+1, M, C]`` (``G = groups[ir]``).
    """

    def __init__(self, irreps1: o3.Irreps, irreps2: o3.Irreps, irreps_out: o3.Irreps,
                 square: bool = False, ordered: bool = False):
        super().__init__()
        b1, b2 = _degree_blocks(irreps1), _degree_blocks(irreps2)
        outs = [ir for _, ir in irreps_out]
        maxl = max(ir.l for ir in outs)
        self.split1 = [len(ps) * (2 * l + 1) for l, (_, ps) in b1.items()]
        self.split2 = [len(ps) * (2 * l + 1) for l, (_, ps) in b2.items()]
        deg1, deg2 = list(b1), list(b2)
        # (index of l1 block, index of l2 block, P1, P2, d1, d2, K_pair)
        self.pairs: list[tuple[int, int, int, int, int, int, int]] = []
        cols: dict[o3.Irrep, list[int]] = {ir: [] for ir in outs}
        k0 = 0
        for l1, (_, ps1) in b1.items():
            for l2, (_, ps2) in b2.items():
                if square and l2 < l1 and not ordered:
                    continue
                l3s = [l3 for l3 in range(abs(l1 - l2), min(l1 + l2, maxl) + 1)
                       if any(ir.l == l3 for ir in outs)]
                if not l3s:
                    continue
                d1, d2 = 2 * l1 + 1, 2 * l2 + 1
                cg = torch.cat([coupling(l1, l2, l3, dtype=torch.float64) for l3 in l3s], dim=2)
                k_pair = cg.shape[2]
                cg = cg.reshape(d1 * d2, k_pair).t().contiguous()  # [K, d1 d2]
                self.register_buffer(f"cg_{len(self.pairs)}", cg.to(torch.get_default_dtype()),
                                     False)
                P1, P2 = len(ps1), len(ps2)
                self.pairs.append((deg1.index(l1), deg2.index(l2), P1, P2, d1, d2, k_pair))
                for a, p1 in enumerate(ps1):
                    for b, p2 in enumerate(ps2):
                        if square and l1 == l2 and b < a and not ordered:
                            continue  # same as (b, a) up to a sign
                        off = 0
                        for l3 in l3s:
                            ir = o3.Irrep(l3, p1 * p2)
                            if ir in cols and not (square and l1 == l2 and a == b and l3 % 2):
                                base = k0 + (a * P2 + b) * k_pair + off
                                cols[ir] += list(range(base, base + 2 * l3 + 1))
                            off += 2 * l3 + 1
                k0 += P1 * P2 * k_pair
        self.num_out = k0
        self.out_irreps = [ir for ir in outs if cols[ir]]
        self.groups = {ir: len(cols[ir]) // ir.dim for ir in self.out_irreps}
        self.out_sizes = [len(cols[ir]) for ir in self.out_irreps]
        all_cols = [c for ir in self.out_irreps for c in cols[ir]]
        self.register_buffer("cols", torch.tensor(all_cols, dtype=torch.long), False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        M, C = x.shape[1], x.shape[2]
        xs = torch.split(x, self.split1, dim=0)  # per degree [P1 d1, M, C]
        ys = torch.split(y, self.split2, dim=0)
        out = []
        for k, (i1, i2, P1, P2, d1, d2, K) in enumerate(self.pairs):
            cg = getattr(self, f"cg_{k}").to(x.dtype)  # [K, d1 d2]
            a = xs[i1].reshape(P1, 1, d1, 1, M * C)
            b = ys[i2].reshape(1, P2, 1, d2, M * C)
            outer = (a * b).view(P1 * P2, d1 * d2, M * C)  # [P1 P2, d1 d2, M C]
            out.append(torch.matmul(cg, outer).view(P1 * P2 * K, M, C))
        z = torch.cat(out, dim=0).index_select(0, self.cols)  # [sum G d, M, C]
        parts = torch.split(z, self.out_sizes, dim=0)
        return [p.view(-1, ir.dim, M, C) for p, ir in zip(parts, self.out_irreps)]


class RadialBasis(nn.Module):
    """Cormorant-style radial functions: ``(r / r0)^-k * {sin, cos}(2 pi f_n r + phi_n)``,
    ``k = 0..num_pow - 1``, learnable ``f_n`` (1/Å) and ``phi_n``.
    Shapes: ``r [E]`` (Å) -> ``[E, 2 * num_pow * num_trig]``."""

    def __init__(self, num_pow: int, num_trig: int, r0: float):
        super().__init__()
        self.freq = nn.Parameter(torch.linspace(0.0, 1.0, num_trig) / r0)
        self.phase = nn.Parameter(torch.zeros(num_trig))
        self.register_buffer("powers", torch.arange(num_pow, dtype=torch.get_default_dtype()))
        self.r0 = float(r0)
        self.num_out = 2 * num_pow * num_trig

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        arg = 2 * math.pi * r[:, None] * self.freq + self.phase  # [E, T]
        trig = torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)  # [E, 2T]
        pw = (r[:, None] / self.r0).pow(-self.powers.to(r.dtype))  # [E, P]
        return (pw[:, :, None] * trig[:, None, :]).reshape(r.shape[0], -1)  # [E, 2PT]


def _irrep_sum_matrix(irreps: o3.Irreps) -> torch.Tensor:
    """``[n_irreps, D]`` 0/1 matrix summing each irrep's components."""
    m = torch.zeros(len(irreps), irreps.dim // irreps[0].mul)
    start = 0
    for k, (_, ir) in enumerate(irreps):
        m[k, start : start + ir.dim] = 1.0
        start += ir.dim
    return m


def invariant_scalars(irreps: o3.Irreps, x: torch.Tensor) -> torch.Tensor:
    """Invariants per channel of ``x [D, N, C]``: the ``0e`` part and the squared norms of
    every irrep (``0e`` included, as Cormorant takes the ``l = 0`` parts and the magnitudes
    of every ``l``): ``-> [N, num_invariant_scalars(irreps)]``. ``irreps[0]`` must be 0e."""
    D, N, C = x.shape
    norms = _irrep_sum_matrix(irreps).to(x.dtype) @ (x * x).view(D, N * C)  # [n_irr, N C]
    norms = norms.view(-1, N, C).transpose(0, 1).reshape(N, -1)  # [N, n_irr C]
    return torch.cat([x[0], norms], dim=1)


def num_invariant_scalars(irreps: o3.Irreps) -> int:
    """Length of :func:`invariant_scalars`' output."""
    return irreps[0].mul * (1 + len(irreps))


class CGLevel(nn.Module):
    """One Cormorant CG level: edge level then atom level (see the module docstring).

    Shapes: ``forward(h [D_in, N, C], edge_prev [E, n_edge_in] | None, sh [E, D_Y],
    radial [E, n_rad], lengths [E], edge_index [2, E])`` -> ``(h_new [D_out, N, C],
    edge [E, (max_sh + 1) * C])``.
    """

    def __init__(self, irreps_in: o3.Irreps, irreps_out: o3.Irreps, max_sh: int,
                 num_edge_in: int, num_radial: int, soft_cut_rad: float, soft_cut_width: float,
                 avg_num_neighbors: float, ordered_square: bool = True,
                 level_gain: float = 1.0):
        super().__init__()
        C = irreps_out[0].mul
        gain = float(level_gain)
        self.irreps_in, self.irreps_out, self.channels = irreps_in, irreps_out, C
        # edge level
        self.num_edge = (max_sh + 1) * C
        self.edge_linear = nn.Linear(num_edge_in + C * len(irreps_in) + num_radial,
                                     self.num_edge)
        self.cut_rad = nn.Parameter(torch.full((self.num_edge,), float(soft_cut_rad)))
        self.cut_width = nn.Parameter(torch.full((self.num_edge,), float(soft_cut_width)))
        self.register_buffer("dot_sum", _irrep_sum_matrix(irreps_in), False)
        # atom level: channelwise CG square and CG product with the edge reps (g Y)
        self.irreps_edge = o3.Irreps([(C, (l, (-1) ** l)) for l in range(max_sh + 1)])
        self.square = ChannelwiseCG(irreps_in, irreps_in, irreps_out, True, ordered_square)
        self.aggregate = ChannelwiseCG(self.irreps_edge, irreps_in, irreps_out)
        degree = [l for l in range(max_sh + 1) for _ in range(2 * l + 1)]
        self.register_buffer("sh_degree", torch.tensor(degree, dtype=torch.long), False)
        # CatMix: one weight matrix per output irrep over [h, square groups, aggregate groups]
        in_labels = {ir for _, ir in irreps_in}
        self.mix = nn.ParameterList()
        self.mix_groups = []
        for _, ir in irreps_out:
            g = (ir in in_labels) + self.square.groups.get(ir, 0) + self.aggregate.groups.get(
                ir, 0)
            if g == 0:
                raise ValueError(f"CG level: output irrep {ir} cannot be produced from {irreps_in}")
            weight = torch.randn(C, g, C) * (gain / math.sqrt(C * g))  # [o, g, c]
            self.mix.append(nn.Parameter(weight))
            self.mix_groups.append(g)
        self.inv_neighbors = 1.0 / float(avg_num_neighbors)

    def forward(self, h, edge_prev, sh, radial, lengths, edge_index):
        sender, receiver = edge_index[0], edge_index[1]
        D, N, C = h.shape
        E = sender.shape[0]
        h_s, h_r = h.index_select(1, sender), h.index_select(1, receiver)  # [D, E, C]
        dots = self.dot_sum.to(h.dtype) @ (h_r * h_s).view(D, E * C)  # [n_irreps, E C]
        dots = dots.view(-1, E, C).transpose(0, 1).reshape(E, -1)  # [E, n_irreps C]
        parts = [dots, radial] if edge_prev is None else [edge_prev, dots, radial]
        cut = torch.sigmoid((self.cut_rad - lengths[:, None]) / self.cut_width)  # [E, n_edge]
        edge = cut * self.edge_linear(torch.cat(parts, dim=1))  # [E, (max_sh+1) C]
        g = edge.view(E, -1, C).transpose(0, 1).index_select(0, self.sh_degree)  # [DY, E, C]
        edge_rep = g * sh.t()[:, :, None]  # [DY, E, C]
        messages = self.aggregate(edge_rep, h_s)  # per output irrep [G, d, E, C]
        sizes = [m.shape[0] * m.shape[1] for m in messages]
        messages = torch.cat([m.reshape(-1, E, C) for m in messages], dim=0)  # [K_agg, E, C]
        agg = messages.new_zeros(messages.shape[0], N, C).index_add_(1, receiver, messages)
        agg = dict(zip(self.aggregate.out_irreps,
                       torch.split(agg * self.inv_neighbors, sizes, dim=0)))
        sq = dict(zip(self.square.out_irreps, self.square(h, h)))
        h_parts = dict(zip([ir for _, ir in self.irreps_in],
                           torch.split(h, [ir.dim for _, ir in self.irreps_in], dim=0)))
        outs = []
        for (_, ir), w in zip(self.irreps_out, self.mix):
            groups = []
            if ir in h_parts:
                groups.append(h_parts[ir].unsqueeze(0))
            if ir in sq:
                groups.append(sq[ir])
            if ir in agg:
                groups.append(agg[ir].view(-1, ir.dim, N, C))
            cat = torch.cat(groups, dim=0) if len(groups) > 1 else groups[0]  # [G, d, N, C]
            G = cat.shape[0]
            x = cat.permute(1, 2, 0, 3).reshape(ir.dim * N, G * C)  # [d N, G C]
            outs.append((x @ w.view(C, G * C).t()).view(ir.dim, N, -1))  # [d, N, C_out]
        return torch.cat(outs, dim=0), edge


def _layout_slices(irreps: o3.Irreps) -> list[slice]:
    out, start = [], 0
    for _, ir in irreps:
        out.append(slice(start, start + ir.dim))
        start += ir.dim
    return out


class Cormorant(nn.Module):
    """Cormorant energy model: ``forward(batch, compute_forces) -> {"energy" [B] (eV),
    "forces" [A, 3] (eV/Å) | None}``. Batches in mace-torch's layout (GraphLoader).

    ``extra_terms``: optional modules (one per level) adding
    ``term(h_in [D_in, N, C], edge_index, species, edge_vectors) -> [D_out, N, C]`` to each
    atom level's output (the fusion variant's 3-body blocks).
    """

    def __init__(self, hp: dict, stats: ModelStats, extra_terms: nn.ModuleList | None = None):
        super().__init__()
        C, maxl, S = int(hp["num_channels"]), int(hp["maxl"]), int(hp["num_cg_levels"])
        n_el = len(stats.elements)
        self.hparams = dict(hp)
        self.charge_power = int(hp["charge_power"])
        z = torch.tensor(stats.elements, dtype=torch.get_default_dtype())
        self.register_buffer("charges", z / z.max(), False)  # [n_el], Z / Z_max
        self.input_linear = nn.Linear(n_el * (self.charge_power + 1), C)
        self.irreps_levels = [o3.Irreps(f"{C}x0e")]
        self.sh = o3.SphericalHarmonics(
            list(range(int(hp["max_sh"]) + 1)), normalize=True, normalization="component"
        )
        self.radial = nn.ModuleList()
        self.levels = nn.ModuleList()
        num_edge = 0
        for _ in range(S):
            out = level_irreps(self.irreps_levels[-1], C, maxl, int(hp["max_sh"]), hp["parity"])
            rad = RadialBasis(int(hp["basis_pow"]), int(hp["basis_trig"]),
                              float(hp["soft_cut_rad"]))
            level = CGLevel(self.irreps_levels[-1], out, int(hp["max_sh"]), num_edge,
                            rad.num_out, float(hp["soft_cut_rad"]), float(hp["soft_cut_width"]),
                            max(float(stats.avg_num_neighbors), 1e-6),
                            hp["square_pairs"] == "ordered", float(hp["level_gain"]))
            self.radial.append(rad)
            self.levels.append(level)
            self.irreps_levels.append(out)
            num_edge = level.num_edge
        if extra_terms is not None and len(extra_terms) != S:
            raise ValueError(f"need one extra term per CG level ({S}), got {len(extra_terms)}")
        self.extra_terms = extra_terms
        self.num_scalars = sum(num_invariant_scalars(ir) for ir in self.irreps_levels)
        hidden = hp["readout_hidden"] or self.num_scalars
        self.readout = nn.Sequential(
            nn.Linear(self.num_scalars, hidden), _ACTIVATIONS[hp["activation"]](),
            nn.Linear(hidden, 1),
        )
        self.register_buffer(
            "atomic_energies", torch.as_tensor(stats.atomic_energies,
                                               dtype=torch.get_default_dtype()), False
        )
        self.scale, self.shift = float(stats.scale), float(stats.shift)

    def features(self, batch: dict, positions: torch.Tensor) -> list[torch.Tensor]:
        """Atom features of every level, internal layout:
        ``[F^0 [1, N, C], F^1 [D_1, N, C], ...]`` (irreps ``self.irreps_levels``)."""
        node_attrs, edge_index = batch["node_attrs"], batch["edge_index"]
        sender, receiver = edge_index[0], edge_index[1]
        vectors = positions.index_select(0, receiver) - positions.index_select(0, sender)
        lengths = torch.linalg.norm(vectors, dim=1)  # [E], Å
        sh = self.sh(vectors)  # [E, (max_sh+1)^2]
        z = node_attrs @ self.charges.to(node_attrs.dtype)  # [N], Z / Z_max
        powers = torch.stack([z**k for k in range(self.charge_power + 1)], dim=1)  # [N, P]
        x = (node_attrs[:, :, None] * powers[:, None, :]).flatten(1)  # [N, n_el * P]
        h = self.input_linear(x).unsqueeze(0)  # [1, N, C] (C x 0e)
        feats, edge = [h], None
        species = node_attrs.argmax(dim=1)
        for s, (level, rad) in enumerate(zip(self.levels, self.radial)):
            h_new, edge = level(h, edge, sh, rad(lengths), lengths, edge_index)
            if self.extra_terms is not None:
                h_new = h_new + self.extra_terms[s](h, edge_index, species, vectors)
            h = h_new
            feats.append(h)
        return feats

    def forward(self, batch: dict[str, torch.Tensor], compute_forces: bool = False) -> dict:
        positions = batch["positions"]
        if compute_forces and not positions.requires_grad:
            positions = positions.detach().requires_grad_(True)
        feats = self.features(batch, positions)
        scalars = torch.cat(
            [invariant_scalars(ir, f) for ir, f in zip(self.irreps_levels, feats)], dim=1
        )  # [N, num_scalars]
        out = self.readout(scalars).squeeze(-1)  # [N], normalised per-atom residual
        node_attrs, graph = batch["node_attrs"], batch["batch"]
        e0 = node_attrs @ self.atomic_energies.to(node_attrs.dtype)  # [N], eV
        node_e = e0 + self.scale * out + self.shift
        n_graphs = batch["ptr"].shape[0] - 1
        energy = node_e.new_zeros(n_graphs).index_add_(0, graph, node_e)  # [B], eV
        forces = None
        if compute_forces:
            (grad,) = torch.autograd.grad(
                energy.sum(), positions, create_graph=self.training, retain_graph=self.training
            )
            forces = -grad  # [A, 3], eV/Å
        return {"energy": energy, "forces": forces}


# --------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------
def build_cormorant(hparams: dict, stats: ModelStats) -> Cormorant:
    """``cormorant/baseline`` from ``hparams`` (merged over :data:`CORMORANT_DEFAULTS`)."""
    return Cormorant(cormorant_hparams(hparams, "baseline"), stats)


def _base_keys(hp: dict) -> dict:
    return {k: v for k, v in hp.items() if k in CORMORANT_DEFAULTS}


class PaddedTerm(nn.Module):
    """A FusionBlock (e3nn layout) on internal-layout features, its outputs (a subset of the
    level's irreps) written into the level's layout, zeros elsewhere.
    Shapes: ``forward(h [D_in, N, C], edge_index [2, E], species [N], edge_vectors [E, 3])``
    -> ``[D_out, N, C]``."""

    def __init__(self, block: nn.Module, irreps_in: o3.Irreps, irreps_out: o3.Irreps):
        super().__init__()
        self.block = block
        self.irreps_in = irreps_in
        self.dim = sum(ir.dim for _, ir in irreps_out)
        where = {ir: sl for (_, ir), sl in zip(irreps_out, _layout_slices(irreps_out))}
        cols = [torch.arange(where[ir].start, where[ir].stop) for _, ir in block.irreps_out]
        self.register_buffer("cols", torch.cat(cols), False)
        self.block_irreps = block.irreps_out

    def forward(self, h, edge_index, species, edge_vectors):
        out = self.block(to_e3nn(self.irreps_in, h), edge_index, species,
                         edge_vectors=edge_vectors)
        out = from_e3nn(self.block_irreps, out)  # [D_block, N, C]
        return out.new_zeros(self.dim, out.shape[1], out.shape[2]).index_copy(0, self.cols, out)


def _fusion_terms(hp: dict, stats: ModelStats, C: int) -> nn.ModuleList:
    """One exact 3-body FusionBlock per CG level: ``sum_{j != k} Tree(h_i, m_ij, m_ik)`` with
    the level's input features ``h`` as a leaf, into the level's output irreps it can reach."""
    from fusion.blocks.fusion_block import FusionBlock
    from fusion.diagrams import FusionDiagram
    from fusion.models.mace_fusion import _sparse_contraction

    terms = []
    irreps_prev = o3.Irreps(f"{C}x0e")
    lmax_sh, L_int = int(hp["fusion_lmax_sh"]), hp["fusion_L_int"]
    sh_labels = "+".join(str(o3.Irrep(l, (-1) ** l)) for l in range(lmax_sh + 1))
    for _ in range(int(hp["num_cg_levels"])):
        out = level_irreps(irreps_prev, C, int(hp["maxl"]), int(hp["max_sh"]), hp["parity"])
        h_labels = "+".join(str(ir) for _, ir in irreps_prev)
        diagram = FusionDiagram("((h, A), A)", {"h": h_labels, "A": sh_labels}, "0e", L_int)
        reach = set(diagram.reachable[diagram.tree.root])
        block = FusionBlock(
            h_labels,
            "+".join(str(ir) for _, ir in out if ir in reach),
            channels=C,
            nu=3,
            mode="exact",
            lmax_sh=lmax_sh,
            L_int=L_int,
            weights="path",
            num_species=None,
            r_max=float(hp["r_max"]),
            num_bessel=int(hp["fusion_num_bessel"]),
            radial_mlp=[int(d) for d in hp["fusion_radial_MLP"]],
            avg_num_neighbors=max(float(stats.avg_num_neighbors), 1e-6),
        )
        terms.append(PaddedTerm(_sparse_contraction(block), irreps_prev, out))
        irreps_prev = out
    return nn.ModuleList(terms)


def _build_fusion(hp: dict, stats: ModelStats, C: int) -> Cormorant:
    base = {**_base_keys(hp), "num_channels": C}
    return Cormorant(base, stats, _fusion_terms(hp, stats, C))


def choose_fusion_width(hparams: dict, stats: ModelStats) -> tuple[int, int, int]:
    """Largest channel count ``C`` whose ``cormorant/fusion`` has <= the parameters of
    ``cormorant/baseline`` at the same other hyperparameters (width ``num_channels``).
    Returns ``(C, n_params_fusion(C), n_params_baseline)``; counts are monotone in C, so a
    downward search from the baseline width builds only a few models."""
    hp = cormorant_hparams(hparams, "fusion")
    budget = count_parameters(Cormorant(_base_keys(hp), stats))
    for C in range(int(hp["num_channels"]), 0, -1):
        n = count_parameters(_build_fusion(hp, stats, C))
        if n <= budget:
            return C, n, budget
    raise ValueError(
        f"cormorant/fusion has more parameters than the baseline ({budget}) even at 1 channel"
    )


@register("cormorant", "baseline", defaults=CORMORANT_DEFAULTS)
def build_cormorant_baseline(hparams: dict, stats: ModelStats) -> nn.Module:
    """cormorant/baseline: Cormorant as published, on e3nn (see module docstring)."""
    return build_cormorant(hparams, stats)


@register("cormorant", "fusion", defaults=CORMORANT_DEFAULTS)
def build_cormorant_fusion(hparams: dict, stats: ModelStats) -> nn.Module:
    """cormorant/fusion: baseline + an exact 3-body FusionBlock in every atom level, at the
    largest width with parameters <= the baseline's (``model.fusion_info``)."""
    hp = cormorant_hparams(hparams, "fusion")
    C0 = int(hp["num_channels"])
    n_base = count_parameters(Cormorant(_base_keys(hp), stats))
    if hp["fusion_num_channels"] is None:
        C, _, _ = choose_fusion_width(hparams, stats)
        how = "auto"
    else:
        C, how = int(hp["fusion_num_channels"]), "fixed"
    model = _build_fusion(hp, stats, C)
    model.fusion_info = {
        "variant": "fusion",
        "num_channels": C,
        "n_params": count_parameters(model),
        "num_channels_baseline": C0,
        "n_params_baseline": n_base,
        "width": how,
    }
    return model
