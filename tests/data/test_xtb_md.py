"""xtb-md stand-ins: GFN2-xTB units, seeded MD, atomic cache, settings check, split."""

import numpy as np
import pytest

from fusion.data import xtb_md
from fusion.data.cache import CacheError
from fusion.data.registry import FAMILIES, dataset_cache_path, dataset_keys, get_dataset

TINY = dict(n_frames=5, steps_between_frames=2, equilibration_steps=2)


@pytest.fixture(scope="module")
def ethanol_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("resources")
    raw = xtb_md.prepare_xtb_md("ethanol", cache, **TINY)
    return cache, raw


def test_forces_are_minus_energy_gradient_in_ev_per_angstrom():
    z, pos = xtb_md.embed_smiles(xtb_md.MOLECULES["ethanol"], seed=0)
    xtb = xtb_md._XTB(z, pos)
    energy, forces = xtb(pos)
    h = 1e-4  # Å
    for atom, axis in ((0, 0), (2, 1), (5, 2)):
        step = np.zeros_like(pos)
        step[atom, axis] = h
        e_plus, _ = xtb(pos + step)
        e_minus, _ = xtb(pos - step)
        numeric = -(e_plus - e_minus) / (2 * h)
        assert abs(numeric - forces[atom, axis]) < 2e-3  # eV/Å
    # GFN2-xTB total energy of ethanol is about -11.4 Hartree (~ -310 eV).
    assert -330 < energy < -290


def test_generation_is_seeded_and_cached(ethanol_cache):
    cache, raw = ethanol_cache
    again = xtb_md.generate_xtb_md("ethanol", **TINY)
    np.testing.assert_array_equal(raw["pos"], again["pos"])
    np.testing.assert_array_equal(raw["energy"], again["energy"])
    other_seed = xtb_md.generate_xtb_md("ethanol", **TINY, seed=1)
    assert not np.allclose(other_seed["pos"], raw["pos"])
    assert raw["pos"].shape == (5, 9, 3) and raw["forces"].shape == (5, 9, 3)
    assert raw["z"].tolist().count(6) == 2 and raw["z"].tolist().count(8) == 1
    assert np.ptp(raw["energy"]) > 0  # the frames differ


def test_load_uses_cache_and_rejects_other_settings(ethanol_cache):
    cache, raw = ethanol_cache
    s, sp = xtb_md.load_xtb_md("ethanol", cache, **TINY)
    np.testing.assert_allclose(s.y, raw["energy"])
    np.testing.assert_allclose(s.forces, raw["forces"].reshape(-1, 3))
    assert s.meta["report_unit"] == "meV" and s.meta["report_factor"] == 1000.0
    assert sorted(np.concatenate([sp["train"], sp["val"], sp["test"]]).tolist()) == \
        list(range(5))
    with pytest.raises(CacheError, match="other settings.*n_frames"):
        xtb_md.load_xtb_md("ethanol", cache)  # defaults: 300 frames
    with pytest.raises(ValueError, match="unknown xtb-md setting"):
        xtb_md.load_xtb_md("ethanol", cache, n_steps=3)


def test_frame_split_is_deterministic_and_test_is_stable():
    a = xtb_md.frame_split(100, 20, 5, 30)
    b = xtb_md.frame_split(100, 40, 10, 30)
    assert a["test"].tolist() == b["test"].tolist()
    assert a["train"].tolist() == b["train"][:20].tolist()
    assert not set(b["train"]) & set(b["test"]) and not set(b["val"]) & set(b["test"])
    default = xtb_md.frame_split(300, None, None, None)
    assert [len(default[k]) for k in ("train", "val", "test")] == [180, 30, 90]
    with pytest.raises(ValueError, match="needs more than the 100 frames"):
        xtb_md.frame_split(100, 80, 10, 30)


def test_registry_one_family_per_molecule(tmp_path):
    keys = dataset_keys()
    for molecule in xtb_md.MOLECULES:
        key = f"xtb-md-{molecule}"
        assert key in keys and key in FAMILIES
        assert dataset_cache_path(key, tmp_path) == tmp_path / key / f"{key}.npz"
    with pytest.raises(ValueError, match="unknown xtb-md molecule 'propanol'"):
        xtb_md.generate_xtb_md("propanol", **TINY)


def test_get_dataset_passes_settings(ethanol_cache):
    cache, _ = ethanol_cache
    s, sp = get_dataset("xtb-md-ethanol", cache_dir=cache, n_train=2, n_val=1, n_test=2,
                        **TINY)
    assert len(s) == 5 and len(sp["train"]) == 2


def test_corrupt_cache_is_reported_not_regenerated(tmp_path):
    path = xtb_md.xtb_md_cache_path("benzene", tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"truncated")
    with pytest.raises(CacheError, match="xtb-md-benzene.npz"):
        xtb_md.load_xtb_md("benzene", tmp_path, **TINY)
    assert path.read_bytes() == b"truncated"
