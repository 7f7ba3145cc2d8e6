"""Load a reference Cormorant ``state_dict`` (risilab/cormorant ``CormorantQM9``, one input
MPNN layer) into :class:`~fusion.models.cormorant.model.Cormorant`.

Only parameter names and shapes are mapped (the layers compute the same functions); the
reference's buffers are not used. ``tests/models/test_cormorant_reference.py`` checks the
result against energies the reference computed (fixture written by
benchmarks/make_cormorant_fixture.py).
"""

from __future__ import annotations

import re

import torch

__all__ = ["reference_key", "load_reference_state_dict"]

_RULES = [
    (r"rad_funcs\.rad_funcs\.(\d+)\.(scales|phases)", r"radial.\1.\2"),
    (r"input_func_atom\.rad_filts\.0\.(scales|phases)", r"input_mpnn.radial.\1"),
    (r"input_func_atom\.rad_filts\.0\.linear\.0\.(weight|bias)", r"input_mpnn.radial_linear.\1"),
    (r"input_func_atom\.mlps\.0\.linear\.0\.(weight|bias)", r"input_mpnn.mlp.0.\1"),
    (r"input_func_atom\.mlps\.0\.linear\.1\.(weight|bias)", r"input_mpnn.mlp.2.\1"),
    (r"cormorant_cg\.(atom|edge)_levels\.(\d+)\.cat_mix\.mix_reps\.weights\.(\d+)",
     r"\1_levels.\2.weights.\3"),
    (r"cormorant_cg\.edge_levels\.(\d+)\.mask_layer\.(soft_cut_rad|soft_cut_width)",
     r"edge_levels.\1.\2"),
    (r"output_layer_atom\.(mlp[12])\.linear\.0\.(weight|bias)", r"output.\1.0.\2"),
    (r"output_layer_atom\.(mlp[12])\.linear\.1\.(weight|bias)", r"output.\1.2.\2"),
]


def reference_key(key: str) -> str:
    """Our parameter name for the reference's ``key``; ``KeyError`` if it has none."""
    for pattern, repl in _RULES:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, repl, key)
    raise KeyError(f"reference parameter {key!r} has no counterpart in cormorant/baseline")


def load_reference_state_dict(model: torch.nn.Module, reference: dict) -> None:
    """Copy every reference parameter into ``model`` (reshaping the reference's broadcast
    shapes ``[1, 1, 1, n]`` to ``[n]``). Every parameter of ``model`` must be covered and
    shapes must agree, else ``ValueError`` naming the key."""
    ours = dict(model.named_parameters())
    seen = set()
    with torch.no_grad():
        for key, value in reference.items():
            name = reference_key(key)
            if name not in ours:
                raise ValueError(f"reference parameter {key!r} maps to {name!r}, which the model "
                                 "lacks (different hyperparameters?)")
            target = ours[name]
            value = torch.as_tensor(value)
            if value.numel() != target.numel() or (value.dim() == target.dim()
                                                   and value.shape != target.shape):
                raise ValueError(f"reference parameter {key!r} has shape {tuple(value.shape)}, "
                                 f"{name!r} has {tuple(target.shape)}")
            target.copy_(value.reshape(target.shape).to(target.dtype))
            seen.add(name)
    missing = sorted(set(ours) - seen)
    if missing:
        raise ValueError(f"reference state_dict lacks parameters for {missing}")
