"""The Cormorant QM9 model (``cormorant/baseline``) and its hyperparameters."""

from __future__ import annotations

import torch
from torch import nn

from fusion.models.cormorant.layers import (
    AtomLevel,
    EdgeLevel,
    InputMPNN,
    OutputPMLP,
    RadialBasis,
    dot_products,
    invariants,
)
from fusion.models.cormorant.so3 import solid_harmonics
from fusion.models.registry import ModelStats

__all__ = ["CORMORANT_DEFAULTS", "FUSION_DEFAULTS", "Cormorant", "cormorant_hparams", "pad_batch"]

# The reference code's defaults for its QM9 model (risilab/cormorant, CormorantQM9 and the
# command-line defaults of its train_qm9 script).
CORMORANT_DEFAULTS: dict = {
    "num_cg_levels": 4,  # CG levels (edge level + atom level each)
    "maxl": 3,  # largest degree of atom features
    "max_sh": 3,  # largest degree of the solid harmonics on edges
    "num_channels": 10,  # complex channels per degree
    "charge_power": 2,  # input scalars: onehot x (Z / Z_max)^k, k = 0..charge_power
    "r_max": 1.73,  # hard cutoff of the input MPNN, Å (the CG levels see every pair)
    "soft_cut_rad": 1.73,  # soft cutoff radius, Å (fixed in the MPNN, learnable in the levels)
    "soft_cut_width": 0.2,  # soft cutoff width, Å
    "basis_trig": 3,  # radial basis: frequencies 0..basis_trig, sine and cosine each
    "basis_pow": 3,  # radial basis: powers r^-p, p = 0..basis_pow
    "level_gain": 10.0,  # atom-level mixing weights start uniform in +-gain / max(out, in)
    "input_cutoff": "hard",  # "hard" (reference: hard r_max and soft) or "soft" (soft only)
}

# Extra keys of cormorant/fusion.
FUSION_DEFAULTS: dict = {
    "fusion_num_channels": None,  # None: the largest width with params <= baseline
    "fusion_lmax_sh": 1,  # degrees of the edge representations fed to the 3-body tree
    "fusion_L_int": 1,  # cap on the internal degree of the tree ((F, e), e)
}


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
            "basis_pow": 0, "basis_trig": 0}
    if variant == "fusion":
        ints.update({"fusion_lmax_sh": 0, "fusion_L_int": 0})
    for key, minimum in ints.items():
        if not _is_int(hp[key], minimum):
            raise ValueError(
                f"cormorant/{variant} hyperparameter {key} must be an integer >= {minimum}, "
                f"got {hp[key]!r}"
            )
    for key in ("r_max", "soft_cut_rad", "soft_cut_width", "level_gain"):
        if isinstance(hp[key], bool) or not isinstance(hp[key], (int, float)) or hp[key] <= 0:
            raise ValueError(
                f"cormorant/{variant} hyperparameter {key} must be a positive number, "
                f"got {hp[key]!r}"
            )
    if hp["input_cutoff"] not in ("hard", "soft"):
        raise ValueError(
            f"cormorant/{variant} hyperparameter input_cutoff must be 'hard' or 'soft', "
            f"got {hp['input_cutoff']!r}"
        )
    if variant == "fusion":
        c = hp["fusion_num_channels"]
        if c is not None and not _is_int(c, 1):
            raise ValueError(
                "cormorant/fusion hyperparameter fusion_num_channels must be a positive "
                f"integer or null, got {c!r}"
            )
        if hp["fusion_lmax_sh"] > hp["max_sh"]:
            raise ValueError(
                f"cormorant/fusion hyperparameter fusion_lmax_sh ({hp['fusion_lmax_sh']}) must "
                f"be <= max_sh ({hp['max_sh']})"
            )
    return hp


def pad_batch(batch: dict, positions: torch.Tensor):
    """Graph-batch layout (``node_attrs [N, S]``, ``batch``, ``ptr``) -> padded
    ``positions [B, A, 3]``, ``onehot [B, A, S]``, ``atom_mask [B, A]`` and the flat index of
    every real atom in the padded layout (``[N]``)."""
    ptr = batch["ptr"]
    graph = batch["batch"]
    counts = ptr[1:] - ptr[:-1]
    B, A = counts.shape[0], int(counts.max())
    local = torch.arange(graph.shape[0], device=graph.device) - ptr[graph]
    flat = graph * A + local
    pos = positions.new_zeros(B * A, 3).index_copy(0, flat, positions).view(B, A, 3)
    attrs = batch["node_attrs"]
    onehot = attrs.new_zeros(B * A, attrs.shape[1]).index_copy(0, flat, attrs).view(B, A, -1)
    mask = torch.zeros(B * A, dtype=torch.bool, device=graph.device)
    mask[flat] = True
    return pos, onehot, mask.view(B, A), flat


class Cormorant(nn.Module):
    """Cormorant's QM9 network: ``forward(batch, compute_forces) -> {"energy" [B] (eV),
    "forces" [N, 3] | None}`` on batches in mace-torch's layout (the graph's edges are not
    used: every atom pair of a molecule, ``i = j`` included, is an edge).

    ``E = sum_i e0(Z_i) + scale * y + shift * n_atoms`` where ``y`` is the network's output
    (:meth:`predict`; the reference's prediction of the standardised target), ``e0`` the
    composition energies and ``scale`` / ``shift`` from :class:`ModelStats`.
    ``fusion``: optional modules, one per level, adding channels to each atom level (see
    :mod:`fusion.models.cormorant.fusion_term`).
    """

    def __init__(self, hp: dict, stats: ModelStats, fusion_terms: nn.ModuleList | None = None):
        super().__init__()
        C, maxl, S = int(hp["num_channels"]), int(hp["maxl"]), int(hp["num_cg_levels"])
        max_sh = int(hp["max_sh"])
        self.hparams = dict(hp)
        self.charge_power = int(hp["charge_power"])
        self.max_sh = max_sh
        n_species = len(stats.elements)
        z = torch.tensor(stats.elements, dtype=torch.get_default_dtype())
        self.register_buffer("charges", z / z.max(), False)  # [S], Z / Z_max
        self.input_mpnn = InputMPNN(
            n_species * (self.charge_power + 1), C,
            float(hp["r_max"]) if hp["input_cutoff"] == "hard" else None,
            float(hp["soft_cut_rad"]), float(hp["soft_cut_width"]),
            int(hp["basis_trig"]), int(hp["basis_pow"]),
        )
        self.radial = nn.ModuleList(
            RadialBasis(int(hp["basis_trig"]), int(hp["basis_pow"])) for _ in range(S)
        )
        n_radial = self.radial[0].num_out // 2  # read as complex numbers
        self.edge_levels, self.atom_levels = nn.ModuleList(), nn.ModuleList()
        degrees, n_prev = (0,), 0
        self.degrees = []
        for s in range(S):
            edge = EdgeLevel(n_prev, C * len(degrees), len(degrees), n_radial, max_sh, C,
                             float(hp["soft_cut_rad"]), float(hp["soft_cut_width"]))
            extra = fusion_terms[s].out_channels if fusion_terms is not None else None
            atom = AtomLevel(degrees, range(max_sh + 1), C, maxl, float(hp["level_gain"]), extra)
            self.edge_levels.append(edge)
            self.atom_levels.append(atom)
            degrees, n_prev = atom.out_degrees, C
            self.degrees.append(degrees)
        self.fusion_terms = fusion_terms
        self.num_scalars = sum(C for _ in self.degrees) + sum(C * len(d) for d in self.degrees)
        self.output = OutputPMLP(self.num_scalars)
        self.register_buffer(
            "atomic_energies",
            torch.as_tensor(stats.atomic_energies, dtype=torch.get_default_dtype()), False,
        )
        self.scale, self.shift = float(stats.scale), float(stats.shift)

    def features(self, positions: torch.Tensor, onehot: torch.Tensor, atom_mask: torch.Tensor):
        """Padded inputs -> ``(F^0, [F^1, ..., F^S])``, each ``l -> [B, A, C, 2l+1]``."""
        B, A, _ = positions.shape
        eye = torch.eye(A, dtype=torch.bool, device=positions.device)
        pair_mask = atom_mask.unsqueeze(2) & atom_mask.unsqueeze(1)  # [B, A, A]
        nonself = pair_mask & ~eye
        rel = positions.unsqueeze(2) - positions.unsqueeze(1)  # r_i - r_j
        sq = (rel * rel).sum(-1)
        r = torch.where(nonself, torch.sqrt(torch.where(nonself, sq, torch.ones_like(sq))),
                        torch.zeros_like(sq))
        z = onehot @ self.charges.to(onehot.dtype)  # [B, A]
        powers = torch.stack([z**k for k in range(self.charge_power + 1)], dim=-1)
        x = (onehot.unsqueeze(-1) * powers.unsqueeze(-2)).flatten(-2)  # [B, A, S*(K+1)]
        feats = {0: self.input_mpnn(x, r, pair_mask, nonself, atom_mask)}
        f0 = feats
        sh = solid_harmonics(rel, self.max_sh)  # l -> [B, A, A, 2l+1]
        levels, edge = [], None
        for s, (edge_level, atom_level) in enumerate(zip(self.edge_levels, self.atom_levels)):
            rb = self.radial[s](r, nonself)
            rb = torch.view_as_complex(rb.unflatten(-1, (-1, 2)).contiguous())
            edge = edge_level(edge, dot_products(feats), rb, r, pair_mask)
            reps = {l: g.unsqueeze(-1) * sh[l].unsqueeze(-2) for l, g in enumerate(edge)}
            extra = None
            if self.fusion_terms is not None:
                extra = self.fusion_terms[s](feats, reps)
            feats = atom_level(feats, reps, extra)
            levels.append(feats)
        return f0, levels

    def predict(self, positions: torch.Tensor, onehot: torch.Tensor,
                atom_mask: torch.Tensor) -> torch.Tensor:
        """The network's output per molecule ``[B]`` (the standardised target's prediction)
        from padded inputs."""
        _, levels = self.features(positions, onehot, atom_mask)
        return self.output(invariants(levels), atom_mask)

    def forward(self, batch: dict[str, torch.Tensor], compute_forces: bool = False) -> dict:
        positions = batch["positions"]
        if compute_forces and not positions.requires_grad:
            positions = positions.detach().requires_grad_(True)
        pos, onehot, atom_mask, _ = pad_batch(batch, positions)
        y = self.predict(pos, onehot, atom_mask)  # [B]
        node_attrs, graph = batch["node_attrs"], batch["batch"]
        e0 = node_attrs @ self.atomic_energies.to(node_attrs.dtype) + self.shift  # [N], eV
        energy = (self.scale * y).index_add(0, graph, e0)
        forces = None
        if compute_forces:
            (grad,) = torch.autograd.grad(
                energy.sum(), positions, create_graph=self.training, retain_graph=self.training
            )
            forces = -grad
        return {"energy": energy, "forces": forces}
