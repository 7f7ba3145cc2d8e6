"""Parameter counts of mace-torch's MACE and the ``mace/fusion*`` variants in closed form.

Counted from the irreps alone (no module is built: microseconds per width once the path
bases are cached), so :func:`fusion.models.mace_fusion.choose_width` can search widths; the
builders check every prediction against the module they built
(``tests/models/test_mace_fusion.py``). The layer structure mirrors
``mace.modules.models.MACE.__init__`` (mace-torch 0.3.16).
"""

from __future__ import annotations

import fusion._mace_first  # noqa: F401  (mace before e3nn)

# isort: split

from dataclasses import dataclass
from functools import lru_cache

import torch
from e3nn import o3
from mace.modules.irreps_tools import tp_out_irreps_with_instructions

from fusion.blocks.product import _cached_basis
from fusion.diagrams import FusionDiagram
from fusion.diagrams.contract import independent_paths
from fusion.diagrams.symmetric import coupling_irreps, enumerate_chain_paths, mace_filter
from fusion.models.mace import hidden_irreps

__all__ = ["THREE_BODY_TREE", "irreps_labels", "mace_layers", "predict_count", "predictable"]

# The 3-body block's tree. (h, (A, A)) rather than ((h, A), A): the same function space
# (recoupling is invertible; the same number of independent paths), but its root is the only
# weighted vertex and couples h with an unweighted pair of messages, so the exact sum over
# distinct neighbours runs the weighted step once per atom (MessageFusion._exact_per_atom).
THREE_BODY_TREE = "(h, (A, A))"

# Interaction classes whose parameter count is predicted in closed form.
_KNOWN_INTERACTIONS = ("RealAgnosticInteractionBlock", "RealAgnosticResidualInteractionBlock")


# --------------------------------------------------------------------------------------
# Layer structure of mace-torch's MACE (mirrors mace.modules.models.MACE.__init__)
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Layer:
    interaction: str  # class name
    node_irreps: o3.Irreps  # features entering the layer (h)
    target_irreps: o3.Irreps  # interaction output = product input (C x sh labels)
    out_irreps: o3.Irreps  # product output (hidden, or scalars in the last layer)
    readout: str  # "linear" | "nonlinear"


def irreps_labels(irreps: o3.Irreps) -> str:
    return "+".join(str(ir) for _, ir in irreps)


def mace_layers(hp: dict, C: int) -> list[_Layer]:
    """Irreps of every interaction/product/readout of the MACE built from ``hp`` at width C."""
    hidden = hidden_irreps(C, int(hp["max_L"]))
    n_int = int(hp["num_interactions"])
    sh = o3.Irreps.spherical_harmonics(int(hp["max_ell"]))
    sh_inter = sh
    if hidden.count(o3.Irrep(0, -1)) > 0:  # never for our hidden irreps; as mace does
        sh_inter = o3.Irreps("+".join(f"1x{i}e+1x{i}o" for i in range(int(hp["max_ell"]) + 1)))
    target_first = (sh * C).sort()[0].simplify()
    target = (sh_inter * C).sort()[0].simplify()
    scalars = o3.Irreps(f"{C}x0e")
    layers = [
        _Layer(
            hp["interaction_first"],
            scalars,
            target_first,
            hidden if n_int > 1 else scalars,
            "linear",
        )
    ]
    for i in range(n_int - 1):
        last = i == n_int - 2
        layers.append(
            _Layer(
                hp["interaction"],
                hidden,
                target,
                scalars if last else hidden,
                "nonlinear" if last else "linear",
            )
        )
    return layers


# --------------------------------------------------------------------------------------
# Parameter counts in closed form (checked against built modules in the tests)
# --------------------------------------------------------------------------------------
def _n_linear(a: o3.Irreps, b: o3.Irreps) -> int:
    """e3nn ``o3.Linear(a, b)`` (no biases): every pair of equal irreps."""
    return sum(m1 * m2 for m1, i1 in a for m2, i2 in b if i1 == i2)


def _n_fctp(a: o3.Irreps, b: o3.Irreps, c: o3.Irreps) -> int:
    """e3nn ``FullyConnectedTensorProduct(a, b, c)``: one ``uvw`` block per allowed triple."""
    return sum(m1 * m2 * m3 for m1, i1 in a for m2, i2 in b for m3, i3 in c if i3 in i1 * i2)


def _n_mlp(dims) -> int:
    """e3nn ``FullyConnectedNet`` / our ``RadialMLP`` (no biases)."""
    return sum(a * b for a, b in zip(dims, dims[1:]))


def _n_interaction(layer: _Layer, hp: dict, n_elements: int) -> int:
    """mace-torch's RealAgnostic(Residual)InteractionBlock."""
    attrs = o3.Irreps(f"{n_elements}x0e")
    sh = o3.Irreps.spherical_harmonics(int(hp["max_ell"]))
    nf = layer.node_irreps  # edge_irreps = node_feats_irreps
    mid, instructions = tp_out_irreps_with_instructions(nf, sh, layer.target_irreps)
    tp_weights = sum(nf[i1].mul * sh[i2].mul for i1, i2, *_ in instructions)  # "uvu"
    n = _n_linear(nf, nf)  # linear_up
    n += _n_mlp([int(hp["num_bessel"]), *map(int, hp["radial_MLP"]), tp_weights])
    n += _n_linear(mid, layer.target_irreps)  # linear
    if layer.interaction == "RealAgnosticResidualInteractionBlock":
        n += _n_fctp(nf, attrs, layer.out_irreps)  # skip_tp on h (the residual)
    else:
        n += _n_fctp(layer.target_irreps, attrs, layer.target_irreps)  # skip_tp on the message
    return n


def _n_readout(layer: _Layer, hp: dict) -> int:
    if layer.readout == "linear":
        return _n_linear(layer.out_irreps, o3.Irreps("0e"))
    mlp = o3.Irreps(hp["MLP_irreps"])
    return _n_linear(layer.out_irreps, mlp) + _n_linear(mlp, o3.Irreps("0e"))


@lru_cache(maxsize=64)
def _product_weight_counts(coupling: str, outs: str, correlation: int) -> tuple[int, int, int, int]:
    """Per (element, channel) weights of one product: (mace full paths, independent paths,
    vertex root triples, vertex inner triples; the inner ones are not per element)."""
    sb, _, _ = _cached_basis(coupling, outs, correlation, "independent", None)
    # mace's full basis: every chain path under mace's own label filter (correlation 4: natural
    # parity), which the independent basis does not apply (see SymmetricBasis)
    n_full = sum(
        1
        for nu in range(1, correlation + 1)
        for p in enumerate_chain_paths(sb.irs, nu, mace_filter(nu))
        if p.ir_out in sb.irreps_out
    )
    root, inner = set(), set()  # as FusionProduct._init_vertex_weights
    for g in sb.groups:
        for p in g.paths:
            trip = p.vertices(sb.irs)
            root.add((p.nu, trip[-1] if trip else (p.ir_out,)))
            inner.update((p.nu, d, t) for d, t in enumerate(trip[:-1]))
    return n_full, sb.num_paths, len(root), len(inner)


@lru_cache(maxsize=64)
def _mace_reduced_weight_count(coupling: str, outs: str, correlation: int) -> int:
    """Per (element, channel) weights of mace's product with ``use_reduced_cg=True`` (the
    cuequivariance basis: the independent paths, plus one all-zero column where mace found
    none): counted on a 1-channel, 1-element SymmetricContraction."""
    from mace.modules.symmetric_contraction import SymmetricContraction

    one = "+".join(f"1x{ir}" for ir in coupling.split("+"))
    with torch.random.fork_rng(devices=[]):  # leave the global RNG as a cached call would
        sc = SymmetricContraction(
            o3.Irreps(one), o3.Irreps("+".join(f"1x{ir}" for ir in outs.split("+"))),
            correlation=correlation, num_elements=1, use_reduced_cg=True,
        )
    return sum(p.numel() for p in sc.parameters() if p.requires_grad)


def _n_product(layer: _Layer, hp: dict, n_elements: int, kind: str) -> int:
    """mace's EquivariantProductBasisBlock (``kind="mace"``; full or, with
    ``use_reduced_cg``, reduced basis) or a FusionProduct (``"path"``/``"vertex"``,
    independent basis): weights + linear."""
    irs, C = coupling_irreps(layer.target_irreps)
    outs, _ = coupling_irreps(layer.out_irreps)
    key = ("+".join(map(str, irs)), "+".join(map(str, outs)), int(hp["correlation"]))
    n_full, n_indep, n_root, n_inner = _product_weight_counts(*key)
    if kind == "mace" and hp["use_reduced_cg"]:
        n_full = _mace_reduced_weight_count(*key)
    per_channel = {
        "mace": n_elements * n_full,
        "path": n_elements * n_indep,
        "vertex": n_elements * n_root + n_inner,
    }[kind]
    return per_channel * C + _n_linear(layer.out_irreps, layer.out_irreps)


@lru_cache(maxsize=64)
def _tree_paths(h: str, lmax_sh: int, outs: str, L_int: int | None) -> int:
    """Weights per (species, channel) of the 3-body tree ``((h, A), A)``: its independent
    symmetrised paths (the two message leaves carry the same tensor; see MessageFusion)."""
    A = "+".join(str(o3.Irrep(l, (-1) ** l)) for l in range(lmax_sh + 1))
    d = FusionDiagram(THREE_BODY_TREE, {"h": h, "A": A}, outs, L_int=L_int)
    leaves = tuple(tuple(str(ir) for ir in ls) for ls in d.leaf_labels)
    outs_t = tuple(str(ir) for ir in d.out_labels)
    return len(independent_paths(str(d.tree), leaves, outs_t, L_int, ((1, 2),)))


def _n_three_body(layer: _Layer, hp: dict, n_elements: int, tb: dict) -> int:
    """The layer's FusionBlock: EdgeMessage (linear, radial MLP) + path weights."""
    labels_h, C = coupling_irreps(layer.node_irreps)
    sh = [o3.Irrep(l, (-1) ** l) for l in range(tb["lmax_sh"] + 1)]
    edge_paths = sum(1 for m in sh for y in sh for h in labels_h if m in y * h)
    n = _n_linear(layer.node_irreps, layer.node_irreps)
    n += _n_mlp([int(hp["num_bessel"]), *tb["radial_mlp"], edge_paths * C])
    n_tree = _tree_paths(irreps_labels(layer.node_irreps), tb["lmax_sh"],
                         irreps_labels(layer.out_irreps), tb["L_int"])
    return n + n_elements * n_tree * C


def predictable(hp: dict) -> bool:
    """Whether :func:`predict_count` knows the interaction blocks of ``hp``."""
    return (
        hp["interaction"] in _KNOWN_INTERACTIONS
        and hp["interaction_first"] in _KNOWN_INTERACTIONS
    )


def predict_count(mace_hp: dict, n_elements: int, C: int, product: str,
                  three_body: dict | None = None, n_states: int = 1) -> int:
    """Closed-form trainable parameter count of a MACE at width ``C``: ``product`` is
    ``"mace"`` (mace-torch's block, full or reduced basis per ``use_reduced_cg``), ``"path"``
    or ``"vertex"`` (FusionProduct weights); ``three_body``: the 3-body block settings
    (``lmax_sh``, ``L_int``, ``radial_mlp``) or None; one readout stack per state."""
    hp = {**mace_hp, "num_channels": C}
    layers = mace_layers(hp, C)
    n = n_elements * C  # node embedding
    for layer in layers:
        n += _n_interaction(layer, hp, n_elements)
        n += _n_product(layer, hp, n_elements, product)
        n += n_states * _n_readout(layer, hp)
    if three_body is not None:
        n += sum(_n_three_body(layer, hp, n_elements, three_body) for layer in layers)
    return n
