"""Multi-state xxMD datasets (``xxmd-<molecule>``: S0, S1, S2 of the same frames) on small
fixtures in the real layout: the GitHub archive ``xxMD-main.zip`` holds one zip per state
(``xxMD-CASSCF/sti/s0/sti_s0.zip``) with the three extxyz split files
(``sti_{train,val,test}_s0.xyz``, written as ASE writes them).

Every fixture is written by the test into ``<cache_dir>/downloads/``, where a user puts a
file by hand; an ``opener`` that fails the test is passed wherever a download could happen.
"""

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fusion.data import forcefields as ff
from fusion.data.extxyz import FrameError
from fusion.data.registry import dataset_card, family_inputs, get_dataset, prepare_family
from fusion.data.stilbene import (
    STILBENE_SMILES,
    STILBENE_TORSION_SMARTS,
    TorsionGeometryBuilder,
    dihedral_deg,
)

STATES = ("s0", "s1", "s2")
SPLIT_SIZES = {"train": 3, "val": 2, "test": 2}
TORSION_TARGETS = (10.0, 45.0, 80.0, 100.0, 135.0, 160.0, 175.0)  # degrees, one per frame
SYMBOLS = {1: "H", 6: "C", 8: "O"}


def no_network(request):
    pytest.fail(f"test tried to download {request.full_url}")


class Frames:
    """Fixture frames in file order (train, val, test): ``z`` [n], ``pos`` [F, n, 3] Å, and
    per state ``energy`` [S, F] eV, ``forces`` [S, F, n, 3] eV/Å."""

    def __init__(self, z, pos, seed=0):
        rng = np.random.default_rng(seed)
        f, n = pos.shape[:2]
        self.z, self.pos = z, pos
        self.energy = -14000.0 + np.arange(3)[:, None] * 4.0 + rng.normal(size=(3, f))
        self.forces = rng.normal(size=(3, f, n, 3))


@pytest.fixture(scope="module")
def stilbene():
    """Stilbene along its torsion, atoms shuffled (xxMD's atom order is not rdkit's); also
    the shuffled indices of the torsion atoms."""
    builder = TorsionGeometryBuilder(STILBENE_SMILES, STILBENE_TORSION_SMARTS, seed=0)
    order = np.random.RandomState(0).permutation(len(builder.z))  # new atom k = old order[k]
    pos = np.stack([builder.geometry(angle)[order] for angle in TORSION_TARGETS])
    where = {int(old): new for new, old in enumerate(order)}
    atoms = tuple(where[a] for a in builder.torsion_atoms)
    return Frames(builder.z[order], pos), atoms


def small_frames(n_frames=7, seed=3):
    """Malonaldehyde-like frames (C3H4O2), random geometry: enough for the file format."""
    rng = np.random.default_rng(seed)
    z = np.array([6, 6, 6, 8, 8, 1, 1, 1, 1])
    base = rng.uniform(-1.5, 1.5, size=(9, 3))
    return Frames(z, base + 0.05 * rng.normal(size=(n_frames, 9, 3)), seed)


def xyz_text(z, pos, energy, forces, drop_forces_in=None) -> str:
    """Frames as ASE writes extxyz: species, pos, forces columns and ``energy=`` (eV)."""
    out = []
    for f in range(pos.shape[0]):
        props = "species:S:1:pos:R:3" + ("" if f == drop_forces_in else ":forces:R:3")
        out += [str(len(z)), f'Properties={props} energy={float(energy[f])!r} pbc="F F F"']
        for k in range(len(z)):
            row = [SYMBOLS[int(z[k])], *(f"{v:.10f}" for v in pos[f, k])]
            if f != drop_forces_in:
                row += [f"{v:.10f}" for v in forces[f, k]]
            out.append(" ".join(row))
    return "\n".join(out) + "\n"


def write_archive(cache_dir: Path, frames: Frames, code="sti", nested=True, moved=None,
                  dropped=None, drop_forces=None, corrupt_zip=None) -> None:
    """``xxMD-main.zip`` with the CASSCF files of ``code``. ``moved``: {(state, frame): (atom,
    displacement [3] Å)}; ``dropped``: (state, frame) left out; ``drop_forces``: (state,
    frame) written without forces; ``corrupt_zip``: a state whose zip is garbage."""
    path = cache_dir / "downloads" / "xxMD-main.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    bounds = np.cumsum([0, *SPLIT_SIZES.values()])
    with zipfile.ZipFile(path, "w") as outer:
        outer.writestr("xxMD-main/README.md", "# xxMD\n")
        for s, state in enumerate(STATES):
            pos = frames.pos.copy()
            for (where, frame), (atom, shift) in (moved or {}).items():
                if where == state:
                    pos[frame, atom] += shift
            keep = [f for f in range(len(pos)) if (state, f) != dropped]
            texts = {}
            for k, split in enumerate(SPLIT_SIZES):
                idx = [f for f in keep if bounds[k] <= f < bounds[k + 1]]
                bare = drop_forces is not None and drop_forces[0] == state
                no_forces = idx.index(drop_forces[1]) if bare and drop_forces[1] in idx else None
                texts[f"{code}_{split}_{state}.xyz"] = xyz_text(
                    frames.z, pos[idx], frames.energy[s, idx], frames.forces[s, idx], no_forces)
            folder = f"xxMD-main/xxMD-CASSCF/{code}/{state}"
            if not nested:
                for name, text in texts.items():
                    outer.writestr(f"{folder}/{code}_{state}/{name}", text)
                continue
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as inner:
                for name, text in texts.items():
                    inner.writestr(f"{code}_{state}/{name}", text)
            data = b"PK\x03\x04 not a zip" if state == corrupt_zip else buffer.getvalue()
            outer.writestr(f"{folder}/{code}_{state}.zip", data)


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
