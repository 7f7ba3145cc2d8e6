"""Multi-state xxMD datasets (``xxmd-<molecule>``: S0, S1, S2 of the same frames) on small
fixtures in the real layout: the GitHub archive ``xxMD-main.zip`` holds one zip per state
(``xxMD-CASSCF/sti/s0/sti_s0.zip``) with the three extxyz split files
(``sti_{train,val,test}_s0.xyz``, written as ASE writes them; tests/fixtures_xxmd.py).

Every fixture is written by the test into ``<cache_dir>/downloads/``, where a user puts a
file by hand; an ``opener`` that fails the test is passed wherever a download could happen.
"""

import numpy as np
import pytest

from fusion.data import forcefields as ff
from fusion.data.extxyz import FrameError
from fusion.data.registry import dataset_card, family_inputs, get_dataset, prepare_family
from fusion.data.stilbene import dihedral_deg
from tests.fixtures_xxmd import (
    SPLIT_SIZES,
    STATES,
    TORSION_TARGETS,
    no_network,
    small_frames,
    stilbene_frames,
    write_archive,
)


@pytest.fixture(scope="module")
def stilbene():
    """Stilbene along its torsion, atoms shuffled, and the shuffled torsion atoms
    (:func:`tests.fixtures_xxmd.stilbene_frames`)."""
    return stilbene_frames()


def test_xxmd_stilbene_holds_s0_s1_s2_of_the_same_frames(tmp_path, stilbene):
    frames, torsion_atoms = stilbene
    n = len(frames.z)
    # 4e-7 Å is within the tolerance: the frames still count as the same
    write_archive(tmp_path, frames, moved={("s1", 4): (7, np.array([4e-7, 0.0, 0.0]))})
    s, sp = ff.load_xxmd_states("stilbene", tmp_path, opener=no_network)
    assert s.y.shape == (7, 3) and s.forces.shape == (7 * n, 3, 3) and s.n_states == 3
    assert s.meta["states"] == ["S0", "S1", "S2"] == dataset_card("xxmd-stilbene")["states"]
    assert s.meta["unit"] == "eV" and s.meta["report_unit"] == "meV"
    np.testing.assert_array_equal(s.y, frames.energy.T)  # [M, S] eV, as written
    np.testing.assert_allclose(s.forces, frames.forces.transpose(1, 2, 0, 3).reshape(-1, 3, 3),
                               atol=1e-10)  # [A, S, 3] eV/Å
    assert {k: len(v) for k, v in sp.items()} == SPLIT_SIZES
    for k, state in enumerate(STATES):
        single, single_sp = get_dataset(f"xxmd-stilbene-{state}", cache_dir=tmp_path)
        np.testing.assert_array_equal(s.y[:, k], single.y)
        np.testing.assert_array_equal(s.forces[:, k], single.forces)
        np.testing.assert_array_equal(s.z, single.z)
        for split in SPLIT_SIZES:
            np.testing.assert_array_equal(sp[split], single_sp[split])
    np.testing.assert_allclose(s.pos, frames.pos.reshape(-1, 3), atol=1e-10)
    # the central C=C torsion, found in xxMD's (shuffled) atom order
    expected = [dihedral_deg(p, torsion_atoms) for p in frames.pos]
    np.testing.assert_allclose(s.meta["torsion"], expected, atol=1e-6)
    np.testing.assert_allclose(s.meta["torsion"], TORSION_TARGETS, atol=0.5)
    # one download, one family cache next to the per-state ones
    assert sorted(p.name for p in (tmp_path / "downloads").glob("*.zip")) == ["xxMD-main.zip"]
    assert (tmp_path / "xxmd-stilbene" / "xxmd-stilbene.npz").exists()
    again, sp_small = get_dataset("xxmd-stilbene", cache_dir=tmp_path, n_train=2, n_test=1)
    np.testing.assert_array_equal(again.y, s.y)
    assert sp_small["train"].tolist() == sp["train"][:2].tolist()
    assert sp_small["test"].tolist() == sp["test"][:1].tolist()


def test_the_family_is_built_from_the_per_state_caches(tmp_path):
    frames = small_frames()
    write_archive(tmp_path, frames, code="mal", nested=False)  # an unpacked archive reads too
    caches = [tmp_path / f"xxmd-malonaldehyde-{state}" / f"xxmd-malonaldehyde-{state}.npz"
              for state in STATES]
    assert family_inputs("xxmd-malonaldehyde", tmp_path) == caches
    for state in STATES:
        ff.prepare_xxmd("malonaldehyde", state, tmp_path, opener=no_network)
    (tmp_path / "downloads" / "xxMD-main.zip").unlink()  # the caches are all it needs now
    path = prepare_family("xxmd-malonaldehyde", tmp_path)
    assert path == tmp_path / "xxmd-malonaldehyde" / "xxmd-malonaldehyde.npz"
    s, sp = get_dataset("xxmd-malonaldehyde", cache_dir=tmp_path)
    np.testing.assert_array_equal(s.y, frames.energy.T)
    assert s.meta["states"] == ["S0", "S1", "S2"] and "torsion" not in s.meta
    assert {k: len(v) for k, v in sp.items()} == SPLIT_SIZES


@pytest.mark.parametrize("change, message", [
    ({"moved": {("s2", 1): (3, np.array([0.0, 0.25, 0.0])),
                ("s2", 6): (0, np.array([0.5, 0.0, 0.0]))}},
     r"sti_train_s0\.xyz and sti_train_s2\.xyz differ first at frame 1 \(an atom 0\.25 Å "
     r"apart\); largest position difference 0\.5 Å \(frame 1 of sti_test_s2\.xyz\)"),
    ({"dropped": ("s1", 4)}, r"sti_val_s0\.xyz holds 2 frames, sti_val_s1\.xyz holds 1"),
])
def test_state_files_with_other_frames_name_files_frame_and_difference(tmp_path, change,
                                                                      message):
    write_archive(tmp_path, small_frames(), **change)
    with pytest.raises(ValueError, match=message) as info:
        ff.load_xxmd_states("stilbene", tmp_path, opener=no_network)
    assert "the CASSCF state files do not hold the same frames" in str(info.value)
    assert "positions equal to 1e-06 Å" in str(info.value)
    assert not (tmp_path / "xxmd-stilbene" / "xxmd-stilbene.npz").exists()


def test_state_files_with_other_elements_name_the_atom(tmp_path):
    frames = small_frames()
    write_archive(tmp_path, frames)
    for state in STATES:
        ff.prepare_xxmd("stilbene", state, tmp_path, opener=no_network)
    path = tmp_path / "xxmd-stilbene-s1" / "xxmd-stilbene-s1.npz"
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays["z"][9 * 3 + 2] = 1  # val frame 0 (frame 3 of 7), atom 2: C -> H
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"sti_val_s0\.xyz and sti_val_s1\.xyz differ first at "
                                         r"frame 0: atom 2 is Z=6 in one and Z=1 in the other"):
        get_dataset("xxmd-stilbene", cache_dir=tmp_path)


@pytest.mark.parametrize("change, error, message", [
    ({"drop_forces": ("s1", 6)}, FrameError,
     r"sti_s1\.zip:sti_s1/sti_test_s1\.xyz: frame 1 \(line 12\): no forces column"),
    ({"corrupt_zip": "s2"}, ValueError,
     r"xxMD-CASSCF/sti/s2/sti_s2\.zip: not a readable zip archive"),
])
def test_bad_state_file_names_archive_member_and_frame(tmp_path, change, error, message):
    write_archive(tmp_path, small_frames(), **change)
    with pytest.raises(error, match=message):
        ff.load_xxmd_states("stilbene", tmp_path, opener=no_network)
    assert not (tmp_path / "xxmd-stilbene" / "xxmd-stilbene.npz").exists()


def test_frames_that_are_not_stilbene_have_no_torsion(tmp_path):
    write_archive(tmp_path, small_frames())  # malonaldehyde-like atoms filed as stilbene
    with pytest.raises(ValueError, match=r"no frame among the first 7 has exactly one chain "
                                         r"ring C - C - C - ring C in its bond graph; expected "
                                         r"stilbene"):
        ff.load_xxmd_states("stilbene", tmp_path, opener=no_network)
