"""GFN2-xTB AO features: basis order, Wigner-D equivariance, sparse = dense, caches, loader.

All checks in float64. Molecules are small; every tblite call takes milliseconds.
"""

import numpy as np
import pytest
import torch
from e3nn import o3

from fusion.data import xtb_features as xf
from fusion.data.cache import CacheError
from fusion.data.structures import Structures

# ClCH2-S-C(=O)NH2 (rdkit ETKDG + MMFF): has s, p and d shells (Cl, S) and s, p (C, N, O, H).
CL_MOL_Z = np.array([17, 6, 16, 6, 8, 7, 1, 1, 1, 1])
CL_MOL_POS = np.array([
    [2.1238, 1.3541, 1.0138], [1.7886, -0.2292, 0.2833], [0.198, -0.8787, 0.828],
    [-0.8377, 0.0141, -0.2398], [-0.4844, 0.5321, -1.2852], [-2.1048, 0.0432, 0.2337],
    [2.5747, -0.9096, 0.6219], [1.8638, -0.1485, -0.8046], [-2.322, -0.3529, 1.1359],
    [-2.8, 0.5755, -0.2686]])
# water (QM9 molecule 3)
WATER_Z = np.array([8, 1, 1])
WATER_POS = np.array([[-0.0343604951, 0.9775395708, 0.0076015923],
                      [0.0647664923, 0.0205721989, 0.0015346341],
                      [0.8717903737, 1.3007924048, 0.0006931336]])
# butan-1-ol: long enough that a threshold drops some atom pairs
BUTANOL_Z = np.array([6, 6, 6, 6, 8, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
BUTANOL_POS = np.array([
    [-1.69, 0.1287, 0.6208], [-0.7311, 0.6559, -0.4353], [0.3763, -0.3364, -0.8016],
    [1.3224, -0.6762, 0.3455], [1.9371, 0.4953, 0.862], [-1.1902, -0.0056, 1.5846],
    [-2.5111, 0.8373, 0.7696], [-2.1212, -0.8302, 0.3167], [-1.3035, 0.8853, -1.3422],
    [-0.2954, 1.6014, -0.0926], [0.9604, 0.1068, -1.6178], [-0.0683, -1.2603, -1.1892],
    [0.7958, -1.1769, 1.1629], [2.1109, -1.3519, -0.0017], [2.4078, 0.9267, 0.1286]])


def _wigner(layout, R):
    """Block-diagonal Wigner-D [D, D] of a feature layout for the O(3) matrix R."""
    R = torch.as_tensor(R)
    blocks = [o3.Irrep(L, (-1) ** (l1 + l2)).D_from_matrix(R).numpy() for _, l1, l2, L in layout]
    D = np.zeros((sum(b.shape[0] for b in blocks),) * 2)
    k = 0
    for b in blocks:
        D[k:k + b.shape[0], k:k + b.shape[0]] = b
        k += b.shape[0]
    return D


def _rotations():
    torch.manual_seed(0)
    R = o3.rand_matrix(dtype=torch.float64).numpy()
    return [R, -R]  # a proper rotation and a rotation-inversion


def test_elements_have_one_shell_per_l_and_lmax():
    for z in (1, 6, 8, 9, 11, 16, 17, 19, 35, 86):
        shells = xf._shells_of(z)
        assert len(set(shells)) == len(shells)
    assert xf.element_lmax([1, 6, 7, 8, 9]) == 1
    assert xf.element_lmax([1, 6, 16]) == 2


@pytest.mark.parametrize("l", [1, 2])
def test_tblite_shell_blocks_transform_with_e3nn_wigner_d(l):
    """Raw AO blocks after the basis change: M'[a, b] = D_l1(R) M[a, b] D_l2(R)^T for the
    p and d shells of the Cl/S molecule, for a rotation and a rotation-inversion."""
    ref = xf.run_xtb(CL_MOL_Z, CL_MOL_POS)
    for R in _rotations():
        rot = xf.run_xtb(CL_MOL_Z, CL_MOL_POS @ R.T)
        # every (shell l of atom a, s shell of atom b) block and the (l, l) blocks
        for name in xf.MATRICES:
            M, Mr = ref.matrices[name], rot.matrices[name]
            for a in range(len(CL_MOL_Z)):
                rows = np.nonzero((ref.ao_atom == a) & (ref.ao_l == l))[0]
                if rows.size == 0:
                    continue
                D = o3.Irrep(l, (-1) ** l).D_from_matrix(torch.as_tensor(R)).numpy()
                for b in range(len(CL_MOL_Z)):
                    for lb in range(3):
                        cols = np.nonzero((ref.ao_atom == b) & (ref.ao_l == lb))[0]
                        if cols.size == 0:
                            continue
                        Db = o3.Irrep(lb, (-1) ** lb).D_from_matrix(torch.as_tensor(R)).numpy()
                        expected = D @ M[np.ix_(rows, cols)] @ Db.T
                        np.testing.assert_allclose(Mr[np.ix_(rows, cols)], expected, atol=2e-6)


def test_the_raw_tblite_d_order_is_not_e3nn_order():
    """The d map is needed: without it the d blocks do not transform with e3nn's D."""
    R = _rotations()[0]
    ref, rot = xf.run_xtb(CL_MOL_Z, CL_MOL_POS), xf.run_xtb(CL_MOL_Z, CL_MOL_POS @ R.T)
    rows = np.nonzero((ref.ao_atom == 0) & (ref.ao_l == 2))[0]  # Cl d shell
    cols = np.nonzero((ref.ao_atom == 1) & (ref.ao_l == 0))[0]  # C s shell
    U = xf.TBLITE_TO_E3NN[2]
    raw, raw_rot = U @ ref.matrices["S"][rows, cols], U @ rot.matrices["S"][rows, cols]
    D = o3.Irrep(2, 1).D_from_matrix(torch.as_tensor(R)).numpy()
    assert np.abs(raw_rot - D @ raw).max() > 1e-2
    np.testing.assert_allclose(U.T @ raw_rot, D @ U.T @ raw, atol=2e-6)


def test_node_and_edge_features_transform_with_wigner_d():
    lmax = 2
    ref = xf.molecule_features(CL_MOL_Z, CL_MOL_POS, lmax=lmax, threshold=0.0)
    node_layout, edge_layout = xf.feature_layout(lmax, True), xf.feature_layout(lmax, False)
    assert ref.node.shape == (10, sum(2 * L + 1 for *_, L in node_layout))
    for R in _rotations():
        rot = xf.molecule_features(CL_MOL_Z, CL_MOL_POS @ R.T, lmax=lmax, threshold=0.0)
        np.testing.assert_array_equal(rot.edge_index, ref.edge_index)
        np.testing.assert_allclose(rot.node, ref.node @ _wigner(node_layout, R).T, atol=2e-6)
        np.testing.assert_allclose(rot.edge, ref.edge @ _wigner(edge_layout, R).T, atol=2e-6)
        assert abs(rot.energy - ref.energy) < 1e-7


def test_features_follow_an_atom_permutation():
    perm = np.array([4, 2, 0, 9, 1, 3, 8, 5, 7, 6])
    ref = xf.molecule_features(CL_MOL_Z, CL_MOL_POS, threshold=0.0)
    new = xf.molecule_features(CL_MOL_Z[perm], CL_MOL_POS[perm], threshold=0.0)
    np.testing.assert_allclose(new.node, ref.node[perm], atol=2e-6)
    columns, signs = xf.reverse_edge_columns(2)
    pairs = {(int(a), int(b)): k for k, (a, b) in enumerate(ref.edge_index.T)}
    for k, (a, b) in enumerate(new.edge_index.T):
        oa, ob = perm[a], perm[b]
        if oa < ob:
            expected = ref.edge[pairs[(oa, ob)]]
        else:  # the block is the transpose of the stored one
            expected = ref.edge[pairs[(ob, oa)]][columns] * signs
        np.testing.assert_allclose(new.edge[k], expected, atol=2e-6)


def _dense_reference(z, pos, lmax):
    """Independent dense path: loops over all atom pairs and shells, tblite order mapped
    with TBLITE_TO_E3NN, e3nn's own wigner_3j."""
    from tblite.interface import Calculator

    calc = Calculator("GFN2-xTB", z, pos * xf.BOHR_PER_ANGSTROM)
    calc.set("verbosity", 0)
    calc.set("save-integrals", 1)
    res = calc.singlepoint()
    S = res.get("overlap-matrix")
    C, eps = res.get("orbital-coefficients"), res.get("orbital-energies")
    mats = {"S": S, "H": res.get("hamiltonian-matrix"), "P": res.get("density-matrix"),
            "F": S @ C @ np.diag(eps) @ C.T @ S}
    shell_l, shell_atom = calc.get("angular-momenta"), calc.get("shell-map")
    ao_shell = calc.get("orbital-map")

    def block(name, a, la, b, lb):
        sa = [s for s in range(len(shell_l)) if shell_atom[s] == a and shell_l[s] == la]
        sb = [s for s in range(len(shell_l)) if shell_atom[s] == b and shell_l[s] == lb]
        if not sa or not sb:
            return np.zeros((2 * la + 1, 2 * lb + 1))
        rows, cols = np.nonzero(ao_shell == sa[0])[0], np.nonzero(ao_shell == sb[0])[0]
        Ua, Ub = xf.TBLITE_TO_E3NN[la], xf.TBLITE_TO_E3NN[lb]
        return Ua.T @ mats[name][np.ix_(rows, cols)] @ Ub

    def features(a, b, layout):
        out = []
        for name, l1, l2, L in layout:
            w = o3.wigner_3j(l1, l2, L, dtype=torch.float64).numpy() * np.sqrt(2 * L + 1)
            out.append(np.einsum("xy,xym->m", block(name, a, l1, b, l2), w))
        return np.concatenate(out)

    n = len(z)
    node = np.stack([features(a, a, xf.feature_layout(lmax, True)) for a in range(n)])
    pairs = [(a, b) for a in range(n) for b in range(a + 1, n)]
    edge = np.stack([features(a, b, xf.feature_layout(lmax, False)) for a, b in pairs])
    return node, edge, pairs


@pytest.mark.parametrize("z,pos,lmax", [(WATER_Z, WATER_POS, 1), (CL_MOL_Z, CL_MOL_POS, 2)])
def test_sparse_path_equals_dense_path(z, pos, lmax):
    node, edge, pairs = _dense_reference(z, pos, lmax)
    sparse = xf.molecule_features(z, pos, lmax=lmax, threshold=0.0)
    assert [tuple(p) for p in sparse.edge_index.T.tolist()] == pairs
    np.testing.assert_allclose(sparse.node, node, atol=1e-8)
    np.testing.assert_allclose(sparse.edge, edge, atol=1e-8)


def test_threshold_drops_exactly_the_small_pairs():
    node, edge, pairs = _dense_reference(BUTANOL_Z, BUTANOL_POS, 1)
    threshold = 1e-2
    sparse = xf.molecule_features(BUTANOL_Z, BUTANOL_POS, lmax=1, threshold=threshold)
    kept = [tuple(p) for p in sparse.edge_index.T.tolist()]
    assert 0 < len(kept) < len(pairs)
    for k, pair in enumerate(pairs):
        if pair in kept:
            np.testing.assert_allclose(sparse.edge[kept.index(pair)], edge[k], atol=1e-8)
    # a dropped pair has no entry above the threshold in any matrix (irreps norms per
    # (matrix, l1, l2) equal the block norms, which bound the entries)
    ref = xf.run_xtb(BUTANOL_Z, BUTANOL_POS)
    for a, b in set(pairs) - set(kept):
        rows, cols = ref.ao_atom == a, ref.ao_atom == b
        for M in ref.matrices.values():
            assert np.abs(M[np.ix_(rows, cols)]).max() <= threshold


def test_reverse_edge_columns_equal_the_transposed_block():
    lmax = 2
    rng = np.random.default_rng(0)
    n_slot = (lmax + 1) ** 2
    blocks = rng.normal(size=(len(xf.MATRICES), 5, n_slot, n_slot))
    layout = xf.feature_layout(lmax, False)
    forward = xf.decompose(blocks, layout, lmax)
    backward = xf.decompose(blocks.transpose(0, 1, 3, 2), layout, lmax)
    columns, signs = xf.reverse_edge_columns(lmax)
    np.testing.assert_allclose(forward[:, columns] * signs, backward, atol=1e-12)


@pytest.mark.parametrize("z,pos,match", [
    (np.array([8, 1, 0]), WATER_POS, "atom 2 has atomic number 0"),
    (np.array([8, 1, 87]), WATER_POS, "atom 2 has atomic number 87"),
    (WATER_Z, np.where(np.eye(3, dtype=bool)[1][:, None], np.nan, WATER_POS),
     "pos of atom 1 is .*nan"),
    (WATER_Z, WATER_POS[:2], r"expected \[n, 3\] = \(3, 3\)"),
    (WATER_Z.astype(float), WATER_POS, "1-D integer array"),
])
def test_bad_input_is_named(z, pos, match):
    with pytest.raises(ValueError, match=match):
        xf.molecule_features(z, pos, where="water")


def test_layout_too_small_for_the_molecule_errors():
    with pytest.raises(ValueError, match="shells up to l = 2 .* lmax = 1"):
        xf.molecule_features(CL_MOL_Z, CL_MOL_POS, lmax=1)


def _feature_set():
    z = np.concatenate([WATER_Z, BUTANOL_Z])
    pos = np.concatenate([WATER_POS, BUTANOL_POS])
    n_atoms = np.array([3, 15])
    return z, pos, n_atoms, xf.compute_feature_set(z, pos, n_atoms, lmax=1, threshold=1e-2,
                                                   dtype=np.float64)


def test_feature_cache_round_trip_and_corruption(tmp_path):
    *_, features = _feature_set()
    path = xf.save_feature_set(tmp_path / "f.npz", features, {"qm9_row": np.arange(2)})
    loaded, rest = xf.load_feature_set(path, ("qm9_row",))
    np.testing.assert_array_equal(loaded.edge, features.edge)
    np.testing.assert_array_equal(loaded.edge_index, features.edge_index)
    np.testing.assert_array_equal(rest["qm9_row"], np.arange(2))
    assert loaded.lmax == 1 and loaded.threshold == 1e-2
    arrays = xf.feature_arrays(features)
    arrays["xtb_edge"] = arrays["xtb_edge"][:-1]
    from fusion.data.cache import save_npz_atomic

    save_npz_atomic(tmp_path / "bad.npz", arrays, xf.FEATURE_FORMAT_VERSION)
    with pytest.raises(CacheError, match="bad.npz.*xtb_edge"):
        xf.load_feature_set(tmp_path / "bad.npz")


def test_loader_batches_both_edge_directions():
    z, pos, n_atoms, features = _feature_set()
    structures = Structures(z=z, pos=pos, n_atoms=n_atoms, y=np.array([1.0, 2.0]))
    loader = xf.XtbGraphLoader(structures, features, np.array([1, 0]), batch_size=2,
                               elements=(1, 6, 8), dtype=torch.float64)
    assert len(loader) == 1
    batch = next(iter(loader))
    n_pairs = int(features.edge_counts.sum())
    assert batch["edge_feats"].shape == (2 * n_pairs, features.edge.shape[1])
    assert batch["node_feats"].shape == (18, features.node.shape[1])
    assert batch["ptr"].tolist() == [0, 15, 18]
    assert batch["y"].tolist() == [2.0, 1.0] and batch["num_graphs"] == 2
    # molecule 1 (butanol) first: its atoms 0..14, water's 15..17
    np.testing.assert_allclose(batch["node_feats"][15:].numpy(), features.node[:3])
    sender, receiver = batch["edge_index"]
    assert (batch["batch"][sender] == batch["batch"][receiver]).all()
    # each directed edge appears once, and its reverse carries the transposed block
    pairs = {(int(s), int(r)): k for k, (s, r) in enumerate(zip(sender, receiver))}
    assert len(pairs) == 2 * n_pairs
    columns, signs = xf.reverse_edge_columns(1)
    for (s, r), k in pairs.items():
        back = batch["edge_feats"][pairs[(r, s)]].numpy()
        np.testing.assert_allclose(batch["edge_feats"][k].numpy()[columns] * signs, back)


def test_qm9xtb_dataset_from_fixture_csvs(qm9_dir, cache_dir):
    from fusion.data import qm9, qm9xtb
    from fusion.data.registry import get_dataset

    path = qm9xtb.prepare_demo(cache_dir, data_dir=qm9_dir)
    assert path == cache_dir / "qm9xtb-demo" / "qm9xtb-demo.npz"
    structures, splits = get_dataset("qm9xtb-demo-U0", cache_dir=cache_dir, data_dir=qm9_dir)
    raw = qm9.qm9_raw(cache_dir, qm9_dir)
    order = qm9.cormorant_split(7, seed=0)
    np.testing.assert_array_equal(structures.meta["qm9_index"][splits["train"]],
                                  raw["index"][order["train"]])
    # y = (DFT - atomrefs) - (xTB - fitted xTB atomrefs), recomputed for one molecule
    k = int(splits["val"][0])
    row = int(order["val"][0])
    off = np.concatenate([[0], np.cumsum(raw["n_atoms"])])
    z, pos = raw["z"][off[row]:off[row + 1]], raw["pos"][off[row]:off[row + 1]]
    dft = (raw["targets"][row, list(qm9.TARGET_COLUMNS).index("InternalEnergy_0K_au")]
           - qm9.atomref_energy(z, np.array([len(z)]), "U0")[0]) * qm9.HARTREE_TO_EV
    _, rest = xf.load_feature_set(path, ("xtb_atomref",))
    ref = dict(zip(qm9xtb.ELEMENTS, rest["xtb_atomref"]))
    xtb = xf.run_xtb(z, pos).energy - sum(ref[int(v)] for v in z)
    assert abs(structures.y[k] - (dft - xtb)) < 1e-5
    with pytest.raises(ValueError, match="n_train = 9 but the cache holds 5"):
        get_dataset("qm9xtb-demo-U0", cache_dir=cache_dir, n_train=9, data_dir=qm9_dir)
    with pytest.raises(FileNotFoundError, match="fusion prepare qm9xtb"):
        get_dataset("qm9xtb-U0", cache_dir=cache_dir, data_dir=qm9_dir)
