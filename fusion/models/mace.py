"""MACE models built from mace-torch, through our registry.

The baseline is exactly the model ``mace_run_train --model MACE`` builds (ScaleShiftMACE,
residual interaction blocks, first block non-residual, ``use_reduced_cg=False``), with
the hyperparameters given in the config; only the defaults below are ours.

``enable_cueq: true`` (baseline only) converts it to NVIDIA's cuEquivariance kernels as
``mace_run_train --enable_cueq`` does (``mace.cli.convert_e3nn_cueq.run``), so speed
comparisons with mace-torch on GPUs are fair. It needs a CUDA GPU and the packages
``cuequivariance``, ``cuequivariance-torch`` and ``cuequivariance-ops-torch-cu12``; without
them the builder stops with a ValueError naming them (mace-torch itself would silently
fall back to e3nn).
"""

from __future__ import annotations

import copy
import importlib.util

import numpy as np
import torch
from e3nn import o3
from torch import nn

from fusion._mace_first import mace_modules as modules
from fusion.blocks.conv import install_fusion_conv
from fusion.blocks.product import second_order_pass
from fusion.models.ordered_states import ordered_energies
from fusion.models.registry import ModelStats, register

# The defaults of mace_run_train (mace-torch 0.3.16), so an empty config means "as MACE".
MACE_DEFAULTS: dict = {
    "r_max": 5.0,
    "num_bessel": 8,
    "num_polynomial_cutoff": 5,
    "max_ell": 3,
    "num_interactions": 2,
    "num_channels": 128,
    "max_L": 1,
    "correlation": 3,
    "MLP_irreps": "16x0e",
    "radial_MLP": [64, 64, 64],
    "gate": "silu",
    "interaction": "RealAgnosticResidualInteractionBlock",
    "interaction_first": "RealAgnosticInteractionBlock",
    "use_reduced_cg": False,
    # Not a mace_run_train option: how the interaction's edge tensor product + sum over
    # neighbours is evaluated. "fusion": one fused contraction (fusion.blocks.conv.FusionConv,
    # the same function to rounding, faster); "e3nn": mace-torch's own code path.
    "interaction_kernel": "fusion",
}
INTERACTION_KERNELS = ("fusion", "e3nn")


def hidden_irreps(num_channels: int, max_L: int) -> o3.Irreps:
    """``C x 0e + C x 1o + C x 2e ...`` up to ``max_L``: MACE's hidden features."""
    return o3.Irreps(
        "+".join(f"{num_channels}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(max_L + 1))
    )


# Integer hyperparameters and their smallest valid value (mace-torch checks none of them).
MACE_INT_RANGES = {"num_channels": 1, "num_interactions": 1, "correlation": 1, "max_ell": 1,
                   "max_L": 0, "num_bessel": 1, "num_polynomial_cutoff": 1}


def mace_hparams(hparams: dict) -> dict:
    """Merge ``hparams`` over :data:`MACE_DEFAULTS`, rejecting unknown keys by name and
    values mace-torch cannot take with one message naming the key and the valid range."""
    unknown = sorted(set(hparams) - set(MACE_DEFAULTS))
    if unknown:
        raise ValueError(
            f"unknown MACE hyperparameter(s) {unknown}; valid keys: {sorted(MACE_DEFAULTS)}"
        )
    hp = {**MACE_DEFAULTS, **hparams}

    def bad(key: str, expected: str) -> ValueError:
        return ValueError(f"MACE hyperparameter {key}: expected {expected}, got {hp[key]!r}")

    for key, minimum in MACE_INT_RANGES.items():
        if isinstance(hp[key], bool) or not isinstance(hp[key], int) or hp[key] < minimum:
            raise bad(key, f"an integer >= {minimum}")
    r_max = hp["r_max"]
    if isinstance(r_max, bool) or not isinstance(r_max, int | float) or not 0 < r_max < 1e6:
        raise bad("r_max", "a cutoff radius > 0 (Å)")
    mlp = hp["radial_MLP"]
    if not isinstance(mlp, list | tuple) or not mlp or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in mlp
    ):
        raise bad("radial_MLP", "a non-empty list of integers >= 1 (hidden widths)")
    try:
        o3.Irreps(hp["MLP_irreps"])
    except (ValueError, TypeError, AssertionError):
        raise bad("MLP_irreps", "irreps such as '16x0e'") from None
    if not isinstance(hp["use_reduced_cg"], bool):
        raise bad("use_reduced_cg", "true or false")
    if hp["interaction_kernel"] not in INTERACTION_KERNELS:
        raise bad("interaction_kernel", " or ".join(map(repr, INTERACTION_KERNELS)))
    return hp


def check_baseline_hparams(hparams: dict) -> None:
    """What :func:`build_mace_baseline` refuses, without building (config-time check)."""
    hparams = dict(hparams)
    pop_n_states(hparams)
    pop_ordered_states(hparams)
    enable_cueq = hparams.pop("enable_cueq", False)
    if not isinstance(enable_cueq, bool):
        raise ValueError(
            f"MACE hyperparameter enable_cueq: expected true or false, got {enable_cueq!r}"
        )
    mace_hparams(hparams)


def build_mace_module(hparams: dict, stats: ModelStats) -> nn.Module:
    """The raw mace-torch ScaleShiftMACE for ``hparams`` (already merged with defaults)."""
    hp = hparams
    for key in ("interaction", "interaction_first"):
        if hp[key] not in modules.interaction_classes:
            raise ValueError(
                f"MACE hyperparameter {key}={hp[key]!r} is not a mace-torch interaction block; "
                f"valid: {sorted(modules.interaction_classes)}"
            )
    if hp["gate"] not in modules.gate_dict:
        raise ValueError(f"MACE gate {hp['gate']!r} unknown; valid: {sorted(modules.gate_dict)}")
    model = modules.ScaleShiftMACE(
        r_max=float(hp["r_max"]),
        num_bessel=int(hp["num_bessel"]),
        num_polynomial_cutoff=int(hp["num_polynomial_cutoff"]),
        max_ell=int(hp["max_ell"]),
        interaction_cls=modules.interaction_classes[hp["interaction"]],
        interaction_cls_first=modules.interaction_classes[hp["interaction_first"]],
        num_interactions=int(hp["num_interactions"]),
        num_elements=len(stats.elements),
        hidden_irreps=hidden_irreps(int(hp["num_channels"]), int(hp["max_L"])),
        MLP_irreps=o3.Irreps(hp["MLP_irreps"]),
        atomic_energies=stats.atomic_energies,
        avg_num_neighbors=float(stats.avg_num_neighbors),
        atomic_numbers=list(stats.elements),
        correlation=int(hp["correlation"]),
        gate=modules.gate_dict[hp["gate"]],
        radial_MLP=list(hp["radial_MLP"]),
        use_reduced_cg=bool(hp["use_reduced_cg"]),
        atomic_inter_scale=float(stats.scale),
        atomic_inter_shift=float(stats.shift),
    )
    if hp.get("interaction_kernel", "fusion") == "fusion":
        install_fusion_conv(model)
    return model


class MaceEnergyModel(nn.Module):
    """Adapts a mace-torch model to the suite's ``forward(batch, compute_forces)``."""

    n_states = 1

    def __init__(self, mace_model: nn.Module):
        super().__init__()
        self.mace = mace_model

    def forward(self, batch: dict[str, torch.Tensor], compute_forces: bool = False) -> dict:
        with second_order_pass(compute_forces and self.training):
            out = self.mace(batch, training=self.training, compute_force=compute_forces)
        return {
            "energy": out["energy"],  # [B], eV
            "forces": out["forces"] if compute_forces else None,  # [A, 3], eV/Å
        }


def pop_n_states(hparams: dict, stats: ModelStats | None = None) -> int:
    """Remove and check ``hparams["n_states"]``: electronic states, one energy head each.

    ``None`` or absent: as many as the training data labels (the rows of
    ``stats.atomic_energies`` [S, Z]; 1 for [Z] or without ``stats``).
    """
    n_states = hparams.pop("n_states", None)
    if n_states is None:
        e0 = None if stats is None else np.asarray(stats.atomic_energies)
        return int(e0.shape[0]) if e0 is not None and e0.ndim == 2 else 1
    if not isinstance(n_states, int) or isinstance(n_states, bool) or n_states < 1:
        raise ValueError(
            f"MACE hyperparameter n_states (electronic states, one energy head each) must be "
            f"a positive integer or null (= the dataset's), got {n_states!r}"
        )
    return n_states


def pop_ordered_states(hparams: dict) -> bool:
    """Remove and check ``hparams["ordered_states"]`` (default true): with more than one
    state, predict ``E_k = E_{k-1} + softplus gap`` (``fusion.models.ordered_states``), so
    S1 never falls below S0; false: free heads, one energy per state."""
    ordered = hparams.pop("ordered_states", True)
    if not isinstance(ordered, bool):
        raise ValueError(
            f"MACE hyperparameter ordered_states must be true or false, got {ordered!r}"
        )
    return ordered


def _fresh_copy(readout: nn.Module) -> nn.Module:
    """``readout`` with newly drawn weights, initialised as e3nn's Linear (weights N(0, 1),
    biases 0), so the heads of different states do not start identical."""
    head = copy.deepcopy(readout)
    with torch.no_grad():
        for name, param in head.named_parameters():
            if name.rsplit(".", 1)[-1].startswith("bias"):
                param.zero_()
            else:
                param.normal_()
    return head


class MaceStates(nn.Module):
    """One mace-torch trunk, one energy head per electronic state (S0, S1, ...).

    The trunk (embeddings, interactions, products: node features ``h^t``) is shared; state
    ``s`` has its own readout stack (a copy of mace's per-layer readouts, freshly initialised)
    and its own composition energies (``stats.atomic_energies[s]``). With ``n_states = 1`` the
    numbers are exactly mace's (tested). ``forward`` follows ``ScaleShiftMACE.forward``
    (mace-torch 0.3.16) and returns ``energy`` [B, S] (eV) and ``forces`` [A, S, 3] (eV/Å,
    ``-dE_s/dx`` for every state, one backward pass each).
    """

    def __init__(self, mace_model: nn.Module, n_states: int, ordered: bool = True):
        super().__init__()
        self.ordered = bool(ordered)
        for name in ("pair_repulsion", "joint_embedding"):
            if hasattr(mace_model, name):
                raise ValueError(f"MaceStates does not support mace's {name}")
        e0 = torch.atleast_2d(mace_model.atomic_energies_fn.atomic_energies)  # [S or 1, Z]
        if e0.shape[0] not in (1, n_states):
            raise ValueError(
                f"atomic energies for {e0.shape[0]} states, but the model has n_states={n_states}"
            )
        self.n_states = int(n_states)
        self.mace = mace_model
        self.register_buffer("state_e0", e0.expand(n_states, -1).clone())  # [S, n_elements]
        # heads[0] is mace's own readouts: n_states=1 reproduces mace exactly.
        self.extra_heads = nn.ModuleList(
            nn.ModuleList(_fresh_copy(r) for r in mace_model.readouts) for _ in range(n_states - 1)
        )

    def heads(self) -> list[nn.ModuleList]:
        return [self.mace.readouts, *self.extra_heads]

    def forward(self, batch: dict[str, torch.Tensor], compute_forces: bool = False) -> dict:
        m = self.mace
        with second_order_pass(compute_forces and self.training):
            return self._forward(m, batch, compute_forces)

    def _forward(self, m: nn.Module, batch: dict[str, torch.Tensor], compute_forces: bool
                 ) -> dict:
        from mace.tools.scatter import scatter_sum

        ctx, feats = mace_node_features(m, batch)
        node_attrs, graph = batch["node_attrs"], batch["batch"]
        e0 = scatter_sum(node_attrs @ self.state_e0.T.to(node_attrs.dtype), graph, dim=0,
                         dim_size=ctx.num_graphs)  # [B, S]
        zero_head = torch.zeros(node_attrs.shape[0], dtype=torch.int64, device=ctx.vectors.device)
        node_es = torch.stack([node_interaction_energy(m, readouts, feats, zero_head)
                               for readouts in self.heads()], dim=-1)  # [A, S]
        inter_e = scatter_sum(node_es, graph, dim=0, dim_size=ctx.num_graphs)  # [B, S]
        energy = e0.to(ctx.vectors.dtype) + inter_e  # [B, S]
        if self.ordered:  # E_k = E_{k-1} + softplus(raw gap): states never cross
            energy = ordered_energies(energy)
        forces = None
        if compute_forces:
            grads = []
            for s in range(self.n_states):
                (g,) = torch.autograd.grad(
                    energy[:, s].sum(), ctx.positions, create_graph=self.training,
                    retain_graph=self.training or s < self.n_states - 1, allow_unused=True)
                grads.append(torch.zeros_like(ctx.positions) if g is None else -g)
            forces = torch.stack(grads, dim=1)  # [A, S, 3]
        return {"energy": energy, "forces": forces}


def mace_node_features(m: nn.Module, batch: dict[str, torch.Tensor],
                       extra: nn.ModuleList | None = None):
    """The trunk of ``ScaleShiftMACE.forward`` (mace-torch 0.3.16), step for step, with
    ``m``'s own modules: returns mace's graph context (``prepare_graph``: positions marked
    ``requires_grad``, edge vectors, lengths) and the node features of every layer.

    ``extra``: optional per-layer terms added to each product's output,
    ``extra[t](h^t, edge_index, species, edge_vectors=...)`` (see ``MaceFusion3Body``).
    """
    from mace.modules.utils import prepare_graph

    ctx = prepare_graph(batch)
    node_attrs, edge_index = batch["node_attrs"], batch["edge_index"]
    species = node_attrs.argmax(dim=-1) if extra is not None else None
    node_feats = m.node_embedding(node_attrs)
    edge_attrs = m.spherical_harmonics(ctx.vectors)
    edge_feats, cutoff = m.radial_embedding(ctx.lengths, node_attrs, edge_index, m.atomic_numbers)
    feats = []
    for i, (interaction, product) in enumerate(zip(m.interactions, m.products)):
        A, sc = interaction(node_attrs=node_attrs, node_feats=node_feats, edge_attrs=edge_attrs,
                            edge_feats=edge_feats, edge_index=edge_index, cutoff=cutoff,
                            first_layer=(i == 0))
        new_feats = product(node_feats=A, sc=sc, node_attrs=node_attrs)
        if extra is not None:
            new_feats = new_feats + extra[i](node_feats, edge_index, species,
                                             edge_vectors=ctx.vectors)
        node_feats = new_feats
        feats.append(node_feats)  # [A, irreps of layer i]
    return ctx, feats


def node_interaction_energy(m: nn.Module, readouts: nn.ModuleList, feats: list[torch.Tensor],
                            node_heads: torch.Tensor) -> torch.Tensor:
    """Per-node interaction energy [A] of one readout stack, scaled and shifted by ``m``'s
    ``scale_shift``, as in ``ScaleShiftMACE.forward`` (without pair repulsion)."""
    arange = torch.arange(node_heads.shape[0], device=node_heads.device)
    per_layer = [r(feats[-1 if len(readouts) == 1 else i], node_heads)[arange, node_heads]
                 for i, r in enumerate(readouts)]  # each [A]
    return m.scale_shift(torch.stack(per_layer).sum(0), node_heads)


def energy_model(mace_model: nn.Module, n_states: int, ordered: bool = True) -> nn.Module:
    """The suite's model around a mace-torch module: one state or :class:`MaceStates`
    (``ordered``: states ordered by construction, see :func:`pop_ordered_states`)."""
    if n_states == 1:
        return MaceEnergyModel(mace_model)
    return MaceStates(mace_model, n_states, ordered)


CUEQ_PACKAGES = ("cuequivariance", "cuequivariance_torch")
CUEQ_INSTALL = "pip install cuequivariance-torch cuequivariance-ops-torch-cu12"


def cueq_available() -> bool:
    """Whether the cuEquivariance packages mace-torch uses can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in CUEQ_PACKAGES)


def convert_to_cueq(mace_model: nn.Module) -> nn.Module:
    """The same ScaleShiftMACE (same weights) on cuEquivariance kernels, on the GPU.

    Raises ValueError when the cuEquivariance packages are missing or torch sees no CUDA
    device (the kernels are GPU kernels; on CPU use ``enable_cueq: false``).
    """
    if not cueq_available():
        missing = [n for n in CUEQ_PACKAGES if importlib.util.find_spec(n) is None]
        raise ValueError(
            f"MACE hyperparameter enable_cueq=true needs NVIDIA's cuEquivariance packages, "
            f"but {missing} cannot be imported; install them ({CUEQ_INSTALL}) on a CUDA "
            "machine, or set enable_cueq: false"
        )
    if not torch.cuda.is_available():
        raise ValueError(
            "MACE hyperparameter enable_cueq=true needs a CUDA GPU (cuEquivariance kernels), "
            "but torch sees none; set enable_cueq: false on CPU"
        )
    from mace.cli.convert_e3nn_cueq import run as run_e3nn_to_cueq

    dtype = torch.get_default_dtype()
    try:
        return run_e3nn_to_cueq(mace_model, device="cuda")
    finally:
        torch.set_default_dtype(dtype)  # the converter sets it to the model's dtype


@register("mace", "baseline", defaults=MACE_DEFAULTS, check=check_baseline_hparams)
def build_mace_baseline(hparams: dict, stats: ModelStats) -> nn.Module:
    """mace-torch's MACE exactly as ``mace_run_train`` would build it.

    ``hparams`` may also hold ``n_states`` (int; default: the states the dataset labels;
    > 1: one head per electronic state on a shared trunk, :class:`MaceStates`) and
    ``enable_cueq`` (bool, default false): convert the model to cuEquivariance kernels (CUDA
    only, see :func:`convert_to_cueq`).
    """
    hparams = dict(hparams)
    n_states = pop_n_states(hparams, stats)
    ordered = pop_ordered_states(hparams)
    enable_cueq = hparams.pop("enable_cueq", False)
    if not isinstance(enable_cueq, bool):
        raise ValueError(
            f"MACE hyperparameter enable_cueq: expected true or false, got {enable_cueq!r}"
        )
    if enable_cueq and n_states > 1:
        raise ValueError("MACE hyperparameters enable_cueq=true and n_states > 1 cannot be "
                         "combined (the multi-state heads run on e3nn)")
    hp = mace_hparams(hparams)
    if enable_cueq:  # the converter rebuilds mace's own modules
        hp["interaction_kernel"] = "e3nn"
    mace_model = build_mace_module(hp, stats)
    if enable_cueq:
        mace_model = convert_to_cueq(mace_model)
    return energy_model(mace_model, n_states, ordered)
