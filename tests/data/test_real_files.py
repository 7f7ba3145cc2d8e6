"""Real benchmark files: pinned hashes, the hand-import command, rMD17 split files, acac.

Fixtures (tests/data/real/, cut by cut_fixtures.py; SOURCES.json names each real file and
its sha256) keep the real formats and values. The pinned hashes are those of the whole
real files, so tests that load fixtures pin the fixtures' own hashes in their place.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from fusion.cli import main as cli_main
from fusion.data import rmd17, sources
from fusion.data.download import ChecksumError, DownloadError, sha256_of
from fusion.data.extxyz import FrameError
from fusion.data.forcefields import KCAL_MOL_TO_EV, RMD17_MOLECULES
from fusion.data.registry import dataset_card, get_dataset

REAL = Path(__file__).parent / "real"
SOURCES = json.loads((REAL / "SOURCES.json").read_text())


def no_network(request):
    raise OSError("no network in tests")


@pytest.fixture
def pinned_fixtures(monkeypatch):
    """Pin every fixture file's own sha256 in place of the real file's."""
    for relpath in SOURCES:
        sha = sha256_of(REAL / relpath)
        monkeypatch.setitem(sources.PINNED, relpath, sources.PinnedFile(relpath, sha))
    return REAL


def test_fixtures_are_cut_from_the_pinned_real_files():
    for relpath, record in SOURCES.items():
        assert record["source_sha256"] == sources.PINNED[relpath].sha256
        whole = record["frames"] == "all"  # isolated atoms: the real file itself
        assert (sha256_of(REAL / relpath) == record["source_sha256"]) is whole


def test_every_split_file_and_acac_file_is_pinned_with_its_commit():
    for mol in RMD17_MOLECULES:
        for k in range(1, 6):
            for kind in ("train", "test"):
                pinned = sources.pinned_file(rmd17.split_file(mol, kind, k))
                assert re.fullmatch(r"[0-9a-f]{64}", pinned.sha256)
                assert pinned.url == ("https://raw.githubusercontent.com/andersx/rmd17-npz/"
                                      f"4f6bb0a186822c90d47cd98b7a27991fe0b3173b/{pinned.relpath}")
    for name in ("train_300K", "test_MD_300K", "test_MD_600K", "test_H_transfer",
                 "test_dihedral", "isolated_atoms"):
        assert sources.pinned_file(f"dataset_acac/{name}.xyz").repository == \
            "davkovacs/BOTNet-datasets"
    assert len(sources.PINNED) == 119
    with pytest.raises(KeyError, match="not a pinned benchmark file; known folders: rmd17-npz"):
        sources.pinned_file("rmd17-npz/rmd17_coffee_train_01.npz")


def test_import_copies_checked_files_and_refuses_a_modified_one(tmp_path, pinned_fixtures):
    cache = tmp_path / "cache"
    report = sources.import_files(REAL, cache, log=lambda _: None)
    assert sorted(report.copied) == sorted(SOURCES)
    assert report.refused == {} and any("cut_fixtures.py" in p for p in report.ignored)
    target = cache / "downloads" / "dataset_acac" / "train_300K.xyz"
    assert target.read_bytes() == (REAL / "dataset_acac" / "train_300K.xyz").read_bytes()
    again = sources.import_files(REAL, cache, log=lambda _: None)
    assert again.copied == [] and sorted(again.present) == sorted(SOURCES)

    # A truncated copy of one file: refused with both hashes, the cached file kept.
    bad = tmp_path / "bad" / "dataset_acac"
    bad.mkdir(parents=True)
    data = (REAL / "dataset_acac" / "train_300K.xyz").read_bytes()
    (bad / "train_300K.xyz").write_bytes(data[: len(data) // 2])
    report = sources.import_files(tmp_path / "bad", cache, log=lambda _: None)
    why = report.refused["dataset_acac/train_300K.xyz"]
    assert sha256_of(bad / "train_300K.xyz") in why
    assert sources.PINNED["dataset_acac/train_300K.xyz"].sha256 in why
    assert target.read_bytes() == data  # nothing overwritten
    assert not list(target.parent.glob(".*.tmp"))


def test_import_command_names_the_refused_file_and_fails(tmp_path, capsys):
    # The real pins: a fixture is not the real file, so the command refuses it.
    folder = tmp_path / "placed" / "rmd17-npz"
    folder.mkdir(parents=True)
    shutil.copy(REAL / "rmd17-npz" / "rmd17_ethanol_test_01.npz", folder)
    code = cli_main(["data", "import", str(tmp_path / "placed"), "--cache-dir",
                     str(tmp_path / "cache")])
    out, err = capsys.readouterr()
    assert code == 2
    assert "REFUSED rmd17-npz/rmd17_ethanol_test_01.npz" in out
    assert SOURCES["rmd17-npz/rmd17_ethanol_test_01.npz"]["source_sha256"] in out
    assert err.startswith("error: 1 file(s) refused")
    assert not (tmp_path / "cache" / "downloads" / "rmd17-npz").exists()
    assert cli_main(["data", "import", str(tmp_path / "nowhere")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_missing_file_without_network_names_url_place_and_hash(tmp_path):
    with pytest.raises(DownloadError) as err:
        sources.fetch_pinned("dataset_acac/test_dihedral.xyz", tmp_path, opener=no_network)
    text = str(err.value)
    assert "raw.githubusercontent.com/davkovacs/BOTNet-datasets/29e6d46" in text
    assert str(tmp_path / "downloads" / "dataset_acac" / "test_dihedral.xyz") in text
    assert sources.PINNED["dataset_acac/test_dihedral.xyz"].sha256 in text


def test_a_hand_placed_wrong_file_is_never_used(tmp_path):
    placed = tmp_path / "downloads" / "dataset_acac" / "test_dihedral.xyz"
    placed.parent.mkdir(parents=True)
    shutil.copy(REAL / "dataset_acac" / "test_dihedral.xyz", placed)
    with pytest.raises(ChecksumError, match="expected sha256 0c2246a5"):
        sources.fetch_pinned("dataset_acac/test_dihedral.xyz", tmp_path, opener=no_network)
    assert not placed.exists()  # moved aside, not used
    assert list(placed.parent.glob("test_dihedral.xyz.bad-*"))


@pytest.fixture
def cache(tmp_path, pinned_fixtures):
    sources.import_files(REAL, tmp_path, log=lambda _: None)
    return tmp_path


def test_rmd17_units_on_a_known_frame_and_the_author_splits(cache):
    s, sp = rmd17.load_rmd17("ethanol", cache, opener=no_network)
    assert dataset_card("rmd17-ethanol")["split_per_seed"] is True
    assert {k: len(v) for k, v in sp.items()} == {"train": 2, "val": 50, "test": 3}
    # Frame 0 of rmd17_ethanol_train_01.npz: -97079.92222178938 kcal/mol; 1 kcal/mol is
    # 0.04336410424 eV (4184 J / (N_A e), CODATA 2018).
    assert KCAL_MOL_TO_EV == pytest.approx(0.04336410424, rel=1e-9)
    assert s.y[sp["train"][0]] == pytest.approx(-97079.92222178938 * 0.04336410424, rel=1e-9)
    first_atom = s.forces[s.atom_indices(sp["train"][:1])][0]
    np.testing.assert_allclose(first_atom, np.array([-17.64730699, -26.13751651, 40.70575377])
                               * KCAL_MOL_TO_EV, rtol=1e-8)
    assert s.meta["unit"] == "eV" and s.meta["forces_unit"] == "eV/Å"
    # last 50 of the train file validate; the test file tests
    with np.load(REAL / "rmd17-npz" / "rmd17_ethanol_train_01.npz") as npz:
        old = npz["old_indices"]
    np.testing.assert_array_equal(s.meta["old_index"][sp["val"]], old[-50:])
    np.testing.assert_array_equal(s.meta["old_index"][sp["train"]], old[:2])


def test_rmd17_seed_selects_the_pair_and_pairs_are_disjoint(cache):
    for seed in range(5):
        s, sp = get_dataset("rmd17-ethanol", cache_dir=cache, seed=seed)
        assert s.meta["split_pair"] == seed + 1
        with np.load(REAL / "rmd17-npz" / f"rmd17_ethanol_test_0{seed + 1}.npz") as npz:
            np.testing.assert_array_equal(s.meta["old_index"][sp["test"]], npz["old_indices"])
        train_val = np.concatenate([sp["train"], sp["val"]])
        assert not set(s.meta["old_index"][train_val]) & set(s.meta["old_index"][sp["test"]])
    with pytest.raises(ValueError, match=r"seed 5 selects the author's pair 6, but there are 5"):
        get_dataset("rmd17-ethanol", cache_dir=cache, seed=5)


def _write_npz(path: Path, **changes) -> None:
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays.update(changes)
    np.savez(path, **arrays)


@pytest.mark.parametrize("problem", ["nan", "shape", "overlap"])
def test_rmd17_malformed_split_file_names_file_and_frame(tmp_path, problem, monkeypatch):
    folder = tmp_path / "placed"
    shutil.copytree(REAL, folder)
    bad = folder / "rmd17-npz" / "rmd17_ethanol_test_03.npz"
    with np.load(bad) as npz:
        forces, old = npz["forces"].copy(), npz["old_indices"]
    if problem == "nan":
        forces[2, 4, 1] = np.nan
        _write_npz(bad, forces=forces)
        expected = r"rmd17_ethanol_test_03\.npz: frame 2: non-finite value in 'forces'"
    elif problem == "shape":
        _write_npz(bad, forces=forces[:2])
        expected = r"rmd17_ethanol_test_03\.npz: mismatched array lengths: 'forces' has shape"
    else:
        with np.load(folder / "rmd17-npz" / "rmd17_ethanol_train_03.npz") as npz:
            _write_npz(bad, old_indices=np.r_[old[:2], npz["old_indices"][7]])
        expected = r"rmd17_ethanol_test_03\.npz: 1 frames \(e\.g\. MD17 index \d+\) are also in"
    for relpath in SOURCES:
        monkeypatch.setitem(sources.PINNED, relpath,
                            sources.PinnedFile(relpath, sha256_of(folder / relpath)))
    sources.import_files(folder, tmp_path, log=lambda _: None)
    with pytest.raises(ValueError, match=expected):
        rmd17.load_rmd17("ethanol", tmp_path, opener=no_network)
    assert not (tmp_path / "rmd17-ethanol" / "rmd17-ethanol.npz").exists()


def test_acac_splits_e0s_and_energy_only_test_sets(cache):
    s, sp = get_dataset("acac-300K", cache_dir=cache)
    assert {k: len(v) for k, v in sp.items()} == {"train": 11, "val": 1, "test": 3}
    assert s.meta["e0s"] == {1: -13.568422178253735, 6: -1026.8538996116154,
                             8: -2037.796869412825}
    assert s.meta["test_has_forces"] is True
    first = s.y[sp["test"][0]]
    assert first == pytest.approx(float(re.search(
        r"energy=(-?[\d.]+)", (REAL / "dataset_acac" / "test_MD_300K.xyz").read_text()
        .splitlines()[1])[1]))
    for key, n_test in (("acac-600K", 3), ("acac-H-transfer", 2), ("acac-dihedral", 2)):
        t, tsp = get_dataset(key, cache_dir=cache)
        assert dataset_card(key)["trained_as"] == "acac-300K"
        np.testing.assert_array_equal(tsp["train"], sp["train"])  # one training set
        assert len(tsp["test"]) == n_test
        assert t.meta["test_has_forces"] is (key == "acac-600K")


def test_acac_malformed_properties_names_file_and_frame(tmp_path, monkeypatch):
    folder = tmp_path / "placed"
    shutil.copytree(REAL, folder)
    path = folder / "dataset_acac" / "test_MD_600K.xyz"
    lines = path.read_text().splitlines()
    lines[1 + 17] = lines[1 + 17].replace("forces:R:3", "forces:R:4")  # frame 1's comment
    path.write_text("\n".join(lines) + "\n")
    for relpath in SOURCES:
        monkeypatch.setitem(sources.PINNED, relpath,
                            sources.PinnedFile(relpath, sha256_of(folder / relpath)))
    sources.import_files(folder, tmp_path, log=lambda _: None)
    expected = r"test_MD_600K\.xyz: frame 1 \(line 18\): Properties=.*'forces' is R:4, expected R:3"
    with pytest.raises(FrameError, match=expected):
        get_dataset("acac-600K", cache_dir=tmp_path)
