"""MACE with fusion products and fusion blocks: the ``mace/fusion*`` variants.

Every variant starts from the baseline (:func:`fusion.models.mace.build_mace_module`, i.e.
exactly what ``mace_run_train`` builds) and changes only what its name says:

- ``mace/fusion``: every interaction's product block (mace-torch's
  ``EquivariantProductBasisBlock``) is replaced by :class:`~fusion.blocks.product.FusionProduct`
  with the *independent* path basis: the same function space as mace-torch's product with
  about a third of its weights. The weights saved are spent on wider channels.
- ``mace/fusion-vertex``: the same with factorised vertex weights (a path's weight is the
  product of per-vertex weights).
- ``mace/fusion-3body``: ``mace/fusion`` plus, in every layer ``t``, an exact 3-body
  :class:`~fusion.blocks.fusion_block.FusionBlock` with the layer's input features ``h_i`` as
  a leaf, added to the layer's output::

      h^{t+1}_i = Product_t(A^t_i, sc^t_i) + sum_{j != k} Tree_t(h^t_i, m^t_ij, m^t_ik)

  (distinct neighbour pairs only, O(edges) by Moebius inversion; see docs/fusion-diagrams.md).

Width: unless ``fusion_num_channels`` is given, a variant gets the largest channel count whose
parameter count is <= the baseline's at the same other hyperparameters
(:func:`choose_width`). Parameter counts are predicted in closed form from the irreps
(:mod:`fusion.models.mace_params`; fast: no module is built); a builder checks the
prediction against the module it built. The chosen
width and both counts are on the built model as ``model.fusion_info``.

Hyperparameters: the baseline's (:data:`fusion.models.mace.MACE_DEFAULTS`) plus
:data:`FUSION_DEFAULTS` (every variant) and, for ``fusion-3body``, :data:`THREE_BODY_DEFAULTS`.
See docs/models.md.
"""

from __future__ import annotations

import fusion._mace_first  # noqa: F401  (mace before e3nn)

# isort: split

from dataclasses import dataclass

import torch
from mace.modules.utils import compute_forces as forces_from_energy
from mace.tools.scatter import scatter_sum
from torch import nn

from fusion.blocks.fusion_block import FusionBlock
from fusion.blocks.mace_compat import replace_products
from fusion.blocks.product import second_order_pass
from fusion.models.mace import (
    MACE_DEFAULTS,
    build_mace_module,
    energy_model,
    mace_hparams,
    mace_node_features,
    node_interaction_energy,
    pop_n_states,
    pop_ordered_states,
)
from fusion.models.mace_params import (
    THREE_BODY_TREE,
    irreps_labels,
    mace_layers,
    predict_count,
    predictable,
)
from fusion.models.registry import ModelStats, count_parameters, register

__all__ = [
    "FUSION_DEFAULTS",
    "THREE_BODY_DEFAULTS",
    "VARIANTS",
    "MaceFusion3Body",
    "build_variant",
    "choose_width",
    "param_count",
    "split_hparams",
]


@dataclass(frozen=True)
class VariantSpec:
    """What a ``mace/<variant>`` changes relative to the baseline."""

    weights: str  # FusionProduct weights: "path" | "vertex"
    three_body: bool  # add an exact 3-body FusionBlock to every layer
    description: str


VARIANTS: dict[str, VariantSpec] = {
    "fusion": VariantSpec(
        "path", False, "products -> FusionProduct (independent path basis), wider channels"
    ),
    "fusion-vertex": VariantSpec(
        "vertex", False, "as fusion with factorised vertex weights, wider channels"
    ),
    "fusion-3body": VariantSpec(
        "path", True, "fusion + exact 3-body FusionBlock (leaf h_i) in every layer"
    ),
}

# Keys every fusion variant accepts on top of MACE_DEFAULTS.
FUSION_DEFAULTS: dict = {
    # Force the channel count (None: the largest with params <= baseline, see choose_width).
    "fusion_num_channels": None,
    # Electronic states, one readout stack each on the shared trunk (see mace.MaceStates);
    # None: as many as the dataset labels.
    "n_states": None,
    # With several states: E_k = E_{k-1} + softplus gap (mace.pop_ordered_states).
    "ordered_states": True,
}

# Extra keys of mace/fusion-3body: the 3-body FusionBlock of every layer.
THREE_BODY_DEFAULTS: dict = {
    # Cap on the internal label of the tree ((h, A), A) (None: no cap).
    "fusion_L_int": None,
    # Spherical harmonics / message labels up to this l (None: the baseline's max_ell).
    "fusion_lmax_sh": None,
    # Hidden layers of the block's radial MLP (MACE's is [64, 64, 64]; smaller keeps the
    # 3-body term's fixed cost low so the width stays close to the baseline's).
    "fusion_radial_MLP": [32, 32],
}



# --------------------------------------------------------------------------------------
# Hyperparameters
# --------------------------------------------------------------------------------------
def _variant_spec(variant: str) -> VariantSpec:
    if variant not in VARIANTS:
        raise KeyError(
            f"unknown MACE fusion variant {variant!r}; valid: {', '.join(sorted(VARIANTS))}"
        )
    return VARIANTS[variant]


def _fusion_defaults(variant: str) -> dict:
    spec = _variant_spec(variant)
    return {**FUSION_DEFAULTS, **(THREE_BODY_DEFAULTS if spec.three_body else {})}


def _is_int(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def split_hparams(variant: str, hparams: dict, stats: ModelStats | None = None
                  ) -> tuple[dict, dict]:
    """``hparams`` -> (MACE hyperparameters merged with defaults, fusion keys merged with
    defaults). Unknown keys raise ``ValueError`` listing the valid keys of ``mace/variant``."""
    fdefaults = _fusion_defaults(variant)
    valid = set(MACE_DEFAULTS) | set(fdefaults)
    unknown = sorted(set(hparams) - valid)
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {unknown} for mace/{variant}; valid keys: {sorted(valid)}"
        )
    mace_hp = mace_hparams({k: v for k, v in hparams.items() if k in MACE_DEFAULTS})
    fhp = {**fdefaults, **{k: v for k, v in hparams.items() if k in fdefaults}}
    fhp["n_states"] = pop_n_states({"n_states": fhp["n_states"]}, stats)
    fhp["ordered_states"] = pop_ordered_states({"ordered_states": fhp["ordered_states"]})
    if fhp["n_states"] > 1 and VARIANTS[variant].three_body:
        raise ValueError(f"mace/{variant} supports one electronic state only (n_states: 1)")
    C = fhp["fusion_num_channels"]
    if C is not None and not _is_int(C, 1):
        raise ValueError(f"fusion_num_channels must be a positive integer or null, got {C!r}")
    if VARIANTS[variant].three_body:
        for key in ("fusion_L_int", "fusion_lmax_sh"):
            if fhp[key] is not None and not _is_int(fhp[key], 0):
                raise ValueError(f"{key} must be a non-negative integer or null, got {fhp[key]!r}")
        mlp = fhp["fusion_radial_MLP"]
        if not isinstance(mlp, (list, tuple)) or not all(_is_int(d, 1) for d in mlp):
            raise ValueError(f"fusion_radial_MLP must be a list of positive integers, got {mlp!r}")
    return mace_hp, fhp


def _three_body_settings(mace_hp: dict, fhp: dict) -> dict:
    lmax_sh = fhp["fusion_lmax_sh"]
    return {
        "lmax_sh": int(mace_hp["max_ell"] if lmax_sh is None else lmax_sh),
        "L_int": None if fhp["fusion_L_int"] is None else int(fhp["fusion_L_int"]),
        "radial_mlp": [int(d) for d in fhp["fusion_radial_MLP"]],
    }


def _count(variant: str, mace_hp: dict, fhp: dict, stats: ModelStats, C: int) -> int:
    """Parameter count at width C: closed form when the structure is known, else by building."""
    if predictable(mace_hp):
        spec = None if variant == "baseline" else VARIANTS[variant]
        return predict_count(
            mace_hp, len(stats.elements), C, "mace" if spec is None else spec.weights,
            _three_body_settings(mace_hp, fhp) if spec is not None and spec.three_body else None,
            fhp.get("n_states", 1),
        )
    if variant == "baseline":
        module = build_mace_module({**mace_hp, "num_channels": C}, stats)
        return count_parameters(energy_model(module, fhp.get("n_states", 1)))
    return count_parameters(_build(variant, mace_hp, fhp, stats, C))


def param_count(variant: str, hparams: dict, stats: ModelStats, num_channels: int) -> int:
    """Trainable parameters of ``mace/variant`` (``"baseline"`` too) at ``num_channels``."""
    if variant == "baseline":
        hparams = dict(hparams)
        fhp = {"n_states": pop_n_states(hparams, stats)}
        pop_ordered_states(hparams)  # no parameters
        return _count("baseline", mace_hparams(hparams), fhp, stats, int(num_channels))
    mace_hp, fhp = split_hparams(variant, hparams, stats)
    return _count(variant, mace_hp, fhp, stats, int(num_channels))


def choose_width(variant: str, hparams: dict, stats: ModelStats) -> tuple[int, int, int]:
    """Largest channel count C whose ``mace/variant`` has <= the baseline's parameters.

    The baseline is ``mace/baseline`` with the same hyperparameters (its width is
    ``num_channels``); ``fusion_num_channels`` is ignored here. Returns
    ``(C, n_params_variant(C), n_params_baseline)``. Counts are monotone in C, so this is a
    doubling + bisection search over closed-form counts (microseconds each once the path
    bases are cached).
    """
    mace_hp, fhp = split_hparams(variant, hparams, stats)
    C0 = int(mace_hp["num_channels"])
    budget = _count("baseline", mace_hp, fhp, stats, C0)

    def fits(C: int) -> bool:
        return _count(variant, mace_hp, fhp, stats, C) <= budget

    if not fits(1):
        raise ValueError(
            f"mace/{variant} has more parameters than the baseline ({budget}) even at 1 channel"
        )
    lo, hi = 1, max(C0, 2)  # invariant: fits(lo); find hi with not fits(hi)
    while fits(hi):
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo, _count(variant, mace_hp, fhp, stats, lo), budget


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------
class MaceFusion3Body(nn.Module):
    """mace-torch's MACE with an extra term per layer that needs the edge geometry.

    ``forward`` follows ``ScaleShiftMACE.forward`` (mace-torch 0.3.16) step for step, using
    the wrapped model's own modules and mace's helpers (``prepare_graph`` for the edge vectors,
    ``compute_forces``), with one change: layer ``t`` computes::

        A, sc = interactions[t](h, ...)
        h_new = products[t](A, sc, node_attrs) + extra[t](h, edge_index, species, edge_vectors)

    The edge vectors are computed once from ``batch["positions"]`` (which mace marks
    ``requires_grad``), so forces are ``-dE/dpositions`` through every term. With every
    extra term zero the output is the wrapped model's (tested).

    Args:
        mace: a ``ScaleShiftMACE`` (no pair repulsion, no extra embeddings).
        extra: one module per layer, ``forward(node_feats, edge_index, species,
            edge_vectors=...)`` -> ``[N, products[t].irreps_out.dim]`` (e.g. FusionBlock).
    """

    def __init__(self, mace: nn.Module, extra: nn.ModuleList):
        super().__init__()
        if len(extra) != len(mace.interactions):
            raise ValueError(
                f"need one extra term per layer ({len(mace.interactions)}), got {len(extra)}"
            )
        for name in ("pair_repulsion", "joint_embedding"):
            if hasattr(mace, name):
                raise ValueError(f"MaceFusion3Body does not support mace's {name}")
        self.mace = mace
        self.extra = extra

    def forward(self, batch: dict[str, torch.Tensor], compute_forces: bool = False) -> dict:
        with second_order_pass(compute_forces and self.training):
            return self._forward(batch, compute_forces)

    def _forward(self, batch: dict[str, torch.Tensor], compute_forces: bool) -> dict:
        m = self.mace
        ctx, feats = mace_node_features(m, batch, self.extra)
        node_heads = ctx.node_heads.to(torch.int64)
        arange = ctx.num_atoms_arange.to(torch.int64)
        node_attrs, graph = batch["node_attrs"], batch["batch"]
        node_e0 = m.atomic_energies_fn(node_attrs)[arange, node_heads]
        e0 = scatter_sum(src=node_e0, index=graph, dim=0, dim_size=ctx.num_graphs)
        node_inter_es = node_interaction_energy(m, m.readouts, feats, node_heads)
        inter_e = scatter_sum(node_inter_es, graph, dim=-1, dim_size=ctx.num_graphs)
        forces = None
        if compute_forces:
            forces = forces_from_energy(inter_e, ctx.positions, training=self.training)
        return {"energy": e0.to(ctx.vectors.dtype) + inter_e, "forces": forces}


def _three_body_blocks(mace_hp: dict, fhp: dict, stats: ModelStats, C: int) -> nn.ModuleList:
    tb = _three_body_settings(mace_hp, fhp)
    blocks = []
    for layer in mace_layers(mace_hp, C):
        blocks.append(
            FusionBlock(
                irreps_labels(layer.node_irreps),
                irreps_labels(layer.out_irreps),
                channels=C,
                nu=3,
                tree=THREE_BODY_TREE,
                mode="exact",
                lmax_sh=tb["lmax_sh"],
                L_int=tb["L_int"],
                weights="path",
                num_species=len(stats.elements),
                r_max=float(mace_hp["r_max"]),
                num_bessel=int(mace_hp["num_bessel"]),
                num_polynomial_cutoff=int(mace_hp["num_polynomial_cutoff"]),
                radial_mlp=tb["radial_mlp"],
                avg_num_neighbors=float(stats.avg_num_neighbors),
                # "auto" picks the dense outer product for the root vertex, which in exact
                # mode runs on every *edge* ([D_a, D_b, E, C] materialised: memory-bound).
                # Measured on a QM9 batch (9k edges, 28 channels, h = 0e, 1 thread): tree
                # forward+backward 0.41 s dense vs 0.07 s sparse.
                strategy="sparse",
            )
        )
    return nn.ModuleList(blocks)


def _build(variant: str, mace_hp: dict, fhp: dict, stats: ModelStats, C: int) -> nn.Module:
    spec = VARIANTS[variant]
    mace = build_mace_module({**mace_hp, "num_channels": C}, stats)
    replace_products(mace, map_weights=False, basis="independent", weights=spec.weights)
    if spec.three_body:
        return MaceFusion3Body(
            mace, _three_body_blocks({**mace_hp, "num_channels": C}, fhp, stats, C)
        )
    return energy_model(mace, fhp["n_states"], fhp["ordered_states"])


def build_variant(variant: str, hparams: dict, stats: ModelStats) -> nn.Module:
    """Build ``mace/variant``; the width is :func:`choose_width`'s unless
    ``fusion_num_channels`` is given. Sets ``model.fusion_info`` (JSON-serialisable):
    ``num_channels``, ``n_params``, ``n_params_baseline``, ``num_channels_baseline``,
    ``width`` (``"auto"`` or ``"fixed"``)."""
    mace_hp, fhp = split_hparams(variant, hparams, stats)
    C0 = int(mace_hp["num_channels"])
    if fhp["fusion_num_channels"] is None:
        C, n_pred, n_base = choose_width(variant, hparams, stats)
        how = "auto"
    else:
        C = int(fhp["fusion_num_channels"])
        n_pred = _count(variant, mace_hp, fhp, stats, C)
        n_base = _count("baseline", mace_hp, fhp, stats, C0)
        how = "fixed"
    model = _build(variant, mace_hp, fhp, stats, C)
    n = count_parameters(model)
    if n != n_pred:  # the closed form no longer matches mace-torch: fail loudly
        raise RuntimeError(
            f"mace/{variant} at {C} channels has {n} parameters, predicted {n_pred}: "
            "fusion.models.mace_fusion's parameter count is out of date"
        )
    model.fusion_info = {
        "variant": variant,
        "num_channels": C,
        "n_params": n,
        "num_channels_baseline": C0,
        "n_params_baseline": n_base,
        "width": how,
    }
    return model


def _register(variant: str) -> None:
    def builder(hparams: dict, stats: ModelStats) -> nn.Module:
        return build_variant(variant, hparams, stats)

    builder.__name__ = f"build_mace_{variant.replace('-', '_')}"
    builder.__doc__ = f"mace/{variant}: {VARIANTS[variant].description}."
    register("mace", variant, defaults=MACE_DEFAULTS,
             check=lambda hp: split_hparams(variant, hp))(builder)


for _variant in VARIANTS:
    _register(_variant)
