"""Model registry: ``(model, variant) -> builder``.

A builder is a plain function ``builder(hparams: dict, stats: ModelStats) -> nn.Module``
returning a module with ``forward(batch, compute_forces) -> {"energy": [B], "forces": ...}``.
Adding a variant = one function decorated with :func:`register` + one config entry.

>>> "baseline" in MODELS["mace"]
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from torch import nn

Builder = Callable[[dict, "ModelStats"], nn.Module]

# model -> variant -> builder
MODELS: dict[str, dict[str, Builder]] = {}

# Models that are fitted in closed form rather than trained (no builder, no trainer).
CLOSED_FORM_MODELS = {"composition": ("baseline",)}


@dataclass(frozen=True)
class ModelStats:
    """What the training data tells a model before training (all internal units).

    elements: sorted atomic numbers the model must handle (defines the one-hot order).
    atomic_energies: per-element reference energies [n_elements] (composition fit), eV.
    avg_num_neighbors: mean number of neighbours within r_max in the training set.
    scale: std of the per-atom residual target after subtracting atomic energies.
    shift: mean of that residual (usually left at 0).
    """

    elements: tuple[int, ...]
    atomic_energies: np.ndarray = field(repr=False)
    avg_num_neighbors: float
    scale: float = 1.0
    shift: float = 0.0


# (model, variant) -> the builder's default hyperparameters (those the workflow must know
# before building, such as the graph cutoff r_max).
DEFAULT_HPARAMS: dict[tuple[str, str], dict] = {}

DEFAULT_R_MAX = 5.0  # Å, for builders that declare no default r_max


# (model, variant) -> a function raising ValueError (one line naming the key and the valid
# range) for hyperparameters its builder cannot take, without building the model.
HPARAM_CHECKS: dict[tuple[str, str], Callable[[dict], None]] = {}


def register(
    model: str,
    variant: str,
    defaults: dict | None = None,
    check: Callable[[dict], None] | None = None,
) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder`` under ``model/variant``; ``defaults``: its default
    hyperparameters (read by :func:`graph_cutoff`); ``check``: its hyperparameter check
    (run by :func:`check_hparams` before any job, and by the builder itself)."""

    def deco(builder: Builder) -> Builder:
        variants = MODELS.setdefault(model, {})
        if variant in variants:
            raise ValueError(f"model variant {model}/{variant} is registered twice")
        variants[variant] = builder
        DEFAULT_HPARAMS[(model, variant)] = dict(defaults or {})
        if check is not None:
            HPARAM_CHECKS[(model, variant)] = check
        return builder

    return deco


def check_hparams(model: str, variant: str, hparams: dict) -> None:
    """Raise ``ValueError`` when ``model/variant``'s builder would refuse ``hparams`` (cheap:
    nothing is built; builders without a registered check accept anything here)."""
    check_model_name(model, variant)
    if not isinstance(hparams, dict):
        raise ValueError(f"hyperparameters of {model}/{variant} must be a mapping, got {hparams!r}")
    if model in CLOSED_FORM_MODELS:
        if hparams:
            raise ValueError(f"{model} has no hyperparameters, got {sorted(hparams)}")
        return
    check = HPARAM_CHECKS.get((model, variant))
    if check is not None:
        check(dict(hparams))


def graph_cutoff(model: str, variant: str, hparams: dict) -> float:
    """The neighbour-list cutoff (Å) of a run: ``hparams["r_max"]``, else the builder's
    default, else :data:`DEFAULT_R_MAX`.

    >>> graph_cutoff("cormorant", "baseline", {})
    1.73
    >>> graph_cutoff("mace", "baseline", {"r_max": 4.0})
    4.0
    """
    check_model_name(model, variant)
    defaults = DEFAULT_HPARAMS.get((model, variant), {})
    return float(hparams.get("r_max", defaults.get("r_max", DEFAULT_R_MAX)))


def _load_builtin_models() -> None:
    """Import every module of :mod:`fusion.models` for its ``@register`` side effects.

    Adding a model family is adding a module; nothing here lists them. Modules keep heavy
    optional imports inside their builders.
    """
    import importlib
    import pkgutil

    import fusion.models as package

    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_") and info.name != "registry":
            importlib.import_module(f"fusion.models.{info.name}")


def model_names() -> dict[str, tuple[str, ...]]:
    """All known ``model -> variants`` including closed-form models."""
    _load_builtin_models()
    names = {m: tuple(sorted(v)) for m, v in MODELS.items()}
    names.update(CLOSED_FORM_MODELS)
    return names


def check_model_name(model: str, variant: str) -> None:
    """Raise ``KeyError`` naming the valid models/variants when the pair is unknown."""
    names = model_names()
    if model not in names:
        raise KeyError(f"unknown model {model!r}; valid models: {', '.join(sorted(names))}")
    if variant not in names[model]:
        raise KeyError(
            f"unknown variant {variant!r} of model {model!r}; "
            f"valid variants: {', '.join(names[model])}"
        )


def build_model(model: str, variant: str, hparams: dict, stats: ModelStats) -> nn.Module:
    """Build ``model/variant`` from the registry."""
    check_model_name(model, variant)
    if model in CLOSED_FORM_MODELS:
        raise ValueError(f"{model} is fitted in closed form; it has no trainable builder")
    return MODELS[model][variant](dict(hparams), stats)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars: the one definition used in every table."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
