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

import importlib.util

import torch
from e3nn import o3
from torch import nn

from fusion._mace_first import mace_modules as modules
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
}


def hidden_irreps(num_channels: int, max_L: int) -> o3.Irreps:
    """``C x 0e + C x 1o + C x 2e ...`` up to ``max_L``: MACE's hidden features."""
    return o3.Irreps(
        "+".join(f"{num_channels}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(max_L + 1))
    )


def mace_hparams(hparams: dict) -> dict:
    """Merge ``hparams`` over :data:`MACE_DEFAULTS`, rejecting unknown keys by name."""
    unknown = sorted(set(hparams) - set(MACE_DEFAULTS))
    if unknown:
        raise ValueError(
            f"unknown MACE hyperparameter(s) {unknown}; valid keys: {sorted(MACE_DEFAULTS)}"
        )
    return {**MACE_DEFAULTS, **hparams}


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
    return modules.ScaleShiftMACE(
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


class MaceEnergyModel(nn.Module):
    """Adapts a mace-torch model to the suite's ``forward(batch, compute_forces)``."""

    def __init__(self, mace_model: nn.Module):
        super().__init__()
        self.mace = mace_model

    def forward(self, batch: dict[str, torch.Tensor], compute_forces: bool = False) -> dict:
        out = self.mace(batch, training=self.training, compute_force=compute_forces)
        return {
            "energy": out["energy"],  # [B], eV
            "forces": out["forces"] if compute_forces else None,  # [A, 3], eV/Å
        }


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


@register("mace", "baseline", defaults=MACE_DEFAULTS)
def build_mace_baseline(hparams: dict, stats: ModelStats) -> nn.Module:
    """mace-torch's MACE exactly as ``mace_run_train`` would build it.

    ``hparams`` may also hold ``enable_cueq`` (bool, default false): convert the model to
    cuEquivariance kernels (CUDA only, see :func:`convert_to_cueq`).
    """
    hparams = dict(hparams)
    enable_cueq = hparams.pop("enable_cueq", False)
    if not isinstance(enable_cueq, bool):
        raise ValueError(
            f"MACE hyperparameter enable_cueq: expected true or false, got {enable_cueq!r}"
        )
    mace_model = build_mace_module(mace_hparams(hparams), stats)
    if enable_cueq:
        mace_model = convert_to_cueq(mace_model)
    return MaceEnergyModel(mace_model)
