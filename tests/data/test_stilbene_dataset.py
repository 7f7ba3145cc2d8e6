"""The registered ``stilbene-tddft`` dataset: shipped frames, layout, provenance.

The shipped file must be what :mod:`fusion.data.stilbene` generates: geometries of a sample
of frames are rebuilt with rdkit, and the CIS labels of one frame are recomputed with pyscf
(about 20-40 s on one core).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from fusion.data import stilbene as st
from fusion.data.cache import CacheError, save_npz_atomic
from fusion.data.registry import dataset_card, get_dataset


@pytest.fixture(scope="module")
def shipped():
    return st.load_stilbene(st.SHIPPED_CACHE)


@pytest.fixture(scope="module")
def builder():
    return st.TorsionGeometryBuilder(st.STILBENE_SMILES, st.STILBENE_TORSION_SMARTS, seed=0)


def test_shipped_file_holds_the_registered_frames_with_the_generation_settings(shipped):
    assert len(shipped) == st.N_FRAMES
    assert shipped.settings == {
        "smiles": st.STILBENE_SMILES, "torsion_smarts": st.STILBENE_TORSION_SMARTS,
        "seed": 0, "basis": "sto-3g", "method": "hf", "temperature_k": 300.0,
        "omega_ref_cm": 1000.0, "format_version": st.FORMAT_VERSION}
    assert shipped.z.tolist().count(6) == 14 and shipped.z.tolist().count(1) == 12
    # the torsion schedule covers cis to trans
    assert shipped.torsion.min() < 10 and shipped.torsion.max() > 170
    gap = shipped.energies[:, 1] - shipped.energies[:, 0]
    assert np.all(gap > 0)


def test_shipped_geometries_are_the_generators(shipped, builder):
    for i in (*range(6), st.N_FRAMES - 1):
        np.testing.assert_allclose(builder.frame(i, 0, 300.0, 1000.0), shipped.pos[i],
                                   atol=1e-6, err_msg=f"frame {i}")


def test_shipped_labels_are_recomputed_by_pyscf(shipped):
    energies, forces = st.excited_state_labels(shipped.z, shipped.pos[0], "sto-3g", "hf")
    np.testing.assert_allclose(energies, shipped.energies[0], atol=1e-5)  # eV
    np.testing.assert_allclose(forces, shipped.forces[0], atol=1e-4)  # eV/Å


def test_registered_dataset_layout_units_and_split(tmp_path, shipped):
    structures, splits = get_dataset("stilbene-tddft", cache_dir=tmp_path, n_train=16,
                                     n_val=4, n_test=6)
    n = shipped.z.shape[0]
    assert structures.n_states == 2 and structures.meta["states"] == ["S0", "S1"]
    assert structures.y.shape == (st.N_FRAMES, 2)
    assert structures.forces.shape == (st.N_FRAMES * n, 2, 3)
    k = 7
    np.testing.assert_array_equal(structures.y[k], shipped.energies[k])
    np.testing.assert_array_equal(structures.forces[k * n + 3, 1], shipped.forces[k, 1, 3])
    np.testing.assert_array_equal(structures.meta["torsion"], shipped.torsion)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [16, 4, 6]
    assert len(set(np.concatenate(list(splits.values())).tolist())) == 26
    assert structures.meta["report_unit"] == "meV"
    # prepare copied the shipped file into the cache
    cache = st.stilbene_cache_path("stilbene-tddft", tmp_path)
    assert cache.read_bytes() == st.SHIPPED_CACHE.read_bytes()
    card = dataset_card("stilbene-tddft")
    assert card["states"] == ["S0", "S1"] and card["n_structures"] == st.N_FRAMES


def test_a_short_cache_names_the_frames_missing_and_the_command(tmp_path, shipped):
    cache = st.stilbene_cache_path("stilbene-tddft", tmp_path)
    cache.parent.mkdir(parents=True)
    save_npz_atomic(cache, {
        "z": shipped.z, "pos": shipped.pos[:5], "energies": shipped.energies[:5],
        "forces": shipped.forces[:5], "torsion": shipped.torsion[:5],
        "settings": np.asarray(json.dumps(shipped.settings, sort_keys=True))},
        st.FORMAT_VERSION)
    with pytest.raises(CacheError, match=f"holds 5 frames, stilbene-tddft needs {st.N_FRAMES}; "
                                         "run `fusion prepare stilbene-tddft`"):
        get_dataset("stilbene-tddft", cache_dir=tmp_path)


def test_a_missing_shipped_file_is_a_clear_error(tmp_path, monkeypatch):
    copy = tmp_path / "elsewhere.npz"
    shutil.copyfile(st.SHIPPED_CACHE, copy)
    monkeypatch.setattr(st, "SHIPPED_CACHE", tmp_path / "missing.npz")
    with pytest.raises(FileNotFoundError, match="shipped stilbene frames .* are missing"):
        st.prepare_stilbene("stilbene-tddft", st.N_FRAMES, tmp_path / "cache")


def test_models_without_state_heads_are_refused_on_multi_state_data(tmp_path):
    from fusion.experiment import RunSpec, run_training

    spec = RunSpec.from_dict({
        "dataset": "stilbene-tddft", "model": "cormorant", "variant": "baseline", "seed": 0,
        "out_dir": str(tmp_path / "run"), "cache_dir": str(tmp_path),
        "split": {"n_train": 4, "n_val": 2, "n_test": 2},
        "hparams": {"num_cg_levels": 1, "maxl": 1, "max_sh": 1, "num_channels": 2},
        "training": {"epochs": 1, "progress": False}})
    with pytest.raises(ValueError, match="stilbene-tddft labels 2 electronic state.*S0, S1.* "
                                         "cormorant/baseline predicts 1"):
        run_training(spec, log=lambda _: None)
