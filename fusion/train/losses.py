"""Energy + forces training loss.

All errors are divided by ``target_scale`` (same unit as the target, eV for energies) before
the loss is taken, so ``target_scale = std(y)`` gives the MSE of the normalised target and
the default ``1.0`` the plain MSE in internal units (eV^2, (eV/Å)^2).

- energy term: mean over structures of ``loss((E_pred - y) / scale)`` (per-structure loss),
- forces term: mean over atoms and Cartesian components of ``loss((F_pred - F) / scale)``,
- total: ``energy_weight * energy + forces_weight * forces``. The forces term is used only
  when the batch has ``"forces"``, the forces weight is positive and the model returned
  forces.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("mse", "huber")


def pointwise_loss(err: torch.Tensor, kind: str, huber_delta: float) -> torch.Tensor:
    """Mean of ``err**2`` (``"mse"``) or of the Huber loss of ``err`` (``"huber"``)."""
    if kind == "mse":
        return torch.mean(err * err)
    if kind == "huber":
        return F.huber_loss(err, torch.zeros_like(err), reduction="mean", delta=huber_delta)
    raise ValueError(f"unknown loss {kind!r}; valid: {list(LOSSES)}")


def wants_forces(batch: dict, forces_weight: float) -> bool:
    """Whether training on ``batch`` should ask the model for forces."""
    return forces_weight > 0 and batch.get("forces") is not None


def compute_loss(
    out: dict,
    batch: dict,
    *,
    energy_weight: float = 1.0,
    forces_weight: float = 0.0,
    kind: str = "mse",
    target_scale: float = 1.0,
    huber_delta: float = 0.01,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted loss of one batch and its parts (as floats, for logging).

    ``out`` is the model output ``{"energy": [B], "forces": [A, 3] | None}``; ``batch`` holds
    ``"y"`` ([B]) and optionally ``"forces"`` ([A, 3]). Returns ``(loss, {"energy": ..,
    "forces": .. | None})`` where the parts are unweighted.
    """
    energy = out["energy"]
    y = batch["y"]
    if energy.shape != y.shape:
        raise ValueError(
            f"model energy has shape {tuple(energy.shape)} but the target y has {tuple(y.shape)}"
        )
    e_loss = pointwise_loss((energy - y) / target_scale, kind, huber_delta)
    loss = energy_weight * e_loss
    parts: dict[str, float | None] = {"energy": float(e_loss.detach()), "forces": None}
    pred_f = out.get("forces")
    true_f = batch.get("forces")
    if forces_weight > 0 and pred_f is not None and true_f is not None:
        if pred_f.shape != true_f.shape:
            raise ValueError(
                f"model forces have shape {tuple(pred_f.shape)} but the target forces have "
                f"{tuple(true_f.shape)}"
            )
        f_loss = pointwise_loss((pred_f - true_f) / target_scale, kind, huber_delta)
        loss = loss + forces_weight * f_loss
        parts["forces"] = float(f_loss.detach())
    return loss, parts
