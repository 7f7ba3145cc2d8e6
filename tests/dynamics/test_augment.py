"""Trajectory-driven augmentation (fusion.dynamics.augment, fusion.data.stilbene_aug): which
frames are picked, sharded resumable labelling, the merged <base>-aug dataset and its split,
the driver/retrained comparison, the config checks and the workflow's jobs. The reference
method is replaced by a cheap analytic labeller (CIS/STO-3G takes 30-80 s per frame; its own
tests are in tests/data/test_stilbene.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fusion.data import stilbene_aug as aug
from fusion.data.cache import save_npz_atomic
from fusion.data.registry import family_cache_path, get_dataset
from fusion.data.stilbene import SHIPPED_CACHE, load_stilbene
from fusion.data.xtb_md import frame_split
from fusion.dynamics import augment
from fusion.workflow_config import augment_bases, augment_driver
from tests.dynamics.test_workflow import write_run_dir

REPO = Path(__file__).resolve().parents[2]
BASE = "stilbene-tddft"


def fake_labeller(calls: list | None = None, fail_after: int | None = None):
    """Energies [2] = (sum of x, sum of x + 5) eV, forces = -gradient; optionally raises
    RuntimeError after ``fail_after`` calls (a killed job)."""

    def label(z, pos):
        if calls is not None:
            if fail_after is not None and len(calls) >= fail_after:
                raise RuntimeError("killed")
            calls.append(pos.copy())
        e0 = float(pos[:, 0].sum())
        forces = np.zeros((2, *pos.shape))
        forces[:, :, 0] = -1.0
        return np.array([e0, e0 + 5.0]), forces

    return label


def write_selection(path: Path, n: int = 7) -> dict:
    frames = load_stilbene(SHIPPED_CACHE)
    pos = frames.pos[:n] + 0.01
    save_npz_atomic(path, {
        "z": frames.z, "pos": pos, "predicted": np.tile([0.0, 3.0], (n, 1)),
        "start": np.array(["cis"] * n), "trajectory": np.arange(n), "time_fs": np.zeros(n),
        "why": np.array(["time"] * n), "settings": np.asarray(json.dumps({"driver": "x"})),
    }, aug.SELECTED_FORMAT_VERSION)
    return {"z": frames.z, "pos": pos}


def test_pick_frames_takes_each_trajectorys_smallest_gap_then_spreads_in_time():
    gaps = np.array([3.0, 1.0, 2.0, 0.5, 4.0, 4.0, 0.2, 3.0, 3.0])
    trajectory = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    picked = augment.pick_frames(gaps, trajectory, 5)
    # smallest gap per trajectory: 6 (0.2), 3 (0.5), 1 (1.0); n // 2 = 2 of them
    assert picked[:2] == [(6, "gap"), (3, "gap")]
    # then 3 evenly spaced over the other 7 candidates 0 1 2 4 5 7 8: positions 0, 3, 6
    assert picked[2:] == [(0, "time"), (4, "time"), (8, "time")]
    with pytest.raises(ValueError, match="cannot pick 10 frames from 9 candidates"):
        augment.pick_frames(gaps, trajectory, 10)


def test_recording_surfaces_keep_every_nth_geometry():
    rows = []
    recording, calls = augment._recording(lambda x: (np.array([0.0, x.sum()]), None), rows, 3,
                                          0.25, {"start": "cis", "trajectory": 4})
    for k in range(7):
        recording(np.full((2, 3), float(k)))
    assert calls() == 7
    assert [r["time_fs"] for r in rows] == [0.0, 0.75, 1.5]
    assert [r["pos"][0, 0] for r in rows] == [0.0, 3.0, 6.0]
    assert rows[1]["predicted"][1] == 18.0 and rows[1]["trajectory"] == 4


def test_label_shards_partition_the_selection_and_resume(tmp_path):
    selected = tmp_path / "selected.npz"
    sel = write_selection(selected, n=7)
    calls: list = []
    out = tmp_path / "shard-001-of-003.npz"
    with pytest.raises(RuntimeError, match="selected frame 4: killed"):
        aug.label_shard(BASE, selected, out, 1, 3, labeller=fake_labeller(calls, fail_after=1))
    # frame 1 was saved to the side file, the declared output does not exist yet
    assert not out.exists() and out.with_name("shard-001-of-003.partial.npz").exists()
    aug.label_shard(BASE, selected, out, 1, 3, labeller=fake_labeller(calls))
    assert len(calls) == 2  # frame 1 before the kill, then only frame 4: frame 1 not redone
    assert out.exists() and not out.with_name("shard-001-of-003.partial.npz").exists()
    d = np.load(out)
    assert d["index"].tolist() == [1, 4]  # k % 3 == 1
    np.testing.assert_allclose(d["energies"][1], [sel["pos"][4][:, 0].sum(),
                                                  sel["pos"][4][:, 0].sum() + 5.0])
    with pytest.raises(ValueError, match="labelled for another selection or shard layout"):
        aug.label_shard(BASE, selected, out, 1, 4, labeller=fake_labeller())
    with pytest.raises(ValueError, match=r"shard must be in \[0, 3\), got 3"):
        aug.label_shard(BASE, selected, tmp_path / "x.npz", 3, 3, labeller=fake_labeller())


def _prepare_augmented(tmp_path, n_selected: int = 7) -> Path:
    cache = tmp_path / "resources"
    base_cache = family_cache_path(BASE, cache)
    base_cache.parent.mkdir(parents=True)
    shutil.copyfile(SHIPPED_CACHE, base_cache)
    write_selection(aug.selected_path(BASE, cache), n_selected)
    for s in range(aug.AUG_SHARDS):
        aug.label_shard(BASE, aug.selected_path(BASE, cache), aug.shard_path(BASE, s, cache), s,
                        labeller=fake_labeller())
    return aug.prepare_augmented(BASE, cache)


def test_augmented_dataset_keeps_the_base_split_and_holds_out_every_third_frame(tmp_path):
    path = _prepare_augmented(tmp_path)
    frames = load_stilbene(path)
    n_base = len(load_stilbene(SHIPPED_CACHE))
    assert len(frames) == n_base + 7 and frames.settings["n_base"] == n_base
    np.testing.assert_allclose(frames.energies[n_base + 3, 1] - frames.energies[n_base + 3, 0],
                               5.0)
    structures, splits = get_dataset(f"{BASE}-aug", tmp_path / "resources", n_train=120,
                                     n_val=20, n_test=80)
    base = frame_split(n_base, 120, 20, 80)
    # the driver's split of the base frames, plus dynamics frames 0 1 3 4 6 (train), 2 5 (test)
    assert splits["train"].tolist() == [n_base + k for k in (0, 1, 3, 4, 6)] + \
        base["train"].tolist()
    assert splits["test"].tolist() == [n_base + 2, n_base + 5] + base["test"].tolist()
    assert splits["val"].tolist() == base["val"].tolist()
    assert structures.meta["name"] == f"{BASE}-aug" and len(structures.n_atoms) == n_base + 7


def test_merge_names_what_is_missing(tmp_path):
    cache = tmp_path / "resources"
    with pytest.raises(FileNotFoundError, match="stilbene-tddft-aug is built from .*"
                                                "stilbene-tddft.npz.*selected.npz"):
        aug.prepare_augmented(BASE, cache)
    with pytest.raises(ValueError, match="'qm9-U0-aug' is not an augmented dataset"):
        aug.base_key("qm9-U0-aug")


def test_compare_reports_both_models_on_unseen_frames(tmp_path):
    path = _prepare_augmented(tmp_path, n_selected=6)
    driver = write_run_dir(tmp_path / "driver", n_states=2, weights_seed=0)
    retrained = write_run_dir(tmp_path / "retrained", n_states=2, weights_seed=1)
    out = tmp_path / "comparison.csv"
    rows = augment.compare_models(driver, retrained, path, out, split=(120, 20, 80),
                                  log=lambda m: None)
    assert [(r["model"], r["frames"], r["n_frames"]) for r in rows] == [
        ("driver", "base test", 80), ("driver", "held-out dynamics", 2),
        ("retrained on -aug", "base test", 80), ("retrained on -aug", "held-out dynamics", 2)]
    # different weights give different errors; the markdown table sits next to the CSV
    assert rows[0]["s0_mae_mev"] != rows[2]["s0_mae_mev"]
    assert "held-out dynamics" in out.with_suffix(".md").read_text()


def test_config_checks_name_the_missing_driver():
    runs = [(BASE, "mace", "fusion", 0), (f"{BASE}-aug", "mace", "fusion", 0)]
    config = {"datasets": [BASE, f"{BASE}-aug"]}
    with pytest.raises(ValueError, match="config: datasets lists stilbene-tddft-aug, which one "
                                         "augmentation round makes; add an `augment:` section"):
        augment_bases(config, runs)
    config["augment"] = {"driver": {"model": "mace", "variant": "baseline", "seed": 0}}
    with pytest.raises(ValueError, match="augment.driver mace/baseline seed 0 is not a "
                                         "training run of stilbene-tddft in this config"):
        augment_bases(config, runs)
    config["augment"]["driver"]["variant"] = "fusion"
    assert augment_bases(config, runs) == [BASE]
    assert augment_driver(config, runs, BASE) == ("mace", "fusion", 0)


def test_dry_run_schedules_one_augmentation_round(tmp_path):
    for name in ("Snakefile", "environment.yml"):
        shutil.copy(REPO / name, tmp_path / name)
    for name in ("workflow", "config"):
        shutil.copytree(REPO / name, tmp_path / name)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([str(bin_dir / "snakemake"), "--cores", "1", "--configfile",
                           "config/augment.yaml", "--dry-run", "--printshellcmds"],
                          cwd=tmp_path, capture_output=True, text=True, env=env)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    jobs = {line.split()[0]: int(line.split()[1]) for line in text.splitlines()
            if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert (jobs["augment_select"], jobs["augment_label"], jobs["augment_compare"],
            jobs["train"]) == (1, aug.AUG_SHARDS, 1, 2), jobs
    assert ("fusion augment select --run-dir results/train/stilbene-tddft/mace/fusion/seed-0 "
            "--out resources/stilbene-tddft-aug/selected.npz --n-frames 24") in text
    assert ("fusion augment compare --driver results/train/stilbene-tddft/mace/fusion/seed-0 "
            "--retrained results/train/stilbene-tddft-aug/mace/fusion/seed-0") in text
