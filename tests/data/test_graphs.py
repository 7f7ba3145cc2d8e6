"""Tests for fusion.data.graphs: neighbour lists vs brute force, batch layout, shuffling."""

import numpy as np
import pytest
import torch

from fusion.data.graphs import GraphLoader, average_num_neighbors, neighbour_lists
from fusion.data.structures import Structures

ELEMENTS = [1, 6, 7, 8, 9]


def random_molecules(n_mol=40, max_atoms=12, forces=False, seed=0) -> Structures:
    rng = np.random.default_rng(seed)
    n_atoms = rng.integers(1, max_atoms + 1, size=n_mol)
    a = int(n_atoms.sum())
    return Structures(
        z=rng.choice(ELEMENTS, size=a),
        pos=rng.uniform(-2.5, 2.5, size=(a, 3)),
        n_atoms=n_atoms,
        y=rng.normal(size=n_mol),
        forces=rng.normal(size=(a, 3)) if forces else None,
        meta={"name": "random"},
    )


def brute_force_edges(pos: np.ndarray, r_max: float) -> set[tuple[int, int]]:
    out = set()
    for i in range(len(pos)):
        for j in range(len(pos)):
            if i != j and np.sqrt(((pos[i] - pos[j]) ** 2).sum()) < r_max:
                out.add((i, j))
    return out


@pytest.mark.parametrize("r_max", [1.5, 3.0, 100.0])
def test_neighbour_lists_match_brute_force(r_max):
    s = random_molecules()
    idx = np.array([5, 3, 0, 17, 3, 39])  # arbitrary order, a repeat
    nl = neighbour_lists(s, idx, r_max)
    np.testing.assert_array_equal(nl.indices, idx)
    assert nl.offsets[-1] == nl.n_edges == nl.sender.shape[0]
    for k, i in enumerate(idx):
        p = s.pos[s.offsets[i]:s.offsets[i + 1]]
        sl = slice(nl.offsets[k], nl.offsets[k + 1])
        edges = list(zip(nl.sender[sl].tolist(), nl.receiver[sl].tolist()))
        assert edges == sorted(edges)  # (sender, receiver) order, no duplicates
        assert set(edges) == brute_force_edges(p, r_max)
    if r_max == 100.0:  # complete graphs
        np.testing.assert_array_equal(nl.counts, s.n_atoms[idx] * (s.n_atoms[idx] - 1))


def test_neighbour_lists_chunking(monkeypatch):
    import fusion.data.graphs as graphs

    s = random_molecules(n_mol=30, max_atoms=5)
    full = neighbour_lists(s, None, 2.0)
    monkeypatch.setattr(graphs, "_CHUNK_ENTRIES", 1)  # one molecule per chunk
    small = neighbour_lists(s, None, 2.0)
    np.testing.assert_array_equal(full.sender, small.sender)
    np.testing.assert_array_equal(full.receiver, small.receiver)
    np.testing.assert_array_equal(full.counts, small.counts)


def test_average_num_neighbors():
    s = random_molecules()
    idx = np.arange(10)
    total = sum(len(brute_force_edges(s.pos[s.offsets[i]:s.offsets[i + 1]], 2.0)) for i in idx)
    assert average_num_neighbors(s, idx, 2.0) == pytest.approx(total / s.n_atoms[idx].sum())


def test_batch_layout_and_one_hot():
    s = random_molecules(forces=True)
    idx = np.arange(2, 27)
    loader = GraphLoader(s, idx, batch_size=8, r_max=2.5, elements=ELEMENTS)
    assert len(loader) == 4
    batches = list(loader)
    assert [b["ptr"].shape[0] - 1 for b in batches] == [8, 8, 8, 1]
    b = batches[0]
    sidx = idx[:8]
    n = s.n_atoms[sidx]
    a, bsz, e = int(n.sum()), 8, b["edge_index"].shape[1]
    shapes = {
        "positions": (a, 3), "node_attrs": (a, 5), "atomic_numbers": (a,), "edge_index": (2, e),
        "shifts": (e, 3), "unit_shifts": (e, 3), "cell": (bsz * 3, 3), "batch": (a,),
        "ptr": (bsz + 1,), "head": (bsz,), "y": (bsz,), "energy": (bsz,), "forces": (a, 3),
        "n_atoms": (bsz,),
    }
    for key in ("weight", "energy_weight", "forces_weight", "stress_weight", "virials_weight",
                "dipole_weight", "charges_weight"):
        shapes[key] = (bsz,)
        assert torch.equal(b[key], torch.ones(bsz))
    assert {k: tuple(v.shape) for k, v in b.items()} == shapes
    for key in ("atomic_numbers", "edge_index", "batch", "ptr", "head", "n_atoms"):
        assert b[key].dtype == torch.int64, key
    for key in ("positions", "node_attrs", "shifts", "cell", "y", "forces"):
        assert b[key].dtype == torch.float32, key
    atoms = s.atom_indices(sidx)
    np.testing.assert_allclose(b["positions"].numpy(), s.pos[atoms], rtol=1e-6)
    np.testing.assert_array_equal(b["atomic_numbers"].numpy(), s.z[atoms])
    np.testing.assert_array_equal(b["node_attrs"].sum(1).numpy(), np.ones(a))
    hot = np.array(ELEMENTS)[b["node_attrs"].argmax(1).numpy()]
    np.testing.assert_array_equal(hot, s.z[atoms])
    np.testing.assert_array_equal(b["ptr"].numpy(), np.concatenate([[0], np.cumsum(n)]))
    np.testing.assert_array_equal(b["batch"].numpy(), np.repeat(np.arange(8), n))
    np.testing.assert_array_equal(b["n_atoms"].numpy(), n)
    assert b["y"] is b["energy"]
    np.testing.assert_allclose(b["y"].numpy(), s.y[sidx], rtol=1e-6)
    np.testing.assert_allclose(b["forces"].numpy(), s.forces[atoms], rtol=1e-6)
    assert not b["shifts"].any() and not b["cell"].any() and not b["head"].any()
    # edges stay inside their graph and reproduce the brute-force distance check
    snd, rcv = b["edge_index"].numpy()
    assert (b["batch"][snd] == b["batch"][rcv]).all()
    dist = np.linalg.norm(s.pos[atoms][snd] - s.pos[atoms][rcv], axis=1)
    assert (dist < 2.5).all() and (snd != rcv).all()
    expected = sum(len(brute_force_edges(s.pos[s.offsets[i]:s.offsets[i + 1]], 2.5))
                   for i in sidx)
    assert e == expected


def test_float64_no_forces_drop_last():
    s = random_molecules(forces=False)
    loader = GraphLoader(s, np.arange(20), 6, 2.0, ELEMENTS, dtype=torch.float64,
                         drop_last=True)
    assert len(loader) == 3
    b = next(iter(loader))
    assert "forces" not in b
    assert b["positions"].dtype == torch.float64 and b["y"].dtype == torch.float64
    np.testing.assert_array_equal(b["y"].numpy(), s.y[:6])


def test_shuffle_deterministic_per_epoch():
    s = random_molecules()
    idx = np.arange(0, 40, 2)

    def visit(loader):
        return np.concatenate([b["y"].numpy() for b in loader])

    a = GraphLoader(s, idx, 7, 2.0, ELEMENTS, shuffle=True, seed=3, dtype=torch.float64)
    b = GraphLoader(s, idx, 7, 2.0, ELEMENTS, shuffle=True, seed=3, dtype=torch.float64)
    e0 = visit(a)
    np.testing.assert_array_equal(e0, visit(b))
    np.testing.assert_array_equal(e0, visit(a))  # same epoch, same order
    np.testing.assert_array_equal(np.sort(e0), np.sort(s.y[idx]))  # every structure once
    a.set_epoch(1)
    e1 = visit(a)
    assert not np.array_equal(e0, e1)
    np.testing.assert_array_equal(np.sort(e1), np.sort(e0))
    other = GraphLoader(s, idx, 7, 2.0, ELEMENTS, shuffle=True, seed=4, dtype=torch.float64)
    assert not np.array_equal(e0, visit(other))
    plain = GraphLoader(s, idx, 7, 2.0, ELEMENTS, dtype=torch.float64)
    np.testing.assert_array_equal(visit(plain), s.y[idx])


def test_unknown_element_is_clear():
    s = random_molecules()
    msg = r"atomic numbers \[9\] are not in elements \[1, 6, 7, 8\]"
    with pytest.raises(ValueError, match=msg):
        GraphLoader(s, np.arange(len(s)), 4, 2.0, [1, 6, 7, 8])
    with pytest.raises(ValueError, match="sorted distinct"):
        GraphLoader(s, np.arange(len(s)), 4, 2.0, [6, 1, 7, 8, 9])


def test_mace_consumes_batch():
    """A mace-torch ScaleShiftMACE runs on a batch as produced (the layout contract)."""
    import fusion._mace_first  # noqa: F401  (mace must be imported before e3nn)

    torch.manual_seed(0)
    from e3nn import o3
    from mace.modules import ScaleShiftMACE, interaction_classes

    s = random_molecules(n_mol=6, max_atoms=6)
    loader = GraphLoader(s, np.arange(6), 3, 3.0, ELEMENTS, dtype=torch.float64)
    model = ScaleShiftMACE(
        r_max=3.0, num_bessel=4, num_polynomial_cutoff=5, max_ell=1,
        interaction_cls=interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=interaction_classes["RealAgnosticResidualInteractionBlock"],
        num_interactions=1, num_elements=5, hidden_irreps=o3.Irreps("8x0e"),
        MLP_irreps=o3.Irreps("4x0e"), atomic_energies=np.zeros(5), avg_num_neighbors=2.0,
        atomic_numbers=ELEMENTS, correlation=2, gate=torch.nn.functional.silu,
        atomic_inter_scale=1.0, atomic_inter_shift=0.0,
    ).double()
    batch = next(iter(loader))
    out = model(batch, training=False, compute_force=True)
    assert out["energy"].shape == (3,)
    assert out["forces"].shape == batch["positions"].shape
