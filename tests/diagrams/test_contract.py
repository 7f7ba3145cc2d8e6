"""FusionTree: equivariance, brute-force agreement, weight modes, re-association, errors."""

import fusion._mace_first  # noqa: F401  (mace before e3nn)

# isort: split

import math

import pytest
import torch
from e3nn import o3

from fusion.diagrams import FusionTree
from fusion.diagrams.irreps import to_blocks

F64 = torch.float64
L3 = "0e+1o+2e+3o"


def rand_leaves(m: FusionTree, n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, ir.dim, generator=g, dtype=F64) for ir in m.irreps_in]


def improper_rotation(seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return -o3.rand_matrix(dtype=F64)  # det -1: rotation times inversion


def equivariance_error(m: FusionTree, n: int = 3, species=None) -> float:
    xs = rand_leaves(m, n)
    worst = 0.0
    for R in (o3.rand_matrix(dtype=F64), improper_rotation(1)):
        out = m(xs, species)
        rotated = m([x @ ir.D_from_matrix(R).T for x, ir in zip(xs, m.irreps_in)], species)
        worst = max(worst, (rotated - out @ m.irreps_out.D_from_matrix(R).T).abs().max().item())
        assert out.abs().max() > 1e-3  # not trivially zero
    return worst


@pytest.mark.parametrize(
    "tree", ["(a, b)", "((a, b), c)", "(a, (b, c))", "(((a, b), c), d)", "((a, b), (c, d))"]
)
@pytest.mark.parametrize("weights", ["path", "vertex"])
def test_equivariance_lmax3(tree, weights):
    m = FusionTree(tree, L3, L3 + "+1e+2o", channels=2, L_int=3, weights=weights).double()
    assert equivariance_error(m) < 1e-10


def test_equivariance_with_species_and_channel_mixing():
    m = FusionTree(
        "((h, A), (A, A))",
        {"h": "0e+1o", "A": L3},
        "0e+1o+2e",
        channels=3,
        L_int=3,
        weights="vertex",
        num_species=3,
        channel_mixing=True,
    ).double()
    assert m.mixing.shape[1:] == (3, 3)
    assert equivariance_error(m, n=4, species=torch.tensor([0, 2, 1, 2])) < 1e-10


# -- brute force: the dense m-leg coupling tensor of each path, built only here ---------------
def dense_path_tensor(m: FusionTree, path) -> torch.Tensor:
    """[2l_leaf0+1, ..., 2l_leaf(m-1)+1, 2l_root+1] from e3nn.o3.wigner_3j, component norm."""
    t = m.tree

    def rec(node):  # -> tensor with axes (leaves of the subtree in order..., node)
        if t.is_leaf(node):
            return torch.eye(path[node].dim, dtype=F64)
        a, b = t.vertex_children(node)
        A, B = rec(a), rec(b)
        la, lb, lc = path[a].l, path[b].l, path[node].l
        cg = o3.wigner_3j(la, lb, lc, dtype=F64) * math.sqrt(2 * lc + 1)
        ia, ib = "abcdefg"[: A.dim() - 1], "hijklmn"[: B.dim() - 1]
        return torch.einsum(f"{ia}x,{ib}y,xyz->{ia}{ib}z", A, B, cg)

    return rec(t.root)


def brute_force(m: FusionTree, xs, coef: torch.Tensor) -> torch.Tensor:
    """sum_p coef[p, c] * D_p(x_1[c], ..., x_m[c]) in e3nn layout; coef [P, C]."""
    d, t, C = m.diagram, m.tree, m.channels
    blocks = [
        dict(zip(d.leaf_labels[k], to_blocks(x, d.leaf_labels[k], C))) for k, x in enumerate(xs)
    ]
    out = {ir: 0 for ir in d.out_labels}
    for p_idx, path in enumerate(d.paths):
        T = dense_path_tensor(m, path)
        letters = "ABCDEFG"[: t.num_leaves]
        operands = [blocks[k][path[k]] for k in range(t.num_leaves)]  # [N, C, 2l+1]
        spec = ",".join(f"nc{ch}" for ch in letters) + f",{letters}z->ncz"
        value = torch.einsum(spec, *operands, T)
        out[path[t.root]] = out[path[t.root]] + coef[p_idx][None, :, None] * value
    return torch.cat([out[ir].reshape(xs[0].shape[0], -1) for ir in d.out_labels], dim=1)


@pytest.mark.parametrize("strategy", ["dense", "sparse", "auto"])
@pytest.mark.parametrize("tree", ["(a, b)", "((a, b), c)", "((a, b), (c, d))"])
def test_path_mode_equals_brute_force(tree, strategy):
    irreps = {"(a, b)": L3, "((a, b), c)": "0e+1o+2e", "((a, b), (c, d))": "0e+1o"}[tree]
    m = FusionTree(tree, irreps, "0e+1o+1e", channels=2, L_int=2, strategy=strategy).double()
    assert {ins.strategy for ins in m.instructions} <= {"dense", "sparse"}
    xs = rand_leaves(m, 4)
    counts = m.diagram.counts()
    norm = torch.tensor([1 / math.sqrt(counts[p[m.tree.root]]) for p in m.diagram.paths], dtype=F64)
    expected = brute_force(m, xs, m.weight[0].detach() * norm[:, None])
    assert (m(xs) - expected).abs().max() < 1e-12


def test_path_values_and_coefficients():
    m = FusionTree("((a, b), c)", "0e+1o+2e", "0e+1o", channels=3, L_int=2).double()
    xs = rand_leaves(m, 5)
    values = m.path_values(xs)  # per output label [N, C, P, d]
    coef = m.path_coefficients()[0]  # [P, C]
    start, blocks = 0, []
    for v in values:
        P = v.shape[2]
        blocks.append(torch.einsum("ncpd,pc->ncd", v, coef[start : start + P]).flatten(1))
        start += P
    assert (torch.cat(blocks, 1) - m(xs)).abs().max() < 1e-12


@pytest.mark.parametrize("tree", ["((a, b), c)", "(((a, b), c), d)", "((a, b), (c, d))"])
@pytest.mark.parametrize("normalize", [False, True])
def test_vertex_mode_equals_path_mode_with_product_weights(tree, normalize):
    kw = dict(irreps_in="0e+1o+2e", irreps_out="0e+1o+2e", channels=2, L_int=2)
    mv = FusionTree(tree, weights="vertex", normalize=normalize, **kw).double()
    mp = FusionTree(tree, weights="path", normalize=False, **kw).double()
    # path weight = product over vertices of the weight of the triple the path uses there
    with torch.no_grad():
        for k, path in enumerate(mp.diagram.paths):
            w = torch.ones(2, dtype=F64)
            for ins in mv.instructions:
                triple = (path[ins.left], path[ins.right], path[ins.vertex])
                t_idx = ins.triples.index(triple)
                w = w * mv.weight[0, ins.weight_slice[0] + t_idx]
                if normalize:
                    w = w / math.sqrt(sum(1 for *_, c in ins.triples if c == triple[2]))
            mp.weight[0, k] = w
    xs = rand_leaves(mv, 4)
    assert mv.weight.shape[1] < mp.weight.shape[1]  # fewer parameters
    assert (mv(xs) - mp(xs)).abs().max() < 1e-12
    assert (mv.path_coefficients() - mp.path_coefficients()).abs().max() < 1e-12


@pytest.mark.parametrize("weights", ["path", "vertex"])
def test_per_species_weights_select_by_species(weights):
    kw = dict(irreps_in="0e+1o", irreps_out="0e+1o", channels=2, L_int=1, weights=weights)
    m = FusionTree("((a, b), c)", num_species=3, **kw).double()
    single = FusionTree("((a, b), c)", **kw).double()
    species = torch.tensor([2, 0, 1, 2, 0])
    xs = rand_leaves(m, 5)
    out = m(xs, species)
    for s in range(3):
        with torch.no_grad():
            single.weight.copy_(m.weight[s : s + 1])
        rows = species == s
        assert (out[rows] - single([x[rows] for x in xs])).abs().max() < 1e-13
    assert (out[1] - out[0]).abs().max() > 1e-3


def test_one_leaf_tree_is_a_weighted_selection():
    m = FusionTree("h", "0e+1o+2e", "1o+0e", channels=2).double()
    x = rand_leaves(m, 3)[0]
    blocks = dict(zip(m.diagram.leaf_labels[0], to_blocks(x, m.diagram.leaf_labels[0], 2)))
    w = m.weight.detach()[0]
    expected = torch.cat(
        [
            (w[0][None, :, None] * blocks[o3.Irrep("1o")]).flatten(1),
            (w[1][None, :, None] * blocks[o3.Irrep("0e")]).flatten(1),
        ],
        1,
    )
    assert (m([x]) - expected).abs().max() < 1e-14


def _span_residual(source: FusionTree, target: FusionTree, xs) -> float:
    """Worst relative residual of fitting every path of ``target`` (per output irrep and
    channel) by least squares on the paths of ``source``, at the same inputs."""
    worst = 0.0
    for vs, vt in zip(source.path_values(xs), target.path_values(xs)):
        n, C, _, d = vs.shape
        for c in range(C):
            A = vs[:, c].permute(0, 2, 1).reshape(n * d, -1)  # [N*d, P_source]
            B = vt[:, c].permute(0, 2, 1).reshape(n * d, -1)  # [N*d, P_target]
            X = torch.linalg.lstsq(A, B).solution
            worst = max(worst, ((A @ X - B).norm(dim=0) / B.norm(dim=0)).max().item())
    return worst


@pytest.mark.parametrize(
    "source,target",
    [("((a, b), c)", "(a, (b, c))"), ("(a, (b, c))", "((a, b), c)")],
    ids=["left-fits-right", "right-fits-left"],
)
def test_reassociation_spans_the_same_maps(source, target):
    """Both directions: every path of one association is a linear combination of the paths
    of the other (6j recoupling), so each tree reproduces any output of the other."""
    kw = dict(irreps_in="0e+1o+2e", irreps_out="0e+1o+2e+1e", channels=2)
    src = FusionTree(source, **kw).double()
    tgt = FusionTree(target, **kw).double()
    assert src.diagram.counts() == tgt.diagram.counts()
    xs = rand_leaves(src, 40, seed=3)
    assert _span_residual(src, tgt, xs) < 1e-8
    # the fit is a real test: a cap on the internal label loses paths, and then it fails
    capped = FusionTree(source, **kw, L_int=1).double()
    assert _span_residual(capped, tgt, xs) > 1e-2


def test_float32_matches_float64():
    m = FusionTree("((a, b), c)", "0e+1o+2e", "0e+1o", channels=4, L_int=2).double()
    xs = rand_leaves(m, 6)
    ref = m(xs)
    out32 = m.float()([x.float() for x in xs])
    assert out32.dtype == torch.float32
    assert (out32.double() - ref).abs().max() < 1e-4 * ref.abs().max()


@pytest.mark.parametrize("weights", ["path", "vertex"])
def test_gradcheck(weights):
    m = FusionTree(
        "((a, b), c)",
        "0e+1o",
        "0e+1o",
        channels=2,
        L_int=1,
        weights=weights,
        num_species=2,
        channel_mixing=True,
    ).double()
    xs = [x.requires_grad_() for x in rand_leaves(m, 2)]
    species = torch.tensor([1, 0])
    params = dict(m.named_parameters())

    def f(*args):
        leaves, weight, mixing = list(args[:3]), args[3], args[4]
        return torch.func.functional_call(
            m, {**params, "weight": weight, "mixing": mixing}, (leaves, species)
        )

    w = m.weight.detach().clone().requires_grad_()
    mix = m.mixing.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(f, (*xs, w, mix), fast_mode=True)


def test_torchscript_matches_eager():
    m = FusionTree(
        "((h, A), A)",
        {"h": "0e+1o", "A": "0e+1o+2e"},
        "0e+1o",
        channels=3,
        L_int=2,
        weights="vertex",
        num_species=2,
        channel_mixing=True,
    ).double()
    scripted = torch.jit.script(m)
    xs, species = rand_leaves(m, 4), torch.tensor([0, 1, 1, 0])
    assert (scripted(xs, species) - m(xs, species)).abs().max() < 1e-14
    with pytest.raises(Exception, match="leaf 2 'A'"):
        scripted([xs[0], xs[1], xs[2][:, :5]], species)


# -- bad input -----------------------------------------------------------------------------
def test_error_unreachable_outputs():
    with pytest.raises(ValueError) as err:
        FusionTree("(h, A)", {"h": "0e", "A": "0e+1o"}, "0e+2e", channels=4)
    msg = str(err.value)
    assert "tree (h, A) cannot produce output irreps 2e" in msg
    assert "its root can carry {0e, 1o}" in msg


def test_error_inconsistent_channels_between_leaves_and_inputs():
    with pytest.raises(ValueError, match="inconsistent channel counts") as err:
        FusionTree("(h, A)", {"h": "4x0e", "A": "8x0e+8x1o"}, "0e")
    assert "leaf 0 'h'" in str(err.value) and "leaf 1 'A'" in str(err.value)
    with pytest.raises(ValueError, match="inconsistent channel counts"):
        FusionTree("(h, A)", "4x0e+4x1o", "0e", channels=8)
    with pytest.raises(ValueError, match="channel count unknown"):
        FusionTree("(h, A)", "0e+1o", "0e")
    with pytest.raises(ValueError, match="irreps of leaf 1 'A' of tree \\(h, A\\)"):
        FusionTree("(h, A)", {"h": "4x0e", "A": "4x0e+2x1o"}, "0e")


def test_error_wrong_tensor_shapes_name_the_leaf():
    m = FusionTree("((h, A), A)", {"h": "0e", "A": "0e+1o"}, "0e", channels=2)
    h, A = torch.randn(5, 2), torch.randn(5, 8)
    assert m([h, A, A]).shape == (5, 2)
    with pytest.raises(ValueError) as err:
        m([h, A, torch.randn(5, 7)])
    msg = str(err.value)
    assert "leaf 2 'A' of tree ((h, A), A)" in msg
    assert "irreps 2x0e+2x1o, expected shape [N, 8]" in msg and "got shape [5, 7]" in msg
    with pytest.raises(ValueError, match=r"got shape \[4, 8\] \(leaf 0 has 5 rows\)"):
        m([h, A, torch.randn(4, 8)])
    with pytest.raises(ValueError, match="expected 3 leaf tensors, got 2"):
        m([h, A])
    ms = FusionTree("(h, A)", {"h": "0e", "A": "0e"}, "0e", channels=2, num_species=2)
    with pytest.raises(ValueError, match="per-species weights .*pass species"):
        ms([h, h])
    with pytest.raises(ValueError, match=r"species must have shape \[5\], got \[4\]"):
        ms([h, h], torch.zeros(4, dtype=torch.long))


def test_error_bad_options():
    with pytest.raises(ValueError, match="weights must be one of"):
        FusionTree("(h, A)", "0e", "0e", channels=1, weights="edge")
    with pytest.raises(ValueError, match="binary"):
        FusionTree("(h, A, A)", "0e", "0e", channels=1)
