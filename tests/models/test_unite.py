"""unite/baseline and unite/fusion: EvNorm, end-to-end invariance through tblite, sparse =
dense, bad input, training through the trainer with the xTB loader (float64)."""

import numpy as np
import pytest
import torch
from e3nn import o3

from fusion.data import xtb_features as xf
from fusion.data.structures import Structures
from fusion.models.registry import ModelStats, build_model, count_parameters
from fusion.models.unite import EvNorm, EvNormGate, baseline_parameter_count

# glycine and butan-1-ol (rdkit ETKDG + MMFF geometries, Å)
GLYCINE_Z = np.array([7, 6, 6, 8, 8, 1, 1, 1, 1, 1])
GLYCINE_POS = np.array([
    [-1.6517, 0.2906, 0.0465], [-0.4649, -0.424, -0.4607], [0.8071, 0.0921, 0.1966],
    [0.8891, 0.9759, 1.0358], [1.9119, -0.5403, -0.2449], [-1.5073, 1.2914, -0.1049],
    [-1.6671, 0.1959, 1.0645], [-0.392, -0.2734, -1.5415], [-0.5695, -1.4905, -0.2423],
    [2.6444, -0.1177, 0.2511]])
BUTANOL_Z = np.array([6, 6, 6, 6, 8, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
BUTANOL_POS = np.array([
    [-1.69, 0.1287, 0.6208], [-0.7311, 0.6559, -0.4353], [0.3763, -0.3364, -0.8016],
    [1.3224, -0.6762, 0.3455], [1.9371, 0.4953, 0.862], [-1.1902, -0.0056, 1.5846],
    [-2.5111, 0.8373, 0.7696], [-2.1212, -0.8302, 0.3167], [-1.3035, 0.8853, -1.3422],
    [-0.2954, 1.6014, -0.0926], [0.9604, 0.1068, -1.6178], [-0.0683, -1.2603, -1.1892],
    [0.7958, -1.1769, 1.1629], [2.1109, -1.3519, -0.0017], [2.4078, 0.9267, 0.1286]])
ELEMENTS = (1, 6, 7, 8)
STATS = ModelStats(elements=ELEMENTS, atomic_energies=np.array([-0.1, 0.2, 0.05, -0.3]),
                   avg_num_neighbors=8.0, scale=0.5)
SMALL = {"num_channels": 4, "readout_hidden": 8}


def _randomised(model, seed=0):
    """Random affine and running statistics, so EvNorm is not the identity map."""
    g = torch.Generator().manual_seed(seed)
    for name, buf in model.named_buffers():
        if name.endswith("running_mean"):
            buf.copy_(torch.rand(buf.shape, generator=g))
        if name.endswith("running_var"):
            buf.copy_(0.5 + torch.rand(buf.shape, generator=g))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma") or name.endswith("beta"):
                p.copy_(torch.randn(p.shape, generator=g))
    return model.eval()


def _batch(z, pos, threshold=1e-5, features=None):
    n = np.array([len(z)])
    if features is None:
        features = xf.compute_feature_set(z, pos, n, lmax=1, threshold=threshold,
                                          dtype=np.float64)
    structures = Structures(z=z, pos=pos, n_atoms=n, y=np.zeros(1))
    loader = xf.XtbGraphLoader(structures, features, np.array([0]), 1, ELEMENTS,
                               dtype=torch.float64)
    return next(iter(loader))


@pytest.mark.parametrize("cls", [EvNorm, EvNormGate])
@pytest.mark.parametrize("training", [True, False])
def test_evnorm_is_equivariant(cls, training):
    torch.manual_seed(0)
    irreps = o3.Irreps("3x0e+2x1o+2x1e+2x2e+1x3o")
    norm = cls(irreps)
    with torch.no_grad():
        norm.gamma.normal_()
        norm.beta.normal_()
    norm.train(training)
    x = irreps.randn(7, -1, dtype=torch.float64)
    apply = norm.gate if cls is EvNormGate else norm.normalize
    for R in (o3.rand_matrix(dtype=torch.float64), -o3.rand_matrix(dtype=torch.float64)):
        D = irreps.D_from_matrix(R)
        torch.testing.assert_close(apply(x @ D.T), apply(x) @ D.T, atol=1e-10, rtol=1e-10)
    inv, direction = norm(x)
    assert inv.shape == (7, 10) and direction.shape == x.shape


def test_evnorm_standardises_norms_and_maps_zero_to_zero():
    torch.manual_seed(1)
    irreps = o3.Irreps("2x0e+3x1o")
    norm = EvNorm(irreps, eps=1e-6).train()
    x = irreps.randn(500, -1, dtype=torch.float64) * 7.0 + 0.0
    inv, _ = norm(x)  # gamma 1, beta 0: batch-standardised norms
    torch.testing.assert_close(inv.mean(0), torch.zeros(5), atol=1e-10, rtol=0)
    torch.testing.assert_close(inv.std(0, unbiased=False), torch.ones(5), atol=1e-6, rtol=0)
    assert not torch.allclose(norm.running_mean, torch.zeros(5))
    norm.eval()
    assert norm.normalize(torch.zeros(3, irreps.dim)).abs().max() == 0


@pytest.mark.parametrize("variant", ["baseline", "fusion"])
def test_energy_is_invariant_to_rotation_and_permutation_through_tblite(variant):
    torch.manual_seed(0)
    model = _randomised(build_model("unite", variant, SMALL, STATS))
    ref = model(_batch(GLYCINE_Z, GLYCINE_POS))["energy"]
    perm = np.array([3, 7, 0, 9, 1, 5, 2, 8, 4, 6])
    for R in (o3.rand_matrix(dtype=torch.float64).numpy(),
              -o3.rand_matrix(dtype=torch.float64).numpy()):
        pos = (GLYCINE_POS @ R.T + np.array([0.3, -1.0, 2.0]))[perm]
        new = model(_batch(GLYCINE_Z[perm], pos))["energy"]
        torch.testing.assert_close(new, ref, atol=1e-11, rtol=0)  # measured ~1e-15 (float64)
    # the check is not vacuous: another molecule gives another energy
    other = model(_batch(GLYCINE_Z, GLYCINE_POS * 1.05))["energy"]
    assert abs(float((other - ref).detach())) > 1e-4


def test_sparse_graph_equals_dense_graph_with_dropped_pairs_zeroed():
    """Cost is linear in the kept pairs: dropping pairs = zero features on those pairs."""
    torch.manual_seed(0)
    model = _randomised(build_model("unite", "fusion", SMALL, STATS))
    n = np.array([len(BUTANOL_Z)])
    sparse = xf.compute_feature_set(BUTANOL_Z, BUTANOL_POS, n, lmax=1, threshold=1e-2,
                                    dtype=np.float64)
    dense = xf.compute_feature_set(BUTANOL_Z, BUTANOL_POS, n, lmax=1, threshold=0.0,
                                   dtype=np.float64)
    assert sparse.edge.shape[0] < dense.edge.shape[0]
    kept = {tuple(p) for p in sparse.edge_index.T.tolist()}
    dropped = np.array([tuple(p) not in kept for p in dense.edge_index.T.tolist()])
    zeroed = xf.XtbFeatureSet(dense.node, dense.node_counts, np.where(dropped[:, None], 0.0,
                              dense.edge), dense.edge_index, dense.edge_counts, dense.energy,
                              1, 0.0)
    e_sparse = model(_batch(BUTANOL_Z, BUTANOL_POS, features=sparse))["energy"]
    e_zeroed = model(_batch(BUTANOL_Z, BUTANOL_POS, features=zeroed))["energy"]
    e_dense = model(_batch(BUTANOL_Z, BUTANOL_POS, features=dense))["energy"]
    torch.testing.assert_close(e_sparse, e_zeroed, atol=1e-12, rtol=0)
    assert abs(float((e_dense - e_sparse).detach())) > 0  # the dropped pairs did carry something


@pytest.mark.parametrize("hparams", [{}, {"num_channels": 5, "num_interactions": 1, "lmax": 2,
                                      "hidden_labels": "0e+1o+2e"}])
def test_closed_form_parameter_count(hparams):
    model = build_model("unite", "baseline", hparams, STATS)
    assert count_parameters(model) == baseline_parameter_count(hparams, len(ELEMENTS))


def test_fusion_has_no_more_parameters_than_baseline():
    base = build_model("unite", "baseline", {}, STATS)
    fus = build_model("unite", "fusion", {}, STATS)
    assert count_parameters(fus) <= count_parameters(base)
    assert fus.fusion_info["n_params_baseline"] == count_parameters(base)
    assert fus.fusion_info["n_params"] == count_parameters(fus)
    assert len(fus.fusions) == 2 and len(base.fusions) == 0


def test_bad_input_errors():
    model = build_model("unite", "baseline", SMALL, STATS)
    batch = _batch(GLYCINE_Z, GLYCINE_POS)
    with pytest.raises(ValueError, match="forces are not available"):
        model(batch, compute_forces=True)
    bad = dict(batch, edge_feats=batch["edge_feats"][:, :-1])
    with pytest.raises(ValueError, match=r"edge_feats.*expected \[\*, 64\].*lmax = 1"):
        model(bad)
    with pytest.raises(ValueError, match="unknown hparams \\['channels'\\]"):
        build_model("unite", "baseline", {"channels": 3}, STATS)
    with pytest.raises(ValueError, match="must list labels once"):
        build_model("unite", "baseline", {"hidden_labels": "2x0e+1o"}, STATS)


def test_trains_through_the_trainer_with_the_xtb_loader(tmp_path):
    from fusion.train.trainer import train

    mols = [(GLYCINE_Z, GLYCINE_POS), (BUTANOL_Z, BUTANOL_POS),
            (GLYCINE_Z, GLYCINE_POS * 1.02), (BUTANOL_Z, BUTANOL_POS * 0.98)]
    z = np.concatenate([m[0] for m in mols])
    pos = np.concatenate([m[1] for m in mols])
    n_atoms = np.array([len(m[0]) for m in mols])
    features = xf.compute_feature_set(z, pos, n_atoms, lmax=1, dtype=np.float64)
    structures = Structures(z=z, pos=pos, n_atoms=n_atoms, y=np.array([0.1, -0.2, 0.3, 0.0]),
                            meta={"xtb_features": features})

    def loader(idx, shuffle):
        return xf.make_xtb_loader(structures, np.array(idx), 2, ELEMENTS, shuffle=shuffle,
                                  dtype=torch.float64)

    torch.manual_seed(0)
    model = build_model("unite", "baseline", SMALL, STATS)
    before = [p.detach().clone() for p in model.parameters()]
    metrics = train(model, loader([0, 1, 2], True), loader([3], False), loader([2, 3], False),
                    {"epochs": 2, "lr": 0.005, "forces_weight": 0.0, "progress": False},
                    tmp_path, log=lambda s: None)
    assert metrics["train"]["epochs"] == 2 and metrics["test"]["n_structures"] == 2
    assert np.isfinite(metrics["test"]["mae"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert (tmp_path / "log.csv").read_text().count("\n") == 3
    with pytest.raises(ValueError, match="carry no xTB features"):
        xf.make_xtb_loader(Structures(z=z, pos=pos, n_atoms=n_atoms, y=np.zeros(4)),
                           np.arange(4), 2, ELEMENTS)
