"""Expressiveness: a 3-body FusionBlock sees angles, any 2-body invariant cannot.

Neighbourhoods are built explicitly: a centre atom and its neighbours, edges only from the
neighbours to the centre, constant scalar node features (one species).
"""

import fusion._mace_first  # noqa: F401  (mace before e3nn)

# isort: split

import math

import torch

from fusion.blocks.fusion_block import FusionBlock

F64 = torch.float64


def invariant_block(nu: int, channels: int = 8) -> FusionBlock:
    torch.manual_seed(0)
    return FusionBlock(
        "0e",
        "0e",
        channels=channels,
        nu=nu,
        mode="exact",
        lmax_sh=2,
        L_int=2,
        r_max=5.0,
        num_bessel=4,
        radial_mlp=(32,),
    ).double()


def neighbourhoods(directions: list[torch.Tensor], distances: list[torch.Tensor]):
    """Positions, edge_index (neighbour -> centre) and centre indices of several clusters."""
    pos, send, recv, centres, start = [], [], [], [], 0
    for u, r in zip(directions, distances):
        k = u.shape[0]
        pos.append(torch.cat([torch.zeros(1, 3, dtype=F64), u * r[:, None]]))
        centres.append(start)
        send += range(start + 1, start + 1 + k)
        recv += [start] * k
        start += k + 1
    return torch.cat(pos), torch.tensor([send, recv]), torch.tensor(centres)


def run(block: FusionBlock, pos, edge_index, centres) -> torch.Tensor:
    h = torch.ones(pos.shape[0], block.irreps_in.dim, dtype=F64)
    return block(h, edge_index, positions=pos)[centres]


def test_same_distances_different_angles():
    r = torch.tensor([1.2, 1.7], dtype=F64)
    dirs = []
    for angle in (60.0, 120.0):
        a = math.radians(angle)
        dirs.append(torch.tensor([[1.0, 0, 0], [math.cos(a), math.sin(a), 0]], dtype=F64))
    pos, edge_index, centres = neighbourhoods(dirs, [r, r])

    # any 2-body invariant sum_j f(r_ij) is blind to the angle, e.g. a Gaussian sum ...
    d = (pos[edge_index[0]] - pos[edge_index[1]]).norm(dim=1)
    f = torch.zeros(2, dtype=F64).index_add_(0, edge_index[1] // 3, torch.exp(-(d**2)))
    assert (f[0] - f[1]).abs() < 1e-15
    # ... and the 2-body FusionBlock (Tree(h_i, A_i), invariant output)
    two = run(invariant_block(2), pos, edge_index, centres)
    assert (two[0] - two[1]).abs().max() < 1e-14
    # the 3-body FusionBlock separates them
    three = run(invariant_block(3), pos, edge_index, centres)
    assert (three[0] - three[1]).abs().max() > 1e-2 * three.abs().max()


def random_neighbourhoods(m: int, seed: int):
    """m centres with 2..5 neighbours at distances in [1, 2]; target sum_{j != k} cos(theta_jik)."""
    g = torch.Generator().manual_seed(seed)
    dirs, dists, target = [], [], []
    for _ in range(m):
        k = int(torch.randint(2, 6, (1,), generator=g))
        u = torch.randn(k, 3, generator=g, dtype=F64)
        u = u / u.norm(dim=1, keepdim=True)
        dirs.append(u)
        dists.append(1.0 + torch.rand(k, generator=g, dtype=F64))
        cos = u @ u.T
        target.append(cos.sum() - cos.diagonal().sum())
    return (*neighbourhoods(dirs, dists), torch.stack(target))


def path_features(block: FusionBlock, pos, edge_index, centres) -> torch.Tensor:
    """The block's output is linear in its path weights ``[1, P, C]``: unit weights give the
    value of each path, ``[M, P * C]`` (channel c of the output uses weights of channel c)."""
    weight = block.fusion.fusion.weight
    columns = []
    with torch.no_grad():
        for p in range(weight.shape[1]):
            weight.zero_()
            weight[0, p] = 1.0
            columns.append(run(block, pos, edge_index, centres))  # [M, C]
    return torch.cat(columns, dim=1)


def test_fits_angular_target_far_better_than_two_body():
    train = random_neighbourhoods(200, seed=0)
    test = random_neighbourhoods(100, seed=1)
    errors = {}
    for nu in (2, 3):
        block = invariant_block(nu)
        x_train, x_test = (path_features(block, *data[:3]) for data in (train, test))
        w = torch.linalg.lstsq(x_train, train[3], driver="gelsd").solution
        errors[nu] = ((x_test @ w - test[3]).norm() / test[3].norm()).item()
    # measured: 2-body 1.005 (no better than predicting 0), 3-body 0.011
    assert errors[2] > 0.9
    assert errors[3] < 0.1
    assert errors[3] / errors[2] < 0.1
