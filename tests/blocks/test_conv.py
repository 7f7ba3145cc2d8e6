"""FusionConv (the interaction's edge tensor product + neighbour sum as one contraction) and the
per-atom exact 3-body evaluation: both must compute exactly what they replace."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from e3nn import o3
from mace.modules.irreps_tools import tp_out_irreps_with_instructions
from mace.tools.scatter import scatter_sum

import fusion._mace_first  # noqa: F401  (mace before e3nn)
from fusion.blocks.conv import FusionConv, install_fusion_conv
from fusion.blocks.fusion_block import MessageFusion
from fusion.diagrams.contract import independent_paths
from fusion.diagrams.paths import FusionDiagram
from fusion.models.registry import ModelStats, build_model
from tests.models.test_mace_fusion import make_batch

pytestmark = pytest.mark.usefixtures("float64_default")


def mace_conv_tp(node_irreps: str, max_ell: int):
    """The conv_tp mace-torch builds for these node irreps (target: sh x C)."""
    nf = o3.Irreps(node_irreps)
    sh = o3.Irreps.spherical_harmonics(max_ell)
    target = (sh * nf[0].mul).sort()[0].simplify()
    mid, instructions = tp_out_irreps_with_instructions(nf, sh, target)
    return o3.TensorProduct(nf, sh, mid, instructions=instructions, shared_weights=False,
                            internal_weights=False)


@pytest.mark.parametrize("node_irreps, max_ell", [
    ("6x0e", 3),  # first layer (scalars in)
    ("5x0e+5x1o", 3),  # hidden max_L 1 (paper)
    ("4x0e+4x1o+4x2e", 2),
])
def test_fusion_conv_is_e3nn_tensor_product_plus_scatter(node_irreps, max_ell):
    tp = mace_conv_tp(node_irreps, max_ell)
    conv = FusionConv(tp)
    torch.manual_seed(0)
    N, E = 7, 30
    x = torch.randn(N, tp.irreps_in1.dim, requires_grad=True)
    y = torch.randn(E, tp.irreps_in2.dim, requires_grad=True)
    w = torch.randn(E, tp.weight_numel, requires_grad=True)
    edge_index = torch.randint(0, N, (2, E))
    ref = scatter_sum(tp(x[edge_index[0]], y, w), edge_index[1], dim=0, dim_size=N)
    out = conv(x, y, w, edge_index)
    assert out.shape == ref.shape and ref.abs().max() > 1.0
    assert (out - ref).abs().max() < 1e-12
    # gradients, and second derivatives (the force loss differentiates the forces)
    proj = torch.randn_like(ref)
    g_ref = torch.autograd.grad((ref * proj).sum(), (x, y, w), create_graph=True)
    g_out = torch.autograd.grad((out * proj).sum(), (x, y, w), create_graph=True)
    for a, b in zip(g_out, g_ref):
        assert (a - b).abs().max() < 1e-12
    gg_ref = torch.autograd.grad(sum(g.square().sum() for g in g_ref), (x, y, w))
    gg_out = torch.autograd.grad(sum(g.square().sum() for g in g_out), (x, y, w))
    for a, b in zip(gg_out, gg_ref):
        assert (a - b).abs().max() < 1e-10 * max(1.0, b.abs().max().item())


def test_fusion_conv_refuses_what_it_cannot_reproduce():
    fctp = o3.FullyConnectedTensorProduct("2x0e+2x1o", "1x0e+1x1o", "2x0e")
    with pytest.raises(ValueError, match="'uvu' instructions and per-edge external weights"):
        FusionConv(fctp)
    nf, sh = o3.Irreps("2x0e+3x1o"), o3.Irreps.spherical_harmonics(1)
    mid, ins = tp_out_irreps_with_instructions(nf, sh, o3.Irreps("3x0e+3x1o"))
    tp = o3.TensorProduct(nf, sh, mid, instructions=ins, shared_weights=False,
                          internal_weights=False)
    with pytest.raises(ValueError, match="one multiplicity for every node irrep"):
        FusionConv(tp)


STATS = ModelStats(elements=(1, 6, 8), atomic_energies=np.array([-1.0, -5.0, -7.0]),
                   avg_num_neighbors=3.0)
SMALL = {"num_channels": 6, "max_L": 1, "max_ell": 3, "correlation": 3,
         "num_interactions": 2, "radial_MLP": [8]}




@pytest.mark.parametrize("variant", ["baseline", "fusion", "fusion-3body"])
def test_models_with_and_without_fusion_conv_agree(variant):
    """Same weights, e3nn path vs FusionConv: energies, forces and the gradient of a force
    loss w.r.t. every parameter agree (float64)."""
    extra = {"fusion_radial_MLP": [8]} if variant == "fusion-3body" else {}
    models = []
    for kernel in ("e3nn", "fusion"):
        torch.manual_seed(1)
        models.append(build_model("mace", variant,
                                  {**SMALL, **extra, "interaction_kernel": kernel}, STATS))
    slow, fast = models
    fast.load_state_dict(slow.state_dict())
    assert not any(isinstance(m, FusionConv) for m in slow.modules())
    assert sum(isinstance(m, FusionConv) for m in fast.modules()) == 2
    grads = []
    for model in (slow, fast):
        model.train()
        batch = make_batch()
        out = model({k: v.clone() for k, v in batch.items()}, compute_forces=True)
        loss = out["energy"].square().sum() + 10.0 * out["forces"].square().sum()
        model.zero_grad()
        loss.backward()
        grads.append((out["energy"].detach(), out["forces"].detach(),
                      [p.grad.clone() for p in model.parameters()]))
    (e0, f0, g0), (e1, f1, g1) = grads
    assert (e0 - e1).abs().max() < 1e-12 and (f0 - f1).abs().max() < 1e-12
    assert f0.abs().max() > 1e-3
    for a, b in zip(g0, g1):
        assert (a - b).abs().max() < 1e-10 * max(1.0, b.abs().max().item())


def test_interaction_kernel_is_checked():
    with pytest.raises(ValueError, match="interaction_kernel: expected 'fusion' or 'e3nn'"):
        build_model("mace", "baseline", {**SMALL, "interaction_kernel": "cuda"}, STATS)


def test_install_is_idempotent_and_counts_interactions():
    model = build_model("mace", "baseline", {**SMALL, "interaction_kernel": "e3nn"}, STATS)
    assert install_fusion_conv(model) == 2
    assert install_fusion_conv(model) == 0


# --------------------------------------------------------------------------------------
# Exact 3-body sum with the weighted step per atom
# --------------------------------------------------------------------------------------
def _brute_force(mf: MessageFusion, h, m, receiver, species):
    """sum over ordered distinct neighbour pairs of Tree(h_i, m_ij, m_ik), one by one."""
    out = torch.zeros(h.shape[0], mf.irreps_out.dim)
    node = mf.fusion.split_leaf
    for i in range(h.shape[0]):
        edges = (receiver == i).nonzero().flatten().tolist()
        for a in edges:
            for b in edges:
                if a == b:
                    continue
                pair = iter([m[a:a + 1], m[b:b + 1]])
                leaves = [h[i:i + 1] if k == node else next(pair) for k in range(3)]
                out[i] += mf.fusion(leaves, species[i:i + 1])[0]
    return out


@pytest.mark.parametrize("tree", ["(h, (A, A))", "((A, A), h)"])
def test_per_atom_exact_three_body_is_the_distinct_pair_sum(tree):
    torch.manual_seed(0)
    mf = MessageFusion("0e+1o", "0e+1o+2e", "0e+1o", channels=3, tree=tree, mode="exact",
                       num_species=2)
    assert mf.per_atom_exact
    N, E = 5, 16
    h = torch.randn(N, mf.irreps_node.dim, requires_grad=True)
    m = torch.randn(E, mf.irreps_message.dim, requires_grad=True)
    receiver = torch.randint(0, N, (E,))
    species = torch.randint(0, 2, (N,))
    fast = mf(h, m, receiver, species)
    ref = _brute_force(mf, h, m, receiver, species)
    assert ref.abs().max() > 1e-2 and (fast - ref).abs().max() < 1e-12
    mf.per_atom_exact = False  # the per-edge Moebius evaluation of the same tree
    slow = mf(h, m, receiver, species)
    assert (fast - slow).abs().max() < 1e-12
    proj = torch.randn_like(fast)
    for a, b in zip(torch.autograd.grad((fast * proj).sum(), (h, m)),
                    torch.autograd.grad((slow * proj).sum(), (h, m))):
        assert (a - b).abs().max() < 1e-12


def test_left_comb_trees_keep_the_per_edge_evaluation():
    """((h, A), A): the root's own leaf is a message, so the weighted step stays per edge."""
    mf = MessageFusion("0e+1o", "0e+1o", "0e", channels=2, mode="exact")
    assert mf.fusion.split_leaf == 2 and not mf.per_atom_exact
    vertex = MessageFusion("0e+1o", "0e+1o", "0e", channels=2, mode="exact",
                           tree="(h, (A, A))", weights="vertex")
    assert vertex.fusion.split_leaf == -1 and not vertex.per_atom_exact  # inner vertex weighted


@pytest.mark.parametrize("h, lmax, outs", [
    ("0e", 3, "0e+1o"),  # first layer of mace/fusion-3body (max_L 1)
    ("0e+1o", 3, "0e"),  # last layer
    ("0e+1o+2e", 2, "0e+1o+2e"),
])
def test_recoupled_three_body_tree_has_the_same_number_of_independent_paths(h, lmax, outs):
    """(h, (A, A)) and ((h, A), A) span the same symmetric trilinear maps, so the 3-body
    block's weight count (and mace/fusion-3body's width) does not change with the tree."""
    A = "+".join(str(o3.Irrep(l, (-1) ** l)) for l in range(lmax + 1))
    counts = []
    for tree in ("((h, A), A)", "(h, (A, A))"):
        d = FusionDiagram(tree, {"h": h, "A": A}, outs)
        leaves = tuple(tuple(str(ir) for ir in ls) for ls in d.leaf_labels)
        counts.append(len(independent_paths(str(d.tree), leaves,
                                            tuple(str(ir) for ir in d.out_labels), None,
                                            ((1, 2),))))
    assert counts[0] == counts[1] > 0


def test_three_body_block_fast_path_equals_the_generic_evaluation_and_scripts():
    """FusionBlock with (h, (A, A)) in exact mode hands component-major messages to the
    per-atom evaluation (sparse bilinear pair coupling); the generic path (e3nn layout,
    per-edge Moebius terms) and TorchScript give the same numbers and gradients."""
    from fusion.blocks.fusion_block import FusionBlock

    torch.manual_seed(4)
    block = FusionBlock("3x0e+3x1o", "3x0e+3x1o", nu=3, tree="(h, (A, A))", mode="exact",
                        lmax_sh=2, num_species=2, radial_mlp=[4], strategy="sparse")
    assert block.fusion.per_atom_exact
    pos = torch.randn(6, 3, requires_grad=True)
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 5, 0, 2, 1, 5], [1, 0, 3, 2, 5, 4, 2, 0, 5, 1]])
    h = torch.randn(6, block.irreps_in.dim, requires_grad=True)
    species = torch.tensor([0, 1, 1, 0, 1, 0])
    fast = block(h, edge_index, species, positions=pos)
    scripted = torch.jit.script(block)(h, edge_index, species, positions=pos)
    block.fusion.per_atom_exact = False
    slow = block(h, edge_index, species, positions=pos)
    assert slow.abs().max() > 1e-3
    assert (fast - slow).abs().max() < 1e-12 and (scripted - slow).abs().max() < 1e-12
    for a, b in zip(torch.autograd.grad(fast.square().sum(), (h, pos), create_graph=True),
                    torch.autograd.grad(slow.square().sum(), (h, pos), create_graph=True)):
        assert (a - b).abs().max() < 1e-11
