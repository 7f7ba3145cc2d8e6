"""rmd17xtb-<mol>: xTB features and the Δ target on a tiny rMD17 fixture in the real format.

The fixture ``<cache_dir>/downloads/rmd17.tar.bz2`` is laid out as the figshare archive
(``npz_data/rmd17_ethanol.npz`` in kcal/mol, ``splits/index_{train,test}_0N.csv``) with 12
ethanol frames near the equilibrium geometry, so GFN2-xTB converges; features are computed
for a 3 / 1 / 2 split only (6 xTB runs). Nothing touches the network.
"""

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from fusion.data import forcefields as ff
from fusion.data import rmd17xtb
from fusion.data.cache import CacheError
from fusion.data.registry import (
    FAMILIES,
    dataset_cache_path,
    dataset_card,
    dataset_keys,
    get_dataset,
)
from fusion.data.xtb_features import make_xtb_loader, molecule_features, run_xtb

ETHANOL_Z = np.array([6, 6, 8, 1, 1, 1, 1, 1, 1])
ETHANOL_POS = np.array([  # Å, staggered ethanol
    [1.1879, -0.3829, 0.0000], [0.0000, 0.5526, 0.0000], [-1.1867, -0.2472, 0.0000],
    [-1.9237, 0.3850, 0.0000], [2.0985, 0.2306, 0.0000], [1.1184, -1.0093, 0.8869],
    [1.1184, -1.0093, -0.8869], [0.0227, 1.1812, 0.8852], [0.0227, 1.1812, -0.8852]])
N_FRAMES = 12
SMALL = {"n_train": 3, "n_val": 1, "n_test": 2}


def no_network(request):
    pytest.fail(f"test tried to download {request.full_url}")


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_rmd17_archive(cache_dir: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The figshare layout with ethanol only: positions [F, 9, 3] Å, energies [F] kcal/mol;
    splits: 8 train / 4 test indices per split file."""
    rng = np.random.default_rng(seed)
    pos = ETHANOL_POS + 0.03 * rng.normal(size=(N_FRAMES, 9, 3))
    energy = rng.normal(-97000.0, 2.0, size=N_FRAMES)
    forces = rng.normal(size=(N_FRAMES, 9, 3))
    buf = io.BytesIO()
    np.savez(buf, nuclear_charges=ETHANOL_Z, coords=pos, energies=energy, forces=forces,
             old_indices=np.arange(N_FRAMES), old_energies=energy, old_forces=forces)
    path = cache_dir / "downloads" / "rmd17.tar.bz2"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:bz2") as tar:
        add_member(tar, "rmd17/npz_data/rmd17_ethanol.npz", buf.getvalue())
        for k in range(1, 6):
            perm = np.random.default_rng(10 + k).permutation(N_FRAMES)
            for name, idx in (("train", perm[:8]), ("test", perm[8:])):
                text = "\n".join(str(i) for i in idx) + "\n"
                add_member(tar, f"rmd17/splits/index_{name}_0{k}.csv", text.encode())
    return pos, energy


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A cache dir with the fixture archive and the small rmd17xtb-ethanol cache."""
    cache_dir = tmp_path_factory.mktemp("rmd17xtb")
    pos, energy = write_rmd17_archive(cache_dir)
    path = rmd17xtb.prepare_rmd17xtb("ethanol", cache_dir, opener=no_network, **SMALL)
    return cache_dir, path, pos, energy


def test_cache_built_with_the_split_frames_only(prepared):
    cache_dir, path, pos, energy = prepared
    assert path == cache_dir / "rmd17xtb-ethanol" / "rmd17xtb-ethanol.npz"
    assert dataset_cache_path("rmd17xtb-ethanol", cache_dir) == path
    assert path.exists() and not list(path.parent.glob("*.tmp*"))
    # the rmd17-full cache is built on the way
    assert (cache_dir / "rmd17-full-ethanol" / "rmd17-full-ethanol.npz").exists()
    s, sp = get_dataset("rmd17xtb-ethanol", cache_dir=cache_dir)
    _, source_splits = ff.load_rmd17("ethanol", cache_dir, **SMALL, opener=no_network)
    expected = np.concatenate([source_splits[k] for k in ("train", "val", "test")])
    np.testing.assert_array_equal(s.meta["rmd17_frame"], expected)
    assert {k: v.tolist() for k, v in sp.items()} == {"train": [0, 1, 2], "val": [3],
                                                      "test": [4, 5]}
    assert len(s) == 6 and len(s.meta["xtb_features"]) == 6
    np.testing.assert_allclose(s.pos.reshape(6, 9, 3), pos[expected])
    assert s.forces is None
    assert s.meta["make_loader"] is make_xtb_loader
    assert (s.meta["unit"], s.meta["report_unit"], s.meta["report_factor"]) == \
        ("eV", "meV", 1000.0)
    cut = get_dataset("rmd17xtb-ethanol", cache_dir=cache_dir, n_train=2, n_val=0,
                      n_test=1)[1]
    assert {k: v.tolist() for k, v in cut.items()} == {"train": [0, 1], "val": [],
                                                       "test": [4]}
    with pytest.raises(ValueError, match=r"rmd17xtb-ethanol: n_train = 4 but the cache .* "
                                         r"holds 3 train frames"):
        get_dataset("rmd17xtb-ethanol", cache_dir=cache_dir, n_train=4)


def test_delta_target_and_features_recomputed_for_one_frame(prepared):
    cache_dir, _, pos, energy = prepared
    s, sp = get_dataset("rmd17xtb-ethanol", cache_dir=cache_dir)
    k = 4  # the first test frame
    frame = int(s.meta["rmd17_frame"][k])
    xtb = run_xtb(ETHANOL_Z, pos[frame])
    reference = energy[frame] * ff.KCAL_MOL_TO_EV  # eV
    assert s.y[k] + s.meta["delta_offset"] == pytest.approx(reference - xtb.energy, abs=1e-6)
    # delta_offset: the mean of E_rMD17 - E_xTB over the 3 training frames
    train = s.meta["rmd17_frame"][sp["train"]]
    xtb_train = [run_xtb(ETHANOL_Z, pos[f]).energy for f in train]
    offset = np.mean(energy[train] * ff.KCAL_MOL_TO_EV - np.asarray(xtb_train))
    assert s.meta["delta_offset"] == pytest.approx(offset, abs=1e-6)
    assert abs(s.y[sp["train"]].mean()) < 1e-9  # the training targets are centred
    feats = s.meta["xtb_features"]
    direct = molecule_features(ETHANOL_Z, pos[frame], threshold=rmd17xtb.THRESHOLD)
    node = feats.node[feats.node_offsets[k]:feats.node_offsets[k] + 9]
    edges = slice(feats.edge_offsets[k], feats.edge_offsets[k] + feats.edge_counts[k])
    np.testing.assert_allclose(node, direct.node, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(feats.edge_index[:, edges], direct.edge_index)
    np.testing.assert_allclose(feats.edge[edges], direct.edge, rtol=1e-5, atol=1e-6)
    assert feats.energy[k] == pytest.approx(xtb.energy, abs=1e-8)
    batch = next(iter(make_xtb_loader(s, sp["test"], batch_size=2, elements=[1, 6, 8])))
    np.testing.assert_allclose(batch["y"].numpy(), s.y[sp["test"]])
    assert batch["num_graphs"] == 2 and tuple(batch["node_feats"].shape) == (18, 40)


def test_registry_keys_families_and_cards():
    keys = dataset_keys()
    for mol in ff.RMD17_MOLECULES:
        key = f"rmd17xtb-{mol}"
        assert key in keys and key in FAMILIES
        assert FAMILIES[key].cache_path("c") == Path("c") / key / f"{key}.npz"
    card = dataset_card("rmd17xtb-aspirin")
    assert "Δ-learning target" in card["name"]
    assert "figshare 12672038" in card["source"] and "tblite" in card["source"]
    assert "E_rMD17 - E_xTB" in card["units"] and "absorbs" in card["units"]
    assert card["split_sizes"] == {"train": 950, "val": 50, "test": 1000}
    assert "index_train/test_01" in card["split"]


def test_missing_rmd17_source_names_url_and_file(tmp_path):
    import urllib.error

    def offline(request):
        raise urllib.error.URLError("no route to host")

    with pytest.raises(RuntimeError) as err:
        rmd17xtb.prepare_rmd17xtb("ethanol", tmp_path, opener=offline, **SMALL)
    msg = str(err.value)
    assert ff.RMD17_ARCHIVE.url in msg
    assert str(tmp_path / "downloads" / "rmd17.tar.bz2") in msg
    assert not (tmp_path / "rmd17xtb-ethanol").exists()


def test_load_without_cache_and_stale_cache_are_clear_errors(prepared, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"rmd17xtb-ethanol\.npz does not exist; "
                                                r"build it with `fusion prepare "
                                                r"rmd17xtb-ethanol`"):
        get_dataset("rmd17xtb-ethanol", cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"unknown rMD17 molecule 'ethanal'"):
        rmd17xtb.prepare_rmd17xtb("ethanal", tmp_path)
    # the feature cache of other frames: rMD17 rebuilt from a different archive
    cache_dir, path, _, _ = prepared
    stale = tmp_path / "stale"
    (stale / "rmd17xtb-ethanol").mkdir(parents=True)
    (stale / "rmd17xtb-ethanol" / "rmd17xtb-ethanol.npz").write_bytes(path.read_bytes())
    write_rmd17_archive(stale, seed=5)
    with pytest.raises(CacheError, match=r"rmd17xtb-ethanol\.npz.*frames differ from the "
                                         r"rmd17-full-ethanol cache"):
        get_dataset("rmd17xtb-ethanol", cache_dir=stale, opener=no_network)
