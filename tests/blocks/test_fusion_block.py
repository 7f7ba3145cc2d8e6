"""FusionBlock: equivariance, exact = distinct-neighbour loops, density = all tuples, errors."""

import fusion._mace_first  # noqa: F401  (mace before e3nn)

# isort: split

import itertools

import pytest
import torch
from e3nn import o3

from fusion.blocks.fusion_block import EdgeMessage, FusionBlock, MessageFusion

F64 = torch.float64


def small_graph(n: int = 6, r_max: float = 3.0, seed: int = 0):
    """Random cluster; edges j -> i within r_max (both directions), as mace-torch builds them."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(n, 3, generator=g, dtype=F64) * 2.5
    d = torch.cdist(pos, pos)
    sender, receiver = torch.nonzero((d < r_max) & (d > 0), as_tuple=True)
    species = torch.randint(0, 2, (n,), generator=g)
    return pos, torch.stack([sender, receiver]), species


def make_block(mode, nu=3, **kw) -> FusionBlock:
    torch.manual_seed(0)
    args = dict(
        irreps_node="0e+1o",
        irreps_out="0e+1o+2e",
        channels=3,
        nu=nu,
        mode=mode,
        lmax_sh=2,
        L_int=2,
        num_species=2,
        r_max=3.0,
        radial_mlp=(16,),
        avg_num_neighbors=3.0,
    )
    args.update(kw)
    return FusionBlock(**args).double()


@pytest.mark.parametrize("mode", ["density", "exact"])
@pytest.mark.parametrize("weights", ["path", "vertex"])
def test_equivariance(mode, weights):
    block = make_block(mode, weights=weights, channel_mixing=weights == "vertex")
    pos, edge_index, species = small_graph()
    h = torch.randn(pos.shape[0], block.irreps_in.dim, dtype=F64)
    out = block(h, edge_index, species, positions=pos)
    assert out.abs().max() > 1e-3
    for R in (o3.rand_matrix(dtype=F64), -o3.rand_matrix(dtype=F64)):  # rotation, improper
        shift = torch.randn(3, dtype=F64)  # translations change nothing either
        out_R = block(
            h @ block.irreps_in.D_from_matrix(R).T,
            edge_index,
            species,
            positions=pos @ R.T + shift,
        )
        assert (out_R - out @ block.irreps_out.D_from_matrix(R).T).abs().max() < 1e-10


def tree_on_rows(block: FusionBlock, leaves, species):
    return block.fusion.fusion(leaves, species)


@pytest.mark.parametrize("nu", [3, 4])
def test_exact_equals_loop_over_distinct_neighbours(nu):
    block = make_block("exact", nu=nu, avg_num_neighbors=1.0)
    pos, edge_index, species = small_graph(5 if nu == 3 else 4)
    n = pos.shape[0]
    h = torch.randn(n, block.irreps_in.dim, dtype=F64)
    sender, receiver = edge_index
    vec = pos[receiver] - pos[sender]
    messages = block.message(h, vec, sender) / block.avg_num_neighbors  # [E, .]
    out = block(h, edge_index, species, positions=pos)

    expected = torch.zeros_like(out)
    for i in range(n):
        incoming = torch.nonzero(receiver == i).flatten().tolist()
        for edges in itertools.permutations(incoming, nu - 1):  # distinct neighbours, ordered
            leaves = [h[i : i + 1]] + [messages[e : e + 1] for e in edges]
            expected[i] += tree_on_rows(block, leaves, species[i : i + 1])[0]
    assert expected.abs().max() > 1e-3
    assert (out - expected).abs().max() < 1e-12


def test_density_equals_loop_over_all_neighbour_pairs():
    block = make_block("density")
    pos, edge_index, species = small_graph(4)
    n = pos.shape[0]
    h = torch.randn(n, block.irreps_in.dim, dtype=F64)
    sender, receiver = edge_index
    messages = block.message(h, pos[receiver] - pos[sender], sender) / block.avg_num_neighbors
    out = block(h, edge_index, species, positions=pos)
    expected = torch.zeros_like(out)
    for i in range(n):
        incoming = torch.nonzero(receiver == i).flatten().tolist()
        for j, k in itertools.product(incoming, repeat=2):  # includes j == k
            leaves = [h[i : i + 1], messages[j : j + 1], messages[k : k + 1]]
            expected[i] += tree_on_rows(block, leaves, species[i : i + 1])[0]
    assert (out - expected).abs().max() < 1e-12


def test_edge_vectors_input_and_mace_convention():
    block = make_block("exact")
    pos, edge_index, species = small_graph()
    h = torch.randn(pos.shape[0], block.irreps_in.dim, dtype=F64)
    vec = pos[edge_index[1]] - pos[edge_index[0]]  # receiver - sender, as mace-torch
    a = block(h, edge_index, species, positions=pos)
    b = block(h, edge_index, species, edge_vectors=vec)
    assert torch.equal(a, b)


def test_gradcheck_positions_and_features():
    block = make_block("exact", irreps_out="0e+1o", channels=2, lmax_sh=1, L_int=1)
    pos, edge_index, species = small_graph(3)
    h = torch.randn(pos.shape[0], block.irreps_in.dim, dtype=F64, requires_grad=True)
    pos.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda p, x: block(x, edge_index, species, positions=p), (pos, h), fast_mode=True
    )


def test_torchscript_matches_eager():
    block = make_block("exact")
    scripted = torch.jit.script(block)
    pos, edge_index, species = small_graph()
    h = torch.randn(pos.shape[0], block.irreps_in.dim, dtype=F64)
    a = block(h, edge_index, species, positions=pos)
    assert (scripted(h, edge_index, species, positions=pos) - a).abs().max() < 1e-13


def test_irreps_and_custom_tree():
    block = FusionBlock("4x0e+4x1o", "0e", nu=None, tree="(h, (A, A))", mode="exact", lmax_sh=2)
    assert str(block.irreps_in) == "4x0e+4x1o" and str(block.irreps_out) == "4x0e"
    assert block.nu == 3 and str(block.fusion.tree) == "(h, (A, A))"
    assert str(block.message.irreps_out) == "4x0e+4x1o+4x2e"
    m = MessageFusion("2x0e", "2x0e+2x1o", "0e", nu=4, mode="density")
    assert str(m.tree) == "(((h, A), A), A)" and m.irreps_in == (m.irreps_node, m.irreps_message)


def test_bad_inputs():
    block = make_block("exact")
    pos, edge_index, species = small_graph()
    n = pos.shape[0]
    h = torch.randn(n, block.irreps_in.dim, dtype=F64)
    with pytest.raises(ValueError, match=r"node_feats expected shape \[N, 12\].*got \[6, 5\]"):
        block(h[:, :5], edge_index, species, positions=pos)
    with pytest.raises(ValueError, match=r"edge_index expected shape \[2, E\]"):
        block(h, edge_index.t(), species, positions=pos)
    with pytest.raises(ValueError, match="pass positions"):
        block(h, edge_index, species)
    with pytest.raises(ValueError, match=r"species must have shape \[6\]"):
        block(h, edge_index, species[:3], positions=pos)
    fusion = block.fusion
    with pytest.raises(ValueError, match=r"messages \(irreps 3x0e\+3x1o\+3x2e\) expected shape"):
        fusion(h, torch.randn(4, 7, dtype=F64), torch.zeros(4, dtype=torch.long), species)
    with pytest.raises(ValueError, match="exact mode supports nu <= 4"):
        MessageFusion("2x0e", "2x0e", "0e", nu=5, mode="exact")
    with pytest.raises(ValueError, match="exactly one leaf named 'h'"):
        MessageFusion("2x0e", "2x0e", "0e", tree="(A, A)", nu=None)
    with pytest.raises(ValueError, match="nu=3 but tree"):
        MessageFusion("2x0e", "2x0e", "0e", tree="((h, A), (A, A))", nu=3)
    with pytest.raises(ValueError, match="mode must be one of"):
        MessageFusion("2x0e", "2x0e", "0e", mode="fast")
    with pytest.raises(ValueError, match="message irreps 2o cannot come"):
        EdgeMessage("2x0e", "0e+2o", lmax_sh=2)
    with pytest.raises(ValueError, match="cannot produce output irreps 3o"):
        FusionBlock("2x0e", "3o", lmax_sh=1)
    with pytest.raises(ValueError, match="lmax_sh must be an integer >= 0, got -1"):
        FusionBlock("2x0e", "0e", lmax_sh=-1)


def _weight_jacobian(fusion: MessageFusion, h, messages, receiver) -> torch.Tensor:
    """d output / d weight for one species and one channel: ``[rows, weights]`` (the block
    is linear in its path weights, so its rank is the dimension of the function space)."""
    tree = fusion.fusion
    W = tree.weight.shape[1]
    cols = []
    for p in range(W):
        with torch.no_grad():
            tree.weight.zero_()
            tree.weight[0, p, 0] = 1.0
            cols.append(fusion(h, messages, receiver).flatten())
    return torch.stack(cols, dim=1)


def _rank(x: torch.Tensor) -> int:
    s = torch.linalg.svdvals(x)
    return int((s > 1e-9 * s[0]).sum())


@pytest.mark.parametrize(
    "h,outs,full_w,indep_w",
    [
        ("0e+1o+2e", "0e+1o+2e", 98, 58),  # issue 18
        ("0e", "0e+1o", 10, 7),  # mace/fusion-3body (defaults), layer 1
        ("0e+1o", "0e", 10, 7),  # mace/fusion-3body (defaults), layer 2
        ("0e", "0e+1o+2e+3o+1e+2o+3e", 34, 18),  # 1e: only antisymmetric paths, zero
    ],
)
@pytest.mark.parametrize("mode", ["density", "exact"])
def test_symmetrised_basis_weights_equal_rank(h, outs, full_w, indep_w, mode):
    """The two message leaves of ((h, A), A) carry the same tensor: the independent basis
    keeps weights = rank of the weights -> outputs map, and spans what the full basis spans
    (the full block's outputs are reproduced by least squares on the independent one's)."""
    A = "0e+1o+2e+3o"
    full = MessageFusion(h, A, outs, channels=1, mode=mode, basis="full").double()
    ind = MessageFusion(h, A, outs, channels=1, mode=mode).double()
    assert ind.basis == "independent"
    assert full.fusion.weight.shape[1] == full_w and ind.fusion.weight.shape[1] == indep_w
    g = torch.Generator().manual_seed(0)
    n, per_node = 30, 3
    receiver = torch.arange(n).repeat_interleave(per_node)
    hx = torch.randn(n, full.irreps_node.dim, generator=g, dtype=F64)
    msg = torch.randn(n * per_node, full.irreps_message.dim, generator=g, dtype=F64)
    J_full = _weight_jacobian(full, hx, msg, receiver)
    J_ind = _weight_jacobian(ind, hx, msg, receiver)
    assert J_full.shape[0] > 2 * full_w
    assert _rank(J_full) == _rank(J_ind) == indep_w
    coef = torch.linalg.lstsq(J_ind, J_full).solution
    assert (J_ind @ coef - J_full).norm() < 1e-9 * J_full.norm()
    zero = [str(ir) for ir in ind.fusion.vanishing_outputs]
    assert zero == (["1e"] if "1e" in outs else [])


def test_independent_basis_needs_path_weights_and_no_mixing():
    assert MessageFusion("2x0e", "2x0e+2x1o", "0e", weights="vertex").basis == "full"
    assert MessageFusion("2x0e", "2x0e+2x1o", "0e", channel_mixing=True).basis == "full"
    with pytest.raises(ValueError, match="basis='independent' needs weights='path'"):
        MessageFusion("2x0e", "2x0e+2x1o", "0e", weights="vertex", basis="independent")
