"""Surface hopping with three states (xxMD stilbene: S0/S1/S2).

- A one-atom model with an S1/S0 gap minimum on one side and an S1/S2 gap minimum on the
  other: trajectories started on S1 leave it for S0 or for S2 (and come back from S2), and
  the analysis counts each exit by destination, every state's population and final count,
  the hops per transition, and the table's per-state columns, against the CSVs.
- ``fusion train`` on ``xxmd-stilbene`` (a fixture archive in the real layout, no network)
  and ``fusion dynamics`` / ``fusion dynamics-table`` on the three-state model it writes.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from fusion.cli import main
from fusion.dynamics import hopping as hp
from fusion.dynamics.tables import dynamics_table
from fusion.dynamics.workflow import analyse_dynamics
from tests.dynamics.test_workflow import TINY_MACE, tiny_spec
from tests.fixtures_xxmd import SPLIT_SIZES, stilbene_frames, write_archive

SLOPE, COUPLING, SIDE = 1.0, 0.005, 0.1  # eV/Å, eV (half the smallest gap), Å
SPEED = 0.05  # Å/fs


def _gap(u: float) -> float:
    return math.sqrt((SLOPE * u) ** 2 + COUPLING**2)


class ThreeStateLine(Calculator):
    """One atom along x: S1 flat (E1 = 0), S0 = -g(x + a) with its smallest gap to S1 at
    x = -a, S2 = +g(x - a) with its smallest gap to S1 at x = +a, g(u) = sqrt(s^2 u^2 + V^2)
    (eV). On S1 the atom flies at constant speed, so each gap minimum is a Landau-Zener
    passage with P = exp(-pi V^2 / (2 hbar s v)) ~ 0.999: nearly every passage hops."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        x = self.atoms.positions[0, 0]
        g0, g2 = _gap(x + SIDE), _gap(x - SIDE)
        forces = np.zeros((3, 1, 3))  # F = -dE/dx
        forces[0, 0, 0] = SLOPE**2 * (x + SIDE) / g0
        forces[2, 0, 0] = -(SLOPE**2) * (x - SIDE) / g2
        self.results.update(energies=np.array([-g0, 0.0, g2]), state_forces=forces,
                            energy=0.0, forces=forces[1])


def _sampler(rng):
    """At x = 0 on S1, moving left (towards the S1/S0 minimum) or right (towards S1/S2)."""
    direction = 1.0 if rng.random() < 0.5 else -1.0
    return np.zeros((1, 3)), np.array([[direction * SPEED, 0.0, 0.0]])


def test_three_state_ensemble_counts_exits_to_s0_and_s2(tmp_path):
    atom = Atoms("H", positions=[[0.0, 0.0, 0.0]])
    atom.set_masses([1.0])
    starts = {"cis": atom, "trans": atom.copy()}
    # 18 fs: right-movers hop up to S2 at 2 fs, turn on S2, hop back to S1 at ~12 fs and
    # cross to the S1/S0 minimum at ~16 fs; left-movers hop to S0 at 2 fs.
    hp.run_ensemble(ThreeStateLine, starts, tmp_path, n_trajectories=4, n_steps=360,
                    dt_fs=0.05, seed=1, record_every=4, log=lambda message: None,
                    samplers={name: _sampler for name in starts})
    traj = pd.read_csv(tmp_path / "trajectories.csv")
    hops = pd.read_csv(tmp_path / "hops.csv")
    summary = pd.read_csv(tmp_path / "summary.csv")

    # every state's energy is recorded: e2_ev too, equal to the model's
    assert [c for c in traj.columns if c.endswith("_ev") and c.startswith("e")] == [
        "e0_ev", "e1_ev", "e2_ev"]
    assert set(traj["state"]) == {0, 1, 2} and (traj.loc[traj["time_fs"] == 0, "state"] == 1).all()
    assert (traj["e0_ev"] < traj["e1_ev"]).all() and (traj["e1_ev"] < traj["e2_ev"]).all()
    assert (summary["n_states"] == 3).all()

    # the summary's first exit is the first accepted hop out of S1, with its destination
    accepted = hops[hops["outcome"] == "hop"]
    for row in summary.itertuples():
        mine = accepted[(accepted["start"] == row.start)
                        & (accepted["trajectory"] == row.trajectory)]
        assert mine.iloc[0]["from_state"] == 1
        assert row.first_exit_fs == mine.iloc[0]["time_fs"]
        assert row.first_exit_to == mine.iloc[0]["to_state"]
        assert row.n_hops == len(mine)
    first_to = summary["first_exit_to"].astype(int)
    assert set(first_to) == {0, 2}  # both ways out of S1 are taken
    # some trajectory went up first and still ended on S0: exit destination != final state
    assert ((first_to == 2) & (summary["final_state"] == 0)).any()
    assert {(1, 0), (1, 2), (2, 1)} <= set(zip(accepted["from_state"], accepted["to_state"]))

    analysis = analyse_dynamics(tmp_path, run={"dataset": "xxmd-stilbene", "model": "mace",
                                               "variant": "baseline", "seed": 0,
                                               "run_dir": "run"}, spec={})
    assert analysis["n_states"] == 3
    assert analysis["n_exits_to"] == {"S0": int((first_to == 0).sum()),
                                      "S2": int((first_to == 2).sum())}
    for numbers in analysis["per_start"]:
        group = summary[summary["start"] == numbers["start"]]
        to = group["first_exit_to"]
        assert numbers["n_states"] == 3 and numbers["n_trajectories"] == 4
        assert numbers["n_exits"] == group["first_exit_fs"].notna().sum()
        assert numbers["n_exits_to"] == {"S0": int((to == 0).sum()), "S2": int((to == 2).sum())}
        assert numbers["final_states"] == {f"S{k}": int((group["final_state"] == k).sum())
                                           for k in range(3)}
        assert numbers["n_on_s0"] == numbers["final_states"]["S0"]
        mine = accepted[accepted["start"] == numbers["start"]]
        expected = {f"S{a}->S{b}": int(n) for (a, b), n in
                    mine.groupby(["from_state", "to_state"]).size().items()}
        assert numbers["hops_by_transition"] == expected
        assert sum(expected.values()) == numbers["n_hops"]
        # populations: S1 is the initial state's; the three sum to one at every time
        series = analysis["series"][numbers["start"]]
        by_state = series["state_populations"]
        assert list(by_state) == ["S0", "S1", "S2"]
        assert by_state["S1"] == series["s1_population"] and series["s1_population"][0] == 1.0
        np.testing.assert_allclose(np.sum([by_state[k] for k in by_state], axis=0), 1.0)
        rows = traj[traj["start"] == numbers["start"]]
        for k in range(3):
            on = rows.assign(on=rows["state"] == k).groupby("time_fs")["on"].mean()
            np.testing.assert_allclose(by_state[f"S{k}"], on.to_numpy())
    population = pd.read_csv(tmp_path / "population.csv")
    assert list(population.columns) == ["time_fs", "population", "population_s0",
                                        "population_s1", "population_s2"]
    np.testing.assert_array_equal(population["population"], population["population_s1"])
    assert population["population_s2"].max() > 0  # S2 is populated on the way
    np.testing.assert_allclose(population.filter(like="population_s").sum(axis=1), 1.0)

    # the table: per-state columns, blank nowhere for a three-state run
    csv_path, md_path = dynamics_table([tmp_path / "analysis.json"], tmp_path / "tables")
    table = pd.read_csv(csv_path)
    assert table["start"].tolist() == ["cis", "trans"]
    for row, numbers in zip(table.itertuples(), analysis["per_start"]):
        assert row.n_states == 3
        assert (row.n_exits_to_s0, row.n_exits_to_s2) == (
            numbers["n_exits_to"]["S0"], numbers["n_exits_to"]["S2"])
        assert row.n_exits_to_s0 + row.n_exits_to_s2 == row.n_exits
        assert (row.n_on_s0, row.n_on_s1, row.n_on_s2) == tuple(
            numbers["final_states"][f"S{k}"] for k in range(3))
        exits = f"{row.n_exits} | {row.n_exits_to_s0}/{row.n_exits_to_s2} | {row.n_hops} |"
        final = f"| {row.n_on_s0}/{row.n_on_s1}/{row.n_on_s2} |"
        line = next(line for line in md_path.read_text().splitlines()
                    if line.startswith(f"| xxmd-stilbene | MACE baseline | 0 | {row.start} |"))
        assert exits in line and final in line


@pytest.fixture
def no_download(monkeypatch):
    """Any download attempt fails the test (the fixture archive must be used as it is)."""
    from fusion.data import download

    def refuse(request):
        pytest.fail(f"test tried to download {request.full_url}")

    monkeypatch.setattr(download, "_default_opener", refuse)


def test_fusion_train_on_xxmd_stilbene_then_fusion_dynamics(tmp_path, capsys, no_download):
    """The workflow's chain on xxMD: ``fusion train`` a tiny three-state MACE on
    ``xxmd-stilbene`` (fixture archive in ``<cache>/downloads/``), ``fusion dynamics`` from
    cis and trans on S1, ``fusion dynamics-table``."""
    cache = tmp_path / "resources"
    frames, _ = stilbene_frames()
    write_archive(cache, frames)
    run = tmp_path / "results/train/xxmd-stilbene/mace/baseline/seed-0"
    train_spec = {"dataset": "xxmd-stilbene", "model": "mace", "variant": "baseline",
                  "seed": 0, "out_dir": str(run), "cache_dir": str(cache),
                  "split": {"n_train": SPLIT_SIZES["train"], "n_val": SPLIT_SIZES["val"],
                            "n_test": SPLIT_SIZES["test"]}, "batch_size": 3,
                  "hparams": TINY_MACE, "threads": 1,
                  "training": {"epochs": 1, "lr": 0.01, "dtype": "float64", "progress": False}}
    assert main(["train", "--spec", json.dumps(train_spec)]) == 0
    capsys.readouterr()
    out = tmp_path / "results/dynamics/xxmd-stilbene/mace/baseline/seed-0"
    spec = tiny_spec(run, out, n_trajectories=2, n_steps=10, cache_dir=str(cache))
    assert main(["dynamics", "--spec", json.dumps(spec)]) == 0
    log = capsys.readouterr().out
    assert "3 states; 4 trajectories x 10 steps of 0.5 fs" in log

    traj = pd.read_csv(out / "trajectories.csv")
    summary = pd.read_csv(out / "summary.csv")
    assert len(traj) == 4 * (10 // 2 + 1) and len(summary) == 4
    energies = traj[["e0_ev", "e1_ev", "e2_ev"]].to_numpy()  # all three states, every record
    assert np.isfinite(energies).all()
    assert (np.diff(energies, axis=1) >= 0).all()  # ordered heads: S0 <= S1 <= S2
    assert set(traj["state"]) <= {0, 1, 2} and (traj.loc[traj["time_fs"] == 0, "state"] == 1).all()
    assert (summary["n_states"] == 3).all()

    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["run"]["dataset"] == "xxmd-stilbene" and analysis["n_states"] == 3
    assert [row["start"] for row in analysis["per_start"]] == ["cis", "trans"]
    for numbers in analysis["per_start"]:
        assert numbers["n_trajectories"] == 2 and numbers["n_states"] == 3
        assert set(numbers["n_exits_to"]) == {"S0", "S2"}
        assert sum(numbers["n_exits_to"].values()) == numbers["n_exits"]
        assert set(numbers["final_states"]) == {"S0", "S1", "S2"}
        assert sum(numbers["final_states"].values()) == 2
        series = analysis["series"][numbers["start"]]
        assert series["s1_population"][0] == 1.0 and set(series["state_populations"]) == {
            "S0", "S1", "S2"}

    tables = tmp_path / "results/tables"
    assert main(["dynamics-table", str(out / "analysis.json"), "--tables-dir", str(tables),
                 "--figures-dir", str(tmp_path / "results/figures")]) == 0
    table = pd.read_csv(tables / "dynamics.csv")
    assert table[["dataset", "model", "variant", "seed", "start", "n_states",
                  "n_trajectories"]].values.tolist() == [
        ["xxmd-stilbene", "mace", "baseline", 0, "cis", 3, 2],
        ["xxmd-stilbene", "mace", "baseline", 0, "trans", 3, 2]]
    assert table[["n_exits_to_s0", "n_exits_to_s2", "n_on_s0", "n_on_s1", "n_on_s2"]].notna(
    ).all().all()
    md = (tables / "dynamics.md").read_text()
    assert "| xxmd-stilbene | MACE baseline | 0 | cis | 2 |" in md
    for stem in ("dynamics_population", "dynamics_torsion"):
        assert (tmp_path / "results/figures" / f"{stem}.png").stat().st_size > 0
