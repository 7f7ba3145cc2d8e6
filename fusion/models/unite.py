"""UNiTE-style network on GFN2-xTB atomic-orbital tensors, with Equivariant Normalization.

Inputs (batches of :class:`fusion.data.xtb_features.XtbGraphLoader`): per-atom irreps from
the diagonal AO blocks of S, H, P, F (``node_feats`` [A, D_node]) and per-edge irreps from
the off-diagonal blocks (``edge_feats`` [E, D_edge], both directions, ``edge_index`` [2, E]
with row 0 the sender j and row 1 the receiver i). Layouts: :func:`feature_layout` with
``lmax`` (hparam, 1 for QM9 elements).

``unite/baseline``:

1. ``h_i = Linear(EvNorm(node_feats_i)) + Linear(one_hot(Z_i))`` -> ``C x hidden labels``;
   ``e_ij = Linear(EvNorm(edge_feats_ij))`` -> ``C x hidden labels``.
2. ``T`` interactions: ``m_ij = TP_uuu(h_j, e_ij)`` (channelwise CG product, one weight per
   path and channel), ``a_i = sum_j m_ij / avg_num_neighbors``,
   ``h_i <- EvNormGate(h_i + Linear(a_i))``. Everything is linear in ``e_ij`` and
   ``EvNorm(0) = 0``, so an edge whose AO blocks are zero contributes nothing: dropping
   such pairs (the sparse feature path) changes nothing and cost is linear in the kept
   pairs.
3. Energy: ``E = sum_i (scale * MLP(scalars of h_i) + E0[Z_i])`` in eV, ``E0`` the
   per-element composition fit from the training data (``ModelStats``).

``unite/fusion`` adds, in every interaction, a 3-body :class:`MessageFusion`
(``Tree(h_i, A_i, A_i)``, density mode, ``A_i = sum_j m_ij``) to the update, with the
channel count lowered until the parameter count is <= the baseline's (``fusion_info``).

**Equivariant Normalization** (:class:`EvNorm`): for every irrep channel ``x`` [2l+1],
``n = sqrt(|x|^2 + eps^2)`` is invariant and ``x / n`` a direction; ``n`` is normalised
with batch statistics (running averages at evaluation, like batch norm) and a learnable
affine ``gamma, beta`` per channel; the output ``(gamma (n - mu) / sigma + beta) * x / n``
is equivariant. :class:`EvNormGate` applies SiLU to the normalised invariant instead.
"""

from __future__ import annotations

import fusion._mace_first  # noqa: F401  (mace before e3nn)

# isort: split

import torch
from e3nn import o3
from torch import nn

from fusion.models.registry import ModelStats, count_parameters, register

__all__ = ["EvNorm", "EvNormGate", "UniteModel", "baseline_parameter_count", "build_unite_baseline",
           "build_unite_fusion"]

DEFAULTS = {
    "lmax": 1,  # largest shell l of the elements' GFN2-xTB basis (1 for H, C, N, O, F)
    "num_channels": 16,
    "hidden_labels": "0e+1o+1e+2e",
    "num_interactions": 2,
    "readout_hidden": 16,
    "evnorm_eps": 1e-3,
    "evnorm_momentum": 0.1,
    "avg_num_neighbors": None,  # None: stats.avg_num_neighbors
    "fusion_L_int": 2,
}


class EvNorm(nn.Module):
    """Equivariant Normalization of an e3nn irreps tensor ``[N, irreps.dim]``.

    Per channel (one ``(mul, l)`` copy): invariant ``n = sqrt(|x|^2 + eps^2)`` and
    direction ``x / n``; ``n`` is standardised with batch statistics in training (running
    mean/variance, ``momentum``, used in evaluation) and mapped by a learnable affine
    ``gamma * . + beta``. ``forward`` returns ``(invariant [N, n_channels], direction
    [N, irreps.dim])``; :meth:`recombine` multiplies them back. ``eps`` is in the unit of
    ``x``. A zero input gives a zero output.
    """

    def __init__(self, irreps, eps: float = 1e-3, momentum: float = 0.1, affine: bool = True):
        super().__init__()
        self.irreps = o3.Irreps(irreps)
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.num_channels = sum(mul for mul, _ in self.irreps)
        channel_of, index = [], 0
        for mul, ir in self.irreps:
            for _ in range(mul):
                channel_of += [index] * ir.dim
                index += 1
        # column -> channel (layout [N, mul * (2l+1)] per irrep, channel-major within it)
        self.register_buffer("channel_of", torch.tensor(channel_of, dtype=torch.long), False)
        self.register_buffer("running_mean", torch.zeros(self.num_channels))
        self.register_buffer("running_var", torch.ones(self.num_channels))
        self.affine = affine
        if affine:
            self.gamma = nn.Parameter(torch.ones(self.num_channels))
            self.beta = nn.Parameter(torch.zeros(self.num_channels))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 2 or x.shape[1] != self.irreps.dim:
            raise ValueError(f"EvNorm: expected [N, {self.irreps.dim}] for irreps {self.irreps}, "
                             f"got {list(x.shape)}")
        sq = x.new_zeros(x.shape[0], self.num_channels).index_add_(1, self.channel_of, x * x)
        norm = torch.sqrt(sq + self.eps**2)  # [N, channels]
        direction = x / norm.index_select(1, self.channel_of)  # [N, dim]
        if self.training and x.shape[0] > 1:
            mean = norm.mean(0)
            var = norm.var(0, unbiased=False)
            with torch.no_grad():
                m = self.momentum
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach())
        else:
            mean, var = self.running_mean, self.running_var
        inv = (norm - mean) / torch.sqrt(var + self.eps**2)
        if self.affine:
            inv = inv * self.gamma + self.beta
        return inv, direction

    def recombine(self, inv: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
        """``inv`` [N, channels] times ``direction`` [N, dim] -> [N, dim]."""
        return inv.index_select(1, self.channel_of) * direction

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``recombine(*forward(x))``: the normalised equivariant tensor."""
        return self.recombine(*self(x))


class EvNormGate(EvNorm):
    """Nonlinearity: ``SiLU(normalised invariant) * direction`` per channel."""

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        inv, direction = self(x)
        return self.recombine(nn.functional.silu(inv), direction)


def _uuu_tensor_product(labels: o3.Irreps, channels: int) -> o3.TensorProduct:
    """Channelwise CG product ``C x labels (x) C x labels -> C x labels``, one weight per
    (path, channel)."""
    irreps = o3.Irreps([(channels, ir) for _, ir in labels])
    instructions = []
    for i1, (_, a) in enumerate(irreps):
        for i2, (_, b) in enumerate(irreps):
            for io, (_, c) in enumerate(irreps):
                if c in a * b:
                    instructions.append((i1, i2, io, "uuu", True))
    return o3.TensorProduct(irreps, irreps, irreps, instructions, internal_weights=True,
                            shared_weights=True)


class UniteModel(nn.Module):
    """See the module docstring. ``forward(batch, compute_forces)`` -> ``{"energy": [B] eV,
    "forces": None}`` (forces need d(features)/d(positions), which xTB features do not
    carry; ``compute_forces=True`` raises)."""

    def __init__(self, hparams: dict, stats: ModelStats, fusion: bool = False):
        super().__init__()
        from fusion.data.xtb_features import feature_layout, layout_irreps

        unknown = sorted(set(hparams) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"unite: unknown hparams {unknown}; valid: {sorted(DEFAULTS)}")
        hp = {**DEFAULTS, **hparams}
        self.hparams = hp
        C = int(hp["num_channels"])
        labels = o3.Irreps(hp["hidden_labels"])
        if any(mul != 1 for mul, _ in labels) or labels[0][1] != o3.Irrep("0e"):
            raise ValueError(f"unite: hidden_labels {hp['hidden_labels']!r} must list labels "
                             "once each, starting with 0e")
        self.lmax = int(hp["lmax"])
        self.irreps_node_in = o3.Irreps(layout_irreps(feature_layout(self.lmax, True)))
        self.irreps_edge_in = o3.Irreps(layout_irreps(feature_layout(self.lmax, False)))
        self.irreps_hidden = o3.Irreps([(C, ir) for _, ir in labels])
        self.channels = C
        n_el = len(stats.elements)
        self.elements = tuple(stats.elements)
        eps, mom = float(hp["evnorm_eps"]), float(hp["evnorm_momentum"])
        avg = hp["avg_num_neighbors"]
        self.avg_num_neighbors = float(stats.avg_num_neighbors if avg is None else avg) or 1.0

        self.node_norm = EvNorm(self.irreps_node_in, eps, mom)
        self.edge_norm = EvNorm(self.irreps_edge_in, eps, mom)
        self.node_embed = o3.Linear(self.irreps_node_in, self.irreps_hidden)
        self.species_embed = nn.Linear(n_el, C, bias=False)
        self.edge_embed = o3.Linear(self.irreps_edge_in, self.irreps_hidden)
        T = int(hp["num_interactions"])
        self.products = nn.ModuleList(_uuu_tensor_product(labels, C) for _ in range(T))
        self.updates = nn.ModuleList(
            o3.Linear(self.irreps_hidden, self.irreps_hidden) for _ in range(T))
        self.gates = nn.ModuleList(EvNormGate(self.irreps_hidden, eps, mom) for _ in range(T))
        self.fusions = nn.ModuleList()
        if fusion:
            from fusion.blocks.fusion_block import MessageFusion

            for _ in range(T):
                self.fusions.append(MessageFusion(
                    self.irreps_hidden, self.irreps_hidden, [ir for _, ir in labels],
                    channels=C, nu=3, mode="density", L_int=int(hp["fusion_L_int"]),
                    weights="path"))
        H = int(hp["readout_hidden"])
        self.readout = nn.Sequential(nn.Linear(C, H), nn.SiLU(), nn.Linear(H, 1))
        self.register_buffer("atomic_energies",
                             torch.as_tensor(stats.atomic_energies, dtype=torch.float64))
        self.scale = float(stats.scale)
        self.shift = float(stats.shift)

    def forward(self, batch: dict, compute_forces: bool = False) -> dict:
        if compute_forces:
            raise ValueError("unite: forces are not available (the xTB features carry no "
                             "position derivatives); train on energies only (forces_weight 0)")
        node_in, edge_in = batch["node_feats"], batch["edge_feats"]
        for name, x, irreps in (("node_feats", node_in, self.irreps_node_in),
                                ("edge_feats", edge_in, self.irreps_edge_in)):
            if x.dim() != 2 or x.shape[1] != irreps.dim:
                raise ValueError(f"unite: batch[{name!r}] has shape {list(x.shape)}; expected "
                                 f"[*, {irreps.dim}] (xTB features with lmax = {self.lmax})")
        sender, receiver = batch["edge_index"][0], batch["edge_index"][1]
        attrs = batch["node_attrs"]  # [A, n_elements]
        n = node_in.shape[0]
        h = self.node_embed(self.node_norm.normalize(node_in))  # [A, hidden.dim]
        h = torch.cat([h[:, :self.channels] + self.species_embed(attrs),
                       h[:, self.channels:]], dim=1)
        e = self.edge_embed(self.edge_norm.normalize(edge_in))  # [E, hidden.dim]
        for k in range(len(self.products)):
            m = self.products[k](h.index_select(0, sender), e)  # [E, hidden.dim]
            a = m.new_zeros(n, m.shape[1]).index_add_(0, receiver, m) / self.avg_num_neighbors
            update = self.updates[k](a)
            if len(self.fusions):
                update = update + self.fusions[k](h, m / self.avg_num_neighbors, receiver)
            h = self.gates[k].gate(h + update)
        atom_energy = self.readout(h[:, :self.channels]).squeeze(-1) * self.scale + self.shift
        atom_energy = atom_energy + attrs @ self.atomic_energies.to(attrs.dtype)
        n_graphs = batch["ptr"].shape[0] - 1
        energy = atom_energy.new_zeros(n_graphs).index_add_(0, batch["batch"], atom_energy)
        return {"energy": energy, "forces": None}


def baseline_parameter_count(hparams: dict, n_elements: int) -> int:
    """Closed-form trainable parameter count of ``unite/baseline`` (checked against the
    built model in the tests); the fusion builder uses it to choose its width without
    building (slow, e3nn code generation) candidate models."""
    from fusion.data.xtb_features import feature_layout

    hp = {**DEFAULTS, **hparams}
    C, H, T = int(hp["num_channels"]), int(hp["readout_hidden"]), int(hp["num_interactions"])
    labels = [ir for _, ir in o3.Irreps(hp["hidden_labels"])]

    def parity(l1, l2):
        return (-1) ** (l1 + l2)

    node = [o3.Irrep(L, parity(l1, l2)) for _, l1, l2, L in feature_layout(int(hp["lmax"]), True)]
    edge = [o3.Irrep(L, parity(l1, l2)) for _, l1, l2, L in feature_layout(int(hp["lmax"]), False)]
    n_paths = sum(1 for a in labels for b in labels for c in labels if c in a * b)
    return (
        2 * len(node) + 2 * len(edge)  # input EvNorm affine
        + C * sum(1 for ir in node if ir in labels)  # node embedding
        + n_elements * C  # species embedding
        + C * sum(1 for ir in edge if ir in labels)  # edge embedding
        + T * (n_paths * C + len(labels) * C * C + 2 * len(labels) * C)  # TP, linear, gate
        + C * H + H + H + 1  # readout MLP
    )


@register("unite", "baseline")
def build_unite_baseline(hparams: dict, stats: ModelStats) -> UniteModel:
    """UNiTE baseline (hparams: see ``DEFAULTS``)."""
    return UniteModel(hparams, stats, fusion=False)


@register("unite", "fusion")
def build_unite_fusion(hparams: dict, stats: ModelStats) -> UniteModel:
    """UNiTE + a 3-body FusionBlock per interaction, with ``num_channels`` lowered until the
    parameter count is <= the baseline's at the given hparams (``model.fusion_info``).

    The fusion blocks' parameter count is affine in the channel count (one weight per path
    and channel); it is measured at 1 and 2 channels, the rest of the model is counted in
    closed form (:func:`baseline_parameter_count`), and the built model's count checked.
    """
    from fusion.blocks.fusion_block import MessageFusion

    hp = {**DEFAULTS, **hparams}
    n_el = len(stats.elements)
    baseline = baseline_parameter_count(hparams, n_el)
    labels = [ir for _, ir in o3.Irreps(hp["hidden_labels"])]

    def block_params(c: int) -> int:
        block = MessageFusion(o3.Irreps([(c, ir) for ir in labels]),
                              o3.Irreps([(c, ir) for ir in labels]), labels, channels=c, nu=3,
                              mode="density", L_int=int(hp["fusion_L_int"]), weights="path")
        return count_parameters(block)

    one, two = block_params(1), block_params(2)
    n_blocks = int(hp["num_interactions"])
    channels = int(hp["num_channels"])
    while channels >= 1:
        predicted = baseline_parameter_count({**hparams, "num_channels": channels}, n_el) \
            + n_blocks * (one + (two - one) * (channels - 1))
        if predicted <= baseline:
            model = UniteModel({**hparams, "num_channels": channels}, stats, fusion=True)
            n_params = count_parameters(model)
            if n_params <= baseline:
                model.fusion_info = {"num_channels": channels, "n_params": n_params,
                                     "n_params_baseline": baseline}
                return model
        channels -= 1
    raise ValueError("unite/fusion: no channel count gives <= the baseline's parameters")
