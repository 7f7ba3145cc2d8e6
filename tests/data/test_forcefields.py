"""Loaders of rMD17, MD17, 3BPA and xxMD on small fixtures in the real file formats.

Every fixture is written by the test into ``<cache_dir>/downloads/`` (where a user puts a
file by hand), so nothing touches the network: an ``opener`` that fails the test is passed
wherever a download could happen.
"""

import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fusion.data import forcefields as ff
from fusion.data.download import ChecksumError, RemoteFile, sha256_of
from fusion.data.extxyz import FrameError, parse_comment, read_extxyz
from fusion.data.registry import dataset_cache_path, dataset_keys, get_dataset

ETHANOL_Z = np.array([6, 6, 8, 1, 1, 1, 1, 1, 1])


def no_network(request):
    pytest.fail(f"test tried to download {request.full_url}")


def md_frames(n_frames: int, seed: int = 0):
    """Ethanol-like frames: positions [F, 9, 3], energies [F], forces [F, 9, 3]."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(-1.5, 1.5, size=(9, 3))
    pos = base + 0.05 * rng.normal(size=(n_frames, 9, 3))
    return pos, rng.normal(-97000.0, 2.0, size=n_frames), rng.normal(size=(n_frames, 9, 3))


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_rmd17_archive(cache_dir: Path, n_frames=40, n_train=20, n_test=12,
                        energies=None, forces=None) -> tuple:
    """``rmd17.tar.bz2`` laid out as the figshare archive (npz_data/, splits/)."""
    pos, e, f = md_frames(n_frames)
    e = e if energies is None else energies
    f = f if forces is None else forces
    rng = np.random.default_rng(1)
    splits = {}
    path = cache_dir / "downloads" / "rmd17.tar.bz2"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:bz2") as tar:
        add_member(tar, "rmd17/npz_data/rmd17_ethanol.npz", npz_bytes(
            nuclear_charges=ETHANOL_Z, coords=pos, energies=e, forces=f,
            old_indices=np.arange(n_frames), old_energies=e, old_forces=f))
        for k in range(1, 6):
            perm = rng.permutation(n_frames)
            splits[k] = (perm[:n_train], perm[n_train:n_train + n_test])
            for name, idx in (("train", splits[k][0]), ("test", splits[k][1])):
                text = "\n".join(str(i) for i in idx) + "\n"
                add_member(tar, f"rmd17/splits/index_{name}_0{k}.csv", text.encode())
    return pos, e, f, splits


def xyz_frame(z, pos, energy=None, forces=None, energy_key="energy") -> str:
    symbols = {1: "H", 6: "C", 7: "N", 8: "O"}
    props = "species:S:1:pos:R:3" + (":forces:R:3" if forces is not None else "")
    info = f'Properties={props} config_type=md pbc="F F F"'
    if energy is not None:
        info = f"{energy_key}={float(energy)!r} " + info
    lines = [str(len(z)), info]
    for k in range(len(z)):
        row = [symbols[int(z[k])], *(f"{v:.10f}" for v in pos[k])]
        if forces is not None:
            row += [f"{v:.10f}" for v in forces[k]]
        lines.append(" ".join(row))
    return "\n".join(lines) + "\n"


def xyz_file(n_frames: int, seed: int = 0) -> tuple[str, np.ndarray, np.ndarray]:
    pos, e, f = md_frames(n_frames, seed)
    e = e / 1000.0
    return "".join(xyz_frame(ETHANOL_Z, pos[i], e[i], f[i]) for i in range(n_frames)), e, f


# ---------------------------------------------------------------------- extxyz reader
def test_extxyz_reads_energy_forces_and_comment(tmp_path):
    text, e, f = xyz_file(3)
    path = tmp_path / "a.xyz"
    path.write_text(text)
    fr = read_extxyz(path)
    assert fr.n_atoms.tolist() == [9, 9, 9]
    np.testing.assert_allclose(fr.energy, e)
    np.testing.assert_allclose(fr.forces.reshape(3, 9, 3), f, atol=1e-9)
    assert fr.z.tolist() == ETHANOL_Z.tolist() * 3
    assert parse_comment('energy=-1.5 a="x y" b={1 2}') == {"energy": "-1.5", "a": "x y",
                                                           "b": "1 2"}


@pytest.mark.parametrize("problem, message", [
    ("no_energy", r"frame 1 \(line 12\): no energy"),
    ("no_forces", r"frame 1 \(line 12\): no forces column"),
    ("nan", r"frame 1 \(line 12\): non-finite value .* atom 2 \(line 16\)"),
    ("truncated", r"frame 2 .* truncated frame"),
])
def test_extxyz_bad_frames_name_file_frame_and_line(tmp_path, problem, message):
    pos, e, f = md_frames(3)
    frames = [xyz_frame(ETHANOL_Z, pos[i], e[i], f[i]) for i in range(3)]
    if problem == "no_energy":
        frames[1] = xyz_frame(ETHANOL_Z, pos[1], None, f[1])
    elif problem == "no_forces":
        frames[1] = xyz_frame(ETHANOL_Z, pos[1], e[1], None)
    elif problem == "nan":
        f[1, 2, 0] = np.nan
        frames[1] = xyz_frame(ETHANOL_Z, pos[1], e[1], f[1])
    else:
        frames[2] = "\n".join(frames[2].splitlines()[:6]) + "\n"
    path = tmp_path / "bad.xyz"
    path.write_text("".join(frames))
    with pytest.raises(FrameError, match=message) as err:
        read_extxyz(path)
    assert str(path) in str(err.value)


# ---------------------------------------------------------------------- rMD17
def test_rmd17_units_and_official_splits(tmp_path):
    pos, e, f, splits = write_rmd17_archive(tmp_path)
    s, sp = ff.load_rmd17("ethanol", tmp_path, split_index=3, opener=no_network)
    np.testing.assert_allclose(s.y, e * ff.KCAL_MOL_TO_EV)
    np.testing.assert_allclose(s.forces, f.reshape(-1, 3) * ff.KCAL_MOL_TO_EV)
    np.testing.assert_allclose(s.pos, pos.reshape(-1, 3))
    assert abs(ff.KCAL_MOL_TO_EV - 0.0433641) < 1e-7
    train_idx, test_idx = splits[3]
    assert sorted(np.concatenate([sp["train"], sp["val"]])) == sorted(train_idx)
    assert len(sp["val"]) == 2 and len(sp["train"]) == 18  # min(50, 20 // 10)
    assert sp["test"].tolist() == test_idx.tolist()
    assert s.meta["report_unit"] == "meV" and s.meta["report_factor"] == 1000.0
    cut = ff.load_rmd17("ethanol", tmp_path, n_train=5, n_val=1, n_test=4, split_index=3)[1]
    assert ff._val_from_train(np.arange(1000), 50)[1].shape == (50,)  # rMD17: 950 / 50
    assert ff._val_from_train(np.arange(500), 50)[1].shape == (50,)  # 3BPA: 450 / 50
    assert cut["train"].tolist() == sp["train"][:5].tolist() and len(cut["test"]) == 4
    assert dataset_cache_path("rmd17-full-ethanol", tmp_path) == \
        tmp_path / "rmd17-full-ethanol" / "rmd17-full-ethanol.npz"
    assert (tmp_path / "rmd17-full-ethanol" / "rmd17-full-ethanol.npz").exists()


def test_rmd17_registry_and_get_dataset(tmp_path):
    write_rmd17_archive(tmp_path)
    keys = dataset_keys()
    assert {f"rmd17-full-{m}" for m in ff.RMD17_MOLECULES} <= set(keys)
    s, sp = get_dataset("rmd17-full-ethanol", cache_dir=tmp_path, n_train=10, n_val=1, n_test=5)
    assert len(sp["train"]) == 10 and s.forces is not None


def test_rmd17_mismatched_lengths_and_nan_name_file_and_frame(tmp_path):
    other = tmp_path / "rmd17-full-aspirin" / "rmd17-full-aspirin.npz"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"another dataset's cache")
    pos, e, f = md_frames(40)
    write_rmd17_archive(tmp_path, energies=e[:-1])
    with pytest.raises(ValueError, match=r"rmd17\.tar\.bz2:rmd17_ethanol\.npz: mismatched "
                                         r"array lengths: 'energies' has shape \(39,\)"):
        ff.load_rmd17("ethanol", tmp_path, opener=no_network)
    f[7, 3, 1] = np.nan
    write_rmd17_archive(tmp_path, forces=f)
    with pytest.raises(ValueError, match=r"rmd17_ethanol\.npz: frame 7: non-finite value in "
                                         r"'forces'"):
        ff.load_rmd17("ethanol", tmp_path, opener=no_network)
    assert not (tmp_path / "rmd17-full-ethanol" / "rmd17-full-ethanol.npz").exists()
    assert other.read_bytes() == b"another dataset's cache"


def test_rmd17_truncated_archive_and_checksum_mismatch(tmp_path, monkeypatch):
    write_rmd17_archive(tmp_path)
    archive = tmp_path / "downloads" / "rmd17.tar.bz2"
    good = archive.read_bytes()
    archive.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"rmd17\.tar\.bz2: cannot read the archive"):
        ff.load_rmd17("ethanol", tmp_path, opener=no_network)
    # With a pinned checksum the truncated file is caught before it is opened.
    pinned = RemoteFile(ff.RMD17_ARCHIVE.url, "rmd17.tar.bz2",
                        __import__("hashlib").sha256(good).hexdigest())
    monkeypatch.setattr(ff, "RMD17_ARCHIVE", pinned)
    bad_sha = sha256_of(archive)
    with pytest.raises(ChecksumError, match=f"expected sha256 {pinned.sha256}, got {bad_sha}"):
        ff.load_rmd17("ethanol", tmp_path, opener=no_network)
    assert list((tmp_path / "downloads").glob("rmd17.tar.bz2.bad-*"))


def test_unknown_molecules_list_valid_names(tmp_path):
    with pytest.raises(ValueError, match="unknown rMD17 molecule 'ethanal'.*ethanol"):
        ff.load_rmd17("ethanal", tmp_path)
    with pytest.raises(ValueError, match="unknown MD17 molecule 'azobenzene'"):
        ff.load_md17("azobenzene", tmp_path)
    with pytest.raises(ValueError, match="unknown xxMD molecule 'benzene'.*stilbene"):
        ff.load_xxmd("benzene", "s0", tmp_path)
    with pytest.raises(ValueError, match="unknown xxMD state 's3'"):
        ff.load_xxmd("stilbene", "s3", tmp_path)
    with pytest.raises(ValueError, match="unknown 3BPA test set '900K'"):
        ff.load_3bpa("900K", tmp_path)


# ---------------------------------------------------------------------- MD17
def test_md17_npz_units_and_seeded_split(tmp_path):
    pos, e, f = md_frames(30)
    path = tmp_path / "downloads" / "md17_ethanol.npz"
    path.parent.mkdir(parents=True)
    path.write_bytes(npz_bytes(z=ETHANOL_Z, R=pos, E=e[:, None], F=f, name="ethanol"))
    s, sp = ff.load_md17("ethanol", tmp_path, n_train=10, n_val=5, n_test=10,
                         opener=no_network)
    np.testing.assert_allclose(s.y, e * ff.KCAL_MOL_TO_EV)
    np.testing.assert_allclose(s.forces.reshape(30, 9, 3), f * ff.KCAL_MOL_TO_EV)
    all_idx = np.concatenate([sp["train"], sp["val"], sp["test"]])
    assert len(set(all_idx.tolist())) == 25
    assert sp["train"].tolist() == np.random.RandomState(0).permutation(30)[:10].tolist()
    with pytest.raises(ValueError, match="n_train \\+ n_val \\+ n_test = 1050 > 30"):
        ff.load_md17("ethanol", tmp_path, n_train=1000, n_val=50, n_test=0)


# ---------------------------------------------------------------------- 3BPA
def write_3bpa_archive(cache_dir: Path, broken: str | None = None) -> dict[str, int]:
    sizes = {"train_300K.xyz": 20, "test_300K.xyz": 6, "test_600K.xyz": 5,
             "test_1200K.xyz": 4, "test_dih_beta120.xyz": 3, "test_dih_beta150.xyz": 3,
             "test_dih_beta180.xyz": 2, "iso_atoms.xyz": 0}
    path = cache_dir / "downloads" / "dataset_3BPA.tar.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for k, (name, n) in enumerate(sizes.items()):
            if n == 0:
                text = "1\nenergy=-13.6 config_type=IsolatedAtom\nH 0 0 0\n"
            else:
                text, _, _ = xyz_file(n, seed=k)
            if name == broken:
                pos, e, f = md_frames(2, seed=9)
                text = xyz_frame(ETHANOL_Z, pos[0], e[0], f[0]) + \
                    xyz_frame(ETHANOL_Z, pos[1], e[1], None)
            add_member(tar, f"dataset_3BPA/{name}", text.encode())
    return sizes


def test_3bpa_train_val_and_test_slices(tmp_path):
    sizes = write_3bpa_archive(tmp_path)
    s, sp = ff.load_3bpa("600K", tmp_path, opener=no_network)
    assert len(sp["train"]) + len(sp["val"]) == 20 and len(sp["val"]) == 2
    assert len(sp["test"]) == sizes["test_600K.xyz"]
    assert set(s.meta["subset"][sp["test"]]) == {"600K"}
    assert set(s.meta["subset"][sp["train"]]) == {"train_300K"}
    s2, sp2 = get_dataset("3bpa-dih-beta180", cache_dir=tmp_path)
    assert len(sp2["test"]) == 2 and sp2["train"].tolist() == sp["train"].tolist()
    assert (tmp_path / "3bpa" / "3bpa.npz").exists()


def test_3bpa_frame_without_forces_names_member_and_frame(tmp_path):
    write_3bpa_archive(tmp_path, broken="test_1200K.xyz")
    with pytest.raises(FrameError, match=r"dataset_3BPA\.tar\.gz:test_1200K\.xyz: frame 1 "
                                         r"\(line 12\): no forces column"):
        ff.load_3bpa("300K", tmp_path, opener=no_network)
    assert not (tmp_path / "3bpa" / "3bpa.npz").exists()


# ---------------------------------------------------------------------- xxMD
def write_xxmd_archive(cache_dir: Path, drop_energy_in: str | None = None) -> None:
    path = cache_dir / "downloads" / "xxMD-main.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for k, (split, n) in enumerate((("train", 8), ("val", 3), ("test", 5))):
            for state, folder in (("s1", "xxMD-CASSCF/mal/s1/mal_s1"),
                                  ("uks", "xxMD-DFT/mal")):
                text, _, _ = xyz_file(n, seed=10 * k + len(state))
                name = f"mal_{split}_{state}.xyz"
                if name == drop_energy_in:
                    pos, e, f = md_frames(n)
                    text = "".join(xyz_frame(ETHANOL_Z, pos[i], None if i == 2 else e[i], f[i])
                                   for i in range(n))
                zf.writestr(f"xxMD-main/{folder}/{name}", text)


def test_xxmd_split_from_file_names(tmp_path):
    write_xxmd_archive(tmp_path)
    s, sp = ff.load_xxmd("malonaldehyde", "s1", tmp_path, opener=no_network)
    assert [len(sp[k]) for k in ("train", "val", "test")] == [8, 3, 5]
    s_dft, sp_dft = get_dataset("xxmd-malonaldehyde-dft", cache_dir=tmp_path)
    assert len(sp_dft["test"]) == 5 and not np.allclose(s.y, s_dft.y)
    assert (tmp_path / "xxmd-malonaldehyde-s1" / "xxmd-malonaldehyde-s1.npz").exists()


def test_xxmd_frame_without_energy(tmp_path):
    write_xxmd_archive(tmp_path, drop_energy_in="mal_val_s1.xyz")
    with pytest.raises(FrameError, match=r"mal_val_s1\.xyz: frame 2 \(line 23\): no energy"):
        ff.load_xxmd("malonaldehyde", "s1", tmp_path, opener=no_network)


def test_offline_error_names_url_file_and_checksum_status(tmp_path):
    import urllib.error

    def offline(request):
        raise urllib.error.URLError("no route to host")

    with pytest.raises(RuntimeError) as err:
        ff.load_md17("uracil", tmp_path, opener=offline)
    msg = str(err.value)
    assert "http://www.quantum-machine.org/gdml/data/npz/md17_uracil.npz" in msg
    assert str(tmp_path / "downloads" / "md17_uracil.npz") in msg
    assert "sha256 not published" in msg


def test_card_statistics_from_the_cache(tmp_path):
    from fusion.data.cards import card_with_stats

    before = card_with_stats("rmd17-full-ethanol", tmp_path)
    assert "not built yet" in before["data"] and not (tmp_path / "downloads").exists()
    write_rmd17_archive(tmp_path)
    s, sp = ff.load_rmd17("ethanol", tmp_path, opener=no_network)
    card = card_with_stats("rmd17-full-ethanol", tmp_path)
    assert card["source"].startswith("https://figshare.com/ndownloader/files/23950376")
    assert card["data: n_structures"] == 40 and card["data: n_atoms"] == [9]
    assert card["data: split_sizes"] == {"train": 18, "val": 2, "test": 12}
    assert card["data: y_std (eV)"] == round(float(np.std(s.y)), 4)
    assert card["data: forces_max_abs (eV/Å)"] == round(float(np.abs(s.forces).max()), 4)
    json.dumps(card)  # card values are plain JSON
    (tmp_path / "rmd17-full-ethanol" / "rmd17-full-ethanol.npz").write_bytes(b"broken")
    assert "CacheError" in card_with_stats("rmd17-full-ethanol", tmp_path)["data: unavailable"]


# ---------------------------------------------------------------------- training with forces
def pair_potential_frames(n_frames: int, seed: int = 0):
    """Ethanol-shaped frames with a Morse pair potential: consistent E (kcal/mol) and
    F = -dE/dx (kcal/mol/Å), so a force model has something real to learn."""
    rng = np.random.default_rng(seed)
    base = np.array([[0, 0, 0], [1.5, 0, 0], [2.0, 1.3, 0], [-0.5, 0.9, 0.3],
                     [-0.5, -0.9, 0.3], [-0.4, 0, -1.0], [1.9, -0.5, 0.9],
                     [1.9, -0.5, -0.9], [2.9, 1.3, 0.2]], dtype=float)
    pos = base + 0.08 * rng.normal(size=(n_frames, 9, 3))
    diff = pos[:, :, None, :] - pos[:, None, :, :]  # [F, 9, 9, 3]
    r = np.linalg.norm(diff, axis=-1) + np.eye(9)
    x = np.exp(-1.2 * (r - 1.3))
    pair = 20.0 * (1 - x) ** 2 * (1 - np.eye(9))
    energy = 0.5 * pair.sum(axis=(1, 2)) - 30000.0
    dpair = 20.0 * 2 * (1 - x) * 1.2 * x * (1 - np.eye(9))  # dE_pair/dr
    forces = -(dpair[..., None] * diff / r[..., None]).sum(axis=2)
    return pos, energy, forces


def test_training_with_forces_writes_force_errors_in_mev_per_angstrom(tmp_path):
    import torch

    from fusion.data.graphs import GraphLoader
    from fusion.experiment import RunSpec, model_stats, run_training
    from fusion.models.registry import build_model

    pos, e, f = pair_potential_frames(40)
    src = tmp_path / "downloads" / "md17_ethanol.npz"
    src.parent.mkdir(parents=True)
    src.write_bytes(npz_bytes(z=ETHANOL_Z, R=pos, E=e[:, None], F=f))
    hparams = {"num_channels": 8, "max_L": 0, "max_ell": 1, "correlation": 2,
               "num_interactions": 1, "r_max": 3.0}
    spec = RunSpec.from_dict({
        "dataset": "md17-ethanol", "model": "mace", "variant": "baseline", "seed": 0,
        "out_dir": str(tmp_path / "run"), "cache_dir": str(tmp_path),
        "split": {"n_train": 24, "n_val": 6, "n_test": 10}, "batch_size": 8,
        "hparams": hparams, "threads": 1,
        "training": {"epochs": 3, "dtype": "float64", "forces_weight": 10.0,
                     "scheduler": "none", "progress": False, "device": "cpu"}})
    metrics = run_training(spec, log=lambda s: None)
    assert metrics["units"]["forces"] == "meV/Å"
    for split in ("val", "test"):
        assert metrics[split]["forces_mae"] > 0 and metrics[split]["forces_rmse"] >= \
            metrics[split]["forces_mae"]
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["test"]["forces_mae"] == metrics["test"]["forces_mae"]
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert all(row.split(",")[5] for row in log[1:])  # val_forces_mae every epoch

    # Recompute the test force MAE from model.pt, independently of the trainer.
    from fusion.data.registry import get_dataset

    structures, splits = get_dataset("md17-ethanol", cache_dir=tmp_path, n_train=24,
                                     n_val=6, n_test=10)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        stats = model_stats(structures, splits["train"], 3.0)
        model = build_model("mace", "baseline", hparams, stats)
        model.load_state_dict(torch.load(tmp_path / "run" / "model.pt", weights_only=True))
        loader = GraphLoader(structures, splits["test"], 10, 3.0, stats.elements,
                             dtype=torch.float64)
        errors = []
        for batch in loader:
            out = model(batch, compute_forces=True)
            errors.append((out["forces"].detach() - batch["forces"]).abs().numpy())
    finally:
        torch.set_default_dtype(old)
    direct = float(np.concatenate(errors).mean()) * 1000.0  # eV/Å -> meV/Å
    assert metrics["test"]["forces_mae"] == pytest.approx(direct, rel=1e-6)
    # scale of a force dataset = RMS of the training force components (eV/Å)
    train_f = structures.forces[structures.atom_indices(splits["train"])]
    assert stats.scale == pytest.approx(float(np.sqrt(np.mean(train_f**2))))


def test_fusion_cards_renders_statistics_from_the_cache(tmp_path):
    from fusion.cli import main

    write_rmd17_archive(tmp_path)
    ff.load_rmd17("ethanol", tmp_path, opener=no_network)
    out = tmp_path / "cards.md"
    assert main(["cards", "rmd17-full-ethanol", "xxmd-stilbene-s1", "--out", str(out),
                 "--cache-dir", str(tmp_path)]) == 0
    text = out.read_text()
    assert "| data: n_structures | 40 |" in text
    assert "## xxmd-stilbene-s1" in text and "not built yet" in text
