"""stilbene-casscf: the resumable, shardable SA-CASSCF frame generator (on ethylene, a few
seconds a frame), the xTB scan and geometry measures, and the shipped frames (one frame's
energies recomputed with pyscf and its forces checked by a finite difference along them)."""

from __future__ import annotations

import numpy as np
import pytest

from fusion.data import stilbene as st
from fusion.data import stilbene_casscf as sc
from fusion.data.cache import CacheError

pytest.importorskip("pyscf")


class _EthylenePlan:
    """The plan interface (z, geo.central, geo.torsion_atoms, frame(i)) on ethylene."""

    def __init__(self):
        self.builder = st.TorsionGeometryBuilder(st.ETHYLENE_SMILES, st.ETHYLENE_TORSION_SMARTS,
                                                 seed=0)
        self.z = self.builder.z

        class _Geo:
            central = self.builder.torsion_atoms[1:3]
            torsion_atoms = self.builder.torsion_atoms

        self.geo = _Geo()

    def frame(self, index):
        return self.builder.frame(index, 0, 300.0), "scan" if index < 2 else "trans"


class _Killed(Exception):
    pass


def test_generator_resumes_shards_and_merges(tmp_path):
    plan = _EthylenePlan()
    full = sc.generate_casscf_frames(3, tmp_path / "full.npz", plan=plan, log=lambda m: None)
    assert sorted(full) == [0, 1, 2]

    def kill_after_first(msg):
        if msg.startswith("frame 1"):
            raise _Killed

    with pytest.raises(_Killed):
        sc.generate_casscf_frames(3, tmp_path / "killed.npz", plan=plan, log=kill_after_first)
    assert st.load_stilbene(tmp_path / "killed.npz").pos.shape[0] == 1  # frame 0 survived
    messages = []
    resumed = sc.generate_casscf_frames(3, tmp_path / "killed.npz", plan=plan,
                                        log=messages.append)
    assert [m.split(" ")[1] for m in messages] == ["1", "2"]  # only the missing frames
    for i in range(3):
        np.testing.assert_allclose(resumed[i]["energies"], full[i]["energies"], atol=1e-6)

    even = sc.generate_casscf_frames(3, tmp_path / "even.npz", indices=[0, 2], plan=plan,
                                     log=lambda m: None)
    odd = sc.generate_casscf_frames(3, tmp_path / "odd.npz", indices=[1], plan=plan,
                                    log=lambda m: None)
    assert sorted(even) == [0, 2] and sorted(odd) == [1]
    merged = st.load_stilbene(sc.merge_casscf_shards([tmp_path / "odd.npz",
                                                      tmp_path / "even.npz"],
                                                     tmp_path / "merged.npz"))
    one = st.load_stilbene(tmp_path / "full.npz")
    np.testing.assert_allclose(merged.energies, one.energies, atol=1e-6)
    np.testing.assert_allclose(merged.forces, one.forces, atol=1e-5)
    assert np.all(merged.energies[:, 1] > merged.energies[:, 0])
    with pytest.raises(ValueError, match="no shard caches"):
        sc.merge_casscf_shards([], tmp_path / "none.npz")


def test_generator_refuses_a_cache_with_other_settings(tmp_path):
    from fusion.data.cache import save_npz_atomic

    path = tmp_path / "other.npz"
    save_npz_atomic(path, {"index": np.zeros(0, dtype=np.int64),
                           "settings": np.asarray('{"method": "CIS"}')}, sc.CASSCF_FORMAT_VERSION)
    with pytest.raises(ValueError, match="other settings"):
        sc.generate_casscf_frames(1, path, plan=_EthylenePlan(), log=lambda m: None)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        sc.merge_casscf_shards([tmp_path / "missing.npz"], tmp_path / "out.npz")
    (tmp_path / "junk.npz").write_bytes(b"not an npz")
    with pytest.raises(CacheError, match="junk.npz"):
        sc.merge_casscf_shards([tmp_path / "junk.npz"], tmp_path / "out.npz")


def test_stilbene_roles_and_torsion_setting():
    geo = sc.StilbeneGeometry(0)
    assert geo.z[list(geo.central)].tolist() == [6, 6]
    assert geo.z[list(geo.hydrogens)].tolist() == [1, 1]
    assert len(geo.side) == 13  # one CH + one phenyl: C7H6
    pos = geo.builder.geometry(180.0)
    twisted = geo.set_torsion(pos, 90.0)
    m = geo.measures(twisted)
    assert m["torsion_deg"] == pytest.approx(90.0, abs=1e-6)
    # a rigid rotation of one half: the other half and every bond length unchanged
    fixed = np.setdiff1d(np.arange(26), geo.side)
    np.testing.assert_allclose(twisted[fixed], pos[fixed], atol=1e-12)
    assert max(m["pyramidalisation_deg"]) < 2.0


def test_shipped_frames_are_casscf_labels():
    if not sc.CASSCF_SHIPPED.exists():
        pytest.skip("stilbene-casscf.npz not shipped")
    frames = st.load_stilbene(sc.CASSCF_SHIPPED)
    assert frames.z.tolist().count(6) == 14 and frames.z.tolist().count(1) == 12
    assert frames.settings["method"] == "SA2-CASSCF(2,2)"
    assert np.all(frames.energies[:, 1] > frames.energies[:, 0])
    from fusion.data.cache import load_npz_checked

    raw = load_npz_checked(sc.CASSCF_SHIPPED, sc.CASSCF_FORMAT_VERSION, ("index", "kind"))
    kinds = raw["kind"].tolist()
    assert set(kinds) <= {"scan", "trans", "cis", "meci"} and len(kinds) == len(frames)
    assert raw["index"].tolist() == sorted(raw["index"].tolist())
    geo = sc.StilbeneGeometry(0)
    # the last thermal sample (crossing-search frames were computed with tracked orbitals)
    i = max(k for k, kind in enumerate(kinds) if kind in ("trans", "cis"))
    pos, forces = frames.pos[i], frames.forces[i]
    e, _, _ = sc.sa_casscf_labels(frames.z, pos, geo.central, gradients=False)
    np.testing.assert_allclose(e, frames.energies[i], atol=1e-5)  # eV
    # forces: central difference of each state's energy along its own shipped force
    h = 2e-3  # Å, along the unit direction
    for state in (0, 1):
        d = forces[state] / np.linalg.norm(forces[state])
        e_plus, _, _ = sc.sa_casscf_labels(frames.z, pos + h * d, geo.central, gradients=False)
        e_minus, _, _ = sc.sa_casscf_labels(frames.z, pos - h * d, geo.central, gradients=False)
        slope = -(e_plus[state] - e_minus[state]) / (2 * h)  # eV/Å, = |F| if F = -dE/dx
        assert slope == pytest.approx(np.linalg.norm(forces[state]), rel=2e-3)


def test_crossing_search_evaluations_become_frames(tmp_path):
    import json

    from fusion.data.cache import load_npz_checked

    geo = sc.StilbeneGeometry(0)
    pos = geo.builder.geometry(90.0)
    records = [{"step": k, "pos": (pos + 0.01 * k).tolist(), "energies_ev": [-1.0, 2.0 - k],
                "forces_ev_a": np.full((2, 26, 3), float(k)).tolist(), "torsion_deg": 90.0}
               for k in range(3)]
    records.insert(2, {**records[1], "step": 2})  # a resumed search repeats evaluation 1
    for k, r in enumerate(records[3:], 3):
        r["step"] = k
    path = tmp_path / "meci.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    shard = sc.meci_frames_shard(path, tmp_path / "meci.npz", every=2)
    frames = st.load_stilbene(shard)
    raw = load_npz_checked(shard, sc.CASSCF_FORMAT_VERSION, ("index", "kind"))
    # evaluations 0, 1, (2 = repeat of 1, dropped), 3: every second of 0, 1, 3 is 0 and 3
    assert raw["index"].tolist() == [1000, 1003] and raw["kind"].tolist() == ["meci", "meci"]
    np.testing.assert_allclose(frames.energies[1], [-1.0, 0.0])
    np.testing.assert_allclose(frames.forces[1], 2.0)
    path.write_text(json.dumps({"step": 0, "pos": pos.tolist()}) + "\n")
    with pytest.raises(ValueError, match="no evaluation with forces"):
        sc.meci_frames_shard(path, tmp_path / "none.npz")


def test_registered_dataset_is_the_shipped_frames(tmp_path):
    from fusion.data.registry import dataset_card, get_dataset

    if not sc.CASSCF_SHIPPED.exists():
        pytest.skip("stilbene-casscf.npz not shipped")
    frames = st.load_stilbene(sc.CASSCF_SHIPPED)
    structures, splits = get_dataset("stilbene-casscf", cache_dir=tmp_path)
    assert structures.y.shape == (len(frames), 2) and structures.meta["states"] == ["S0", "S1"]
    np.testing.assert_allclose(structures.y, frames.energies)
    assert sum(len(v) for v in splits.values()) == len(frames)
    assert "SA2-CASSCF(2,2)" in dataset_card("stilbene-casscf")["name"]
