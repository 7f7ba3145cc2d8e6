"""Cormorant (Anderson, Hy & Kondor, NeurIPS 2019) as its reference code parametrises it.

``cormorant/baseline`` is the reference implementation's QM9 model (risilab/cormorant at
6a4b637, ``CormorantQM9`` with its command-line defaults) component for component, written
anew in torch (the reference's license forbids reuse; nothing of it is copied); the
converter in :mod:`~fusion.models.cormorant.convert` loads the reference's weights and
``tests/models/test_cormorant_reference.py`` reproduces its energies. Architecture::

    x_i     = onehot(Z_i) x (Z_i / Z_max)^k, k = 0..charge_power
    F^0_i   = MLP([sum_j mask(r_ij) R(r_ij) * x_j, x_i])   (input MPNN; C complex scalars)
    for s = 1..num_cg_levels, over every atom pair of the molecule (i = j included):
      g^s_ij,l' = mu^s(r_ij) * W^s_l' [g^(s-1)_ij,l' (+) F_i . F_j (+) eta^s(r_ij)]  (l' <= max_sh)
      F^s_i,l   = W^s_l [ sum_j CG(g^s_ij Y(r_ij) (x) F^(s-1)_j)_l (+) F^(s-1)_i,l
                          (+) CG(F^(s-1)_i (x) F^(s-1)_i)_l ]                        (l <= maxl)
    y = MLP_2(sum_i MLP_1(scalars(F^1_i, ..., F^S_i)))      (OutputPMLP)

Features and weights are complex (weights stored as pairs of reals), in the complex spherical
basis; ``Y`` are unnormalised (solid) harmonics; ``mu`` a learnable sigmoid soft cutoff per
level and channel; ``eta`` the radial basis ``r^-p sin(2 pi f r + phi)`` read as complex
numbers. Variants:

- ``cormorant/baseline``: the above (211,452 parameters at the defaults, as the reference).
- ``cormorant/fusion``: plus a 3-body fusion term per atom level
  (:mod:`~fusion.models.cormorant.fusion_term`), at the largest width with parameters
  <= the baseline's (``model.fusion_info``).
- ``cormorant/baseline-narrow``: the baseline at the width ``cormorant/fusion`` chose (the
  control separating "narrower" from "fusion").

See docs/cormorant.md.
"""

from __future__ import annotations

from torch import nn

from fusion.models.cormorant.fusion_term import FusionTerm
from fusion.models.cormorant.model import (
    CORMORANT_DEFAULTS,
    FUSION_DEFAULTS,
    Cormorant,
    cormorant_hparams,
    pad_batch,
)
from fusion.models.registry import ModelStats, count_parameters, register

__all__ = [
    "CORMORANT_DEFAULTS",
    "FUSION_DEFAULTS",
    "Cormorant",
    "cormorant_hparams",
    "pad_batch",
    "build_cormorant",
    "choose_fusion_width",
]


def build_cormorant(hparams: dict, stats: ModelStats) -> Cormorant:
    """``cormorant/baseline`` from ``hparams`` (merged over :data:`CORMORANT_DEFAULTS`)."""
    return Cormorant(cormorant_hparams(hparams, "baseline"), stats)


def _base_keys(hp: dict) -> dict:
    return {k: v for k, v in hp.items() if k in CORMORANT_DEFAULTS}


def _fusion_terms(hp: dict, stats: ModelStats, C: int) -> nn.ModuleList:
    maxl = int(hp["maxl"])
    probe = Cormorant({**_base_keys(hp), "num_channels": 1}, stats)
    degrees = [(0,), *probe.degrees[:-1]]  # each atom level's input degrees
    return nn.ModuleList(
        FusionTerm(d, C, int(hp["fusion_lmax_sh"]), int(hp["fusion_L_int"]), maxl)
        for d in degrees
    )


def _build_fusion(hp: dict, stats: ModelStats, C: int) -> Cormorant:
    return Cormorant({**_base_keys(hp), "num_channels": C}, stats, _fusion_terms(hp, stats, C))


def choose_fusion_width(hparams: dict, stats: ModelStats) -> tuple[int, int, int]:
    """Largest channel count ``C`` whose ``cormorant/fusion`` has <= the parameters of
    ``cormorant/baseline`` at the same other hyperparameters. Returns
    ``(C, n_params_fusion(C), n_params_baseline)``."""
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
    """cormorant/baseline: the reference code's QM9 Cormorant (see module docstring)."""
    return build_cormorant(hparams, stats)


@register("cormorant", "fusion", defaults=CORMORANT_DEFAULTS)
def build_cormorant_fusion(hparams: dict, stats: ModelStats) -> nn.Module:
    """cormorant/fusion: baseline + a 3-body fusion term in every atom level, at the largest
    width with parameters <= the baseline's (``model.fusion_info``)."""
    hp = cormorant_hparams(hparams, "fusion")
    n_base = count_parameters(Cormorant(_base_keys(hp), stats))
    if hp["fusion_num_channels"] is None:
        C, _, _ = choose_fusion_width(hparams, stats)
        how = "auto"
    else:
        C, how = int(hp["fusion_num_channels"]), "fixed"
    return _with_width_info(_build_fusion(hp, stats, C), "fusion", C, hp, n_base, how)


@register("cormorant", "baseline-narrow", defaults=CORMORANT_DEFAULTS)
def build_cormorant_baseline_narrow(hparams: dict, stats: ModelStats) -> nn.Module:
    """cormorant/baseline-narrow: the baseline at the width cormorant/fusion chooses for the
    same hyperparameters (the control: fusion vs. baseline-narrow isolates the fusion term,
    baseline-narrow vs. baseline the narrowing). Accepts the fusion keys, to share configs."""
    hp = cormorant_hparams(hparams, "fusion")
    C, _, n_base = choose_fusion_width(hparams, stats)
    model = Cormorant({**_base_keys(hp), "num_channels": C}, stats)
    return _with_width_info(model, "baseline-narrow", C, hp, n_base, "auto")


def _with_width_info(model: nn.Module, variant: str, channels: int, hp: dict, n_base: int,
                     how: str) -> nn.Module:
    """``model`` with ``fusion_info``: its width and parameters next to the baseline's."""
    model.fusion_info = {
        "variant": variant,
        "num_channels": channels,
        "n_params": count_parameters(model),
        "num_channels_baseline": int(hp["num_channels"]),
        "n_params_baseline": n_base,
        "width": how,
    }
    return model
