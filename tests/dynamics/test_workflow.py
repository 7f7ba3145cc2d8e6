"""fusion dynamics / dynamics-table: spec checks, the one-state refusal, an end-to-end ensemble
on a tiny two-state MACE run directory, resuming, and the combined table's exact numbers."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fusion.cli import main
from fusion.dynamics.workflow import DynamicsSpec, run_dynamics
from fusion.models.registry import ModelStats, build_model

TINY_MACE = {"num_channels": 8, "max_L": 0, "max_ell": 1, "correlation": 2,
             "num_interactions": 1, "radial_MLP": [8], "MLP_irreps": "4x0e"}
STATS = {"elements": [1, 6], "atomic_energies": [-13.6, -1030.0], "avg_num_neighbors": 6.0,
         "scale": 0.5, "shift": 0.0}


def write_run_dir(run_dir: Path, n_states: int | None, weights_seed: int = 0) -> Path:
    """A training run directory (metrics.json, model_stats.json, model.pt) of a tiny float64
    mace/baseline on stilbene's elements, as ``fusion train`` lays it out."""
    run_dir.mkdir(parents=True, exist_ok=True)
    hparams = dict(TINY_MACE) if n_states is None else {**TINY_MACE, "n_states": n_states}
    spec = {"dataset": "stilbene-tddft", "model": "mace", "variant": "baseline", "seed": 0,
            "out_dir": str(run_dir), "cache_dir": str(run_dir / "no-cache"), "split": {},
            "batch_size": 4, "eval_batch_size": 4, "hparams": hparams,
            "training": {"dtype": "float64"}, "threads": 1}
    stats = ModelStats(elements=tuple(STATS["elements"]),
                       atomic_energies=np.array(STATS["atomic_energies"]),
                       avg_num_neighbors=STATS["avg_num_neighbors"], scale=STATS["scale"])
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(weights_seed)
        module = build_model("mace", "baseline", hparams, stats)
    finally:
        torch.set_default_dtype(old)
    torch.save(module.state_dict(), run_dir / "model.pt")
    metrics = {"dataset": "stilbene-tddft", "model": "mace", "variant": "baseline", "seed": 0,
               "hyperparameters": spec}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "model_stats.json").write_text(json.dumps(STATS))
    return run_dir


def tiny_spec(run_dir: Path, out_dir: Path, **changes) -> dict:
    return {"run_dir": str(run_dir), "out_dir": str(out_dir), "starts": ["trans", "cis"],
            "n_trajectories": 2, "n_steps": 20, "dt_fs": 0.5, "temperature_k": 300,
            "seed": 0, "record_every": 2, "threads": 1, "sampling": "cartesian", **changes}


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("change", "message"), [
    ({"n_trajectoires": 3}, "dynamics spec has unknown key(s) ['n_trajectoires']; valid: "),
    ({"starts": ["cis", "sideways"]},
     "dynamics spec key 'starts' should be a non-empty list of distinct names from "
     "['cis', 'trans'], got ['cis', 'sideways']"),
    ({"starts": []}, "key 'starts' should be a non-empty list"),
    ({"n_trajectories": 0}, "dynamics spec key 'n_trajectories' should be an integer >= 1, got 0"),
    ({"dt_fs": -0.5}, "dynamics spec key 'dt_fs' should be a number > 0 (fs), got -0.5"),
    ({"temperature_k": "300"}, "key 'temperature_k' should be a number > 0 (K), got '300'"),
    ({"seed": True}, "dynamics spec key 'seed' should be an integer >= 0, got True"),
    ({"record_every": 1.5}, "key 'record_every' should be an integer >= 1, got 1.5"),
    ({"run_dir": None}, "dynamics spec key 'run_dir' should be a non-empty path, got None"),
    ({"sampling": "wigner"}, "dynamics spec key 'sampling' should be one of ['normal-modes', "
                             "'cartesian'], got 'wigner'"),
])
def test_bad_spec_values_are_named(tmp_path, change, message):
    spec = {**tiny_spec(tmp_path / "run", tmp_path / "out"), **change}
    with pytest.raises(ValueError) as err:
        DynamicsSpec.from_dict(spec)
    assert message in str(err.value)


def test_bad_spec_text_is_one_error_line(tmp_path, capsys):
    cases = [
        (["dynamics", "--spec", "{not json"], "dynamics spec is not valid JSON"),
        (["dynamics", "--spec", "[1, 2]"], "dynamics spec must be a JSON object, got list"),
        (["dynamics", "--spec", json.dumps({"out_dir": "x"})],
         "dynamics spec is missing required key 'run_dir' (a path)"),
        (["dynamics", "--spec", f"@{tmp_path / 'missing.json'}"],
         f"dynamics spec file {tmp_path / 'missing.json'} not found"),
        (["dynamics"], "no dynamics spec given (pass --spec JSON or --spec @file.json)"),
        (["dynamics", "--spec", json.dumps(tiny_spec(tmp_path / "no-run", tmp_path / "o"))],
         f"{tmp_path / 'no-run' / 'metrics.json'} not found or not JSON"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], (argv, err)


def test_one_state_model_is_refused(tmp_path, capsys):
    run = write_run_dir(tmp_path / "run", n_states=None)
    spec = tiny_spec(run, tmp_path / "out")
    assert main(["dynamics", "--spec", json.dumps(spec)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: surface hopping needs >= 2 states; {run} was trained on 1 "
                   "(train on data labelled with several states, such as stilbene-tddft, or "
                   "set hparams n_states)")
    assert not (tmp_path / "out" / "trajectories.csv").exists()


# --------------------------------------------------------------------------- end to end


ENSEMBLE_OUTPUTS = ("trajectories.csv", "hops.csv", "summary.csv", "ensemble_spec.json",
                    "analysis.json", "population.csv", "branching.csv", "torsion.png",
                    "torsion.svg", "population.png", "population.svg")


def test_fusion_dynamics_end_to_end_and_resume(tmp_path, capsys):
    run = write_run_dir(tmp_path / "run", n_states=2)
    out = tmp_path / "dyn"
    spec = tiny_spec(run, out)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    assert main(["dynamics", "--spec", f"@{spec_file}"]) == 0
    log = capsys.readouterr().out
    assert "2 states; 4 trajectories x 20 steps of 0.5 fs" in log
    for k in range(1, 5):
        assert f"[{k}/4] " in log  # progress per trajectory
    for name in ENSEMBLE_OUTPUTS:
        assert (out / name).stat().st_size > 0, name

    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["run"] == {"dataset": "stilbene-tddft", "model": "mace",
                               "variant": "baseline", "seed": 0, "run_dir": str(run)}
    assert analysis["spec"]["starts"] == ["cis", "trans"]  # canonical order
    summary = pd.read_csv(out / "summary.csv")
    trajectories = pd.read_csv(out / "trajectories.csv")
    assert len(summary) == 4 and len(trajectories) == 4 * (20 // 2 + 1)
    assert trajectories["time_fs"].max() == pytest.approx(10.0)
    for numbers in analysis["per_start"]:
        group = summary[summary["start"] == numbers["start"]]
        assert numbers["n_trajectories"] == 2
        assert numbers["n_hops"] == group["n_hops"].sum()
        assert numbers["n_exits"] == group["first_exit_fs"].notna().sum()
        assert numbers["n_on_s0"] == (group["final_state"] == 0).sum()
        series = analysis["series"][numbers["start"]]
        first = trajectories[(trajectories["start"] == numbers["start"])
                             & (trajectories["time_fs"] == 0)]
        assert series["s1_population"][0] == 1.0  # every trajectory starts on S1
        assert series["torsion_mean_deg"][0] == pytest.approx(first["torsion_deg"].mean())
    cis = analysis["series"]["cis"]["torsion_mean_deg"][0]
    trans = analysis["series"]["trans"]["torsion_mean_deg"][0]
    assert cis < 30 and trans > 150
    # total energy is conserved between hops (NVE, 0.5 fs steps): drift well below 0.1 eV
    assert summary["max_energy_drift_ev"].max() < 0.1

    # Same spec and weights: nothing runs, nothing is rewritten.
    stamps = {name: (out / name).stat().st_mtime_ns for name in ENSEMBLE_OUTPUTS}
    assert main(["dynamics", "--spec", json.dumps(spec)]) == 0
    assert "is up to date with this spec and model: nothing to run" in capsys.readouterr().out
    assert {name: (out / name).stat().st_mtime_ns for name in ENSEMBLE_OUTPUTS} == stamps

    # Analysis lost (killed after the ensemble): only the analysis is redone, same numbers.
    analysis_text = (out / "analysis.json").read_text()
    (out / "analysis.json").unlink()
    assert main(["dynamics", "--spec", json.dumps({**spec, "threads": 2})]) == 0
    assert "ensemble already complete for this spec" in capsys.readouterr().out
    assert (out / "trajectories.csv").stat().st_mtime_ns == stamps["trajectories.csv"]
    assert (out / "analysis.json").read_text() == analysis_text

    # Other weights (retrained model): everything reruns.
    write_run_dir(run, n_states=2, weights_seed=1)
    assert main(["dynamics", "--spec", json.dumps(spec)]) == 0
    assert "[4/4] " in capsys.readouterr().out
    assert not pd.read_csv(out / "trajectories.csv").equals(trajectories)

    # Other spec: reruns with the new settings.
    assert main(["dynamics", "--spec", json.dumps({**spec, "n_steps": 10,
                                                   "starts": ["trans"]})]) == 0
    rerun = pd.read_csv(out / "trajectories.csv")
    assert set(rerun["start"]) == {"trans"} and rerun["time_fs"].max() == pytest.approx(5.0)


# --------------------------------------------------------------------------- combined table


def _analysis(path: Path, variant: str, seed: int, per_start: list[dict]) -> Path:
    """An analysis.json as fusion dynamics writes it, with chosen numbers."""
    series = {row["start"]: {"time_fs": [0.0, 1.0, 2.0], "s1_population": [1.0, 0.5, 0.25],
                             "torsion_mean_deg": [10.0, 20.0, 30.0],
                             "torsion_std_deg": [1.0, 2.0, 3.0],
                             "n_trajectories": row["n_trajectories"]} for row in per_start}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "run": {"dataset": "stilbene-tddft", "model": "mace", "variant": variant, "seed": seed,
                "run_dir": "x"}, "per_start": per_start, "series": series}))
    return path


def _start(start, n_traj, n_exits, lifetime, n_hops, n_on_s0, n_trans):
    from fusion.dynamics.analysis import lifetime_lower_bound, wilson_interval

    low, high = wilson_interval(n_trans, n_on_s0) if n_on_s0 else (None, None)
    observed = lifetime * n_exits if n_exits else 150.0 * n_traj  # MLE: tau = T / k
    return {"start": start, "n_states": 2, "n_trajectories": n_traj, "n_exits": n_exits,
            "n_exits_to": {"S0": n_exits}, "final_states": {"S0": n_on_s0, "S1": n_traj - n_on_s0},
            "observed_fs": observed,
            "lifetime_lower95_fs": lifetime_lower_bound(n_exits, observed),
            "lifetime_fs": lifetime,
            "lifetime_stderr_fs": lifetime / math.sqrt(n_exits) if n_exits else None,
            "n_hops": n_hops, "n_frustrated": 0, "n_on_s0": n_on_s0, "n_trans": n_trans,
            "fraction_trans": n_trans / n_on_s0 if n_on_s0 else None,
            "wilson95_low": low, "wilson95_high": high,
            "first_exit_fs": 0.5 * lifetime if n_exits else None,
            "max_drift_ev": 0.01 * n_traj, "n_drift_flagged": n_traj // 4}


def test_dynamics_table_has_exact_values_and_a_mean_over_seeds(tmp_path, capsys):
    files = [
        _analysis(tmp_path / "b0/analysis.json", "baseline", 0,
                  [_start("cis", 4, 2, 100.0, 3, 2, 1), _start("trans", 4, 0, None, 0, 0, 0)]),
        _analysis(tmp_path / "f0/analysis.json", "fusion", 0,
                  [_start("cis", 4, 1, 50.0, 1, 1, 1)]),
        _analysis(tmp_path / "b1/analysis.json", "baseline", 1,
                  [_start("trans", 4, 0, None, 2, 0, 0), _start("cis", 4, 4, 140.0, 5, 3, 2)]),
    ]
    tables, figures = tmp_path / "tables", tmp_path / "figures"
    argv = ["dynamics-table", *map(str, files), "--tables-dir", str(tables),
            "--figures-dir", str(figures)]
    assert main(argv) == 0
    capsys.readouterr()
    table = pd.read_csv(tables / "dynamics.csv", keep_default_na=False)
    assert list(table.columns) == [
        "dataset", "model", "variant", "seed", "start", "n_states", "n_trajectories", "n_exits",
        "n_exits_to_s0", "n_exits_to_s2", "n_hops",
        "s1_lifetime_fs", "s1_lifetime_se_fs", "s1_lifetime_lower95_fs", "s1_observed_fs",
        "n_on_s0", "n_on_s1", "n_on_s2", "n_trans", "trans_fraction", "trans_wilson95_low",
        "trans_wilson95_high", "first_exit_fs", "max_drift_ev", "n_drift_flagged"]
    got = [(r.variant, str(r.seed), r.start) for r in table.itertuples()]
    assert got == [("baseline", "0", "cis"), ("baseline", "1", "cis"), ("baseline", "mean", "cis"),
                   ("baseline", "0", "trans"), ("baseline", "1", "trans"),
                   ("baseline", "mean", "trans"), ("fusion", "0", "cis")]
    mean_cis = table.iloc[2]
    assert mean_cis["n_trajectories"] == 8 and mean_cis["n_exits"] == 6
    assert mean_cis["n_hops"] == 8 and mean_cis["n_on_s0"] == 5 and mean_cis["n_trans"] == 3
    # two states: every exit went to S0, no S2 column value (blank, not 0)
    assert mean_cis["n_states"] == 2 and mean_cis["n_exits_to_s0"] == 6
    assert mean_cis["n_exits_to_s2"] == "" and mean_cis["n_on_s2"] == ""
    assert mean_cis["n_on_s1"] == 3
    assert float(mean_cis["s1_lifetime_fs"]) == pytest.approx(120.0)
    # std of (100, 140) with ddof 1 is 28.28 fs; / sqrt(2 seeds) = 20 fs
    assert float(mean_cis["s1_lifetime_se_fs"]) == pytest.approx(20.0)
    assert float(mean_cis["trans_fraction"]) == pytest.approx(0.6)
    # Wilson 95 % interval of 3/5 (reference values)
    assert float(mean_cis["trans_wilson95_low"]) == pytest.approx(0.2307, abs=1e-4)
    assert float(mean_cis["trans_wilson95_high"]) == pytest.approx(0.8824, abs=1e-4)
    seed0 = table.iloc[0]
    assert float(seed0["s1_lifetime_fs"]) == 100.0
    assert float(seed0["s1_lifetime_se_fs"]) == pytest.approx(100.0 / math.sqrt(2))
    # pooled: 6 exits in 2 * 100 + 4 * 140 = 760 fs -> 2 T / chi2_95(14)
    assert float(mean_cis["s1_observed_fs"]) == pytest.approx(760.0)
    assert float(mean_cis["s1_lifetime_lower95_fs"]) == pytest.approx(1520.0 / 23.6847849, rel=1e-6)
    mean_trans = table.iloc[5]
    assert mean_trans["s1_lifetime_fs"] == "" and mean_trans["trans_fraction"] == ""
    # no exit in 8 x 150 fs: tau > 1200 fs / ln 20 at 95 %
    assert float(mean_trans["s1_lifetime_lower95_fs"]) == pytest.approx(1200.0 / math.log(20))
    assert mean_trans["n_hops"] == 2 and mean_trans["n_trajectories"] == 8

    md = (tables / "dynamics.md").read_text()
    # first exit: the earliest over seeds; drift: the largest; flagged: summed
    assert "| stilbene-tddft | MACE baseline | mean | cis | 8 | 6 | 6/– | 8 | 50.0 | 120.0 ± " \
           "20.0 (> 64 at 95 %) | 5/3/– | 0.60 [0.23, 0.88] | 0.040 | 2 |" in md
    assert "| stilbene-tddft | MACE + fusion | 0 | cis | 4 | 1 | 1/– | 1 | 25.0 | 50.0 ± 50.0 " \
           "(> 11 at 95 %) | 1/3/– | 1.00 [0.21, 1.00] | 0.040 | 1 |" in md
    assert "| stilbene-tddft | MACE baseline | 0 | trans | 4 | 0 | 0/– | 0 | – | not observed " \
           "(> 200 at 95 %) | 0/4/– | – | 0.040 | 1 |" in md
    assert "no lifetime pools them" in md and "quantum yields" in md
    for stem in ("dynamics_population", "dynamics_torsion"):
        for ext in ("png", "svg"):
            assert (figures / f"{stem}.{ext}").stat().st_size > 0


def test_dynamics_table_bad_inputs_are_named(tmp_path, capsys):
    tables, figures = str(tmp_path / "t"), str(tmp_path / "f")
    missing = tmp_path / "nope/analysis.json"
    bare = tmp_path / "bare/analysis.json"
    bare.parent.mkdir()
    bare.write_text(json.dumps({"n_trajectories": 4, "branching": []}))
    cis = [_start("cis", 2, 1, 9.0, 1, 1, 0)]
    one = _analysis(tmp_path / "a/analysis.json", "baseline", 0, cis)
    twin = _analysis(tmp_path / "b/analysis.json", "baseline", 0, cis)
    cases = [
        ([str(missing)], f"{missing} not found or not a JSON object"),
        ([str(bare)], f"{bare}: no 'run' (written by fusion dynamics"),
        ([str(one), str(twin)], "two analysis files describe the same (dataset, model, variant, "
                                "seed, start)"),
    ]
    for files, message in cases:
        assert main(["dynamics-table", *files, "--tables-dir", tables,
                     "--figures-dir", figures]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_run_dynamics_returns_what_it_wrote(tmp_path):
    """The Python entry point: same analysis as the file, log through the callback."""
    run = write_run_dir(tmp_path / "run", n_states=2)
    messages: list[str] = []
    spec = DynamicsSpec.from_dict(tiny_spec(run, tmp_path / "out", starts=["cis"],
                                            n_trajectories=1, n_steps=6))
    analysis = run_dynamics(spec, log=messages.append)
    written = json.loads((tmp_path / "out/analysis.json").read_text())
    for key in ("run", "spec", "per_start", "series", "n_exits", "lifetime_fs"):
        assert analysis[key] == written[key], key
    assert analysis["n_trajectories"] == 1 and [r["start"] for r in analysis["per_start"]] == [
        "cis"]
    assert any(m.startswith("[1/1] cis trajectory 0") for m in messages)


# --------------------------------------------------------------------------- workflow

REPO = Path(__file__).resolve().parents[2]


def _test_config(**dynamics) -> dict:
    import yaml

    config = yaml.safe_load((REPO / "config/test.yaml").read_text())
    config.pop("dynamics", None)  # the test grid's own section, if any, is replaced
    if dynamics:
        config["dynamics"] = dynamics
    return config


def test_config_section_defaults_and_errors():
    from snakemake.utils import validate

    from fusion.dynamics.workflow import (
        DYNAMICS_DEFAULTS,
        dynamics_runs,
        dynamics_spec_json,
        dynamics_targets,
    )

    schema = str(REPO / "workflow/schemas/config.schema.yaml")
    plain = _test_config()
    validate(plain, schema)
    assert "dynamics" not in plain
    assert dynamics_targets(plain, [("qm9-U0", "mace", "baseline", 0)]) == []

    config = _test_config(datasets=["qm9-U0"], n_steps=40)
    validate(config, schema)  # fills the schema's defaults, which are the module's
    assert config["dynamics"] == {**DYNAMICS_DEFAULTS, "datasets": ["qm9-U0"], "n_steps": 40}
    grid = [("qm9-U0", "mace", v, s) for v in ("baseline", "fusion") for s in (0, 1)]
    assert dynamics_runs(config, grid) == [("qm9-U0", "mace", "baseline", 0),
                                           ("qm9-U0", "mace", "fusion", 0)]
    assert dynamics_targets(config, grid)[-4:] == [
        "results/tables/dynamics.csv", "results/tables/dynamics.md",
        "results/figures/dynamics_population.png", "results/figures/dynamics_torsion.png"]
    spec = json.loads(dynamics_spec_json(config, "qm9-U0", "mace", "fusion", "0", "res"))
    assert spec == {"run_dir": "results/train/qm9-U0/mace/fusion/seed-0",
                    "out_dir": "results/dynamics/qm9-U0/mace/fusion/seed-0", "cache_dir": "res",
                    "starts": ["cis", "trans"], "n_trajectories": 8, "n_steps": 40, "dt_fs": 0.25,
                    "temperature_k": 300, "seed": 0, "record_every": 5, "threads": 1,
                    "sampling": "normal-modes"}

    with pytest.raises(ValueError, match="config: dynamics asks for qm9-U0/mace/baseline seed 5, "
                                         "which the training grid does not train"):
        dynamics_runs(_test_config(datasets=["qm9-U0"], seeds=[5]), grid)
    with pytest.raises(ValueError, match=r"config: dynamics has unknown key\(s\) \['n_traj'\]"):
        dynamics_runs(_test_config(n_traj=3), grid)
    from snakemake.exceptions import WorkflowError

    for bad, message in (({"n_traj": 3}, "'n_traj' was unexpected"),
                         ({"starts": ["sideways"]}, "'sideways' is not one of ['cis', 'trans']"),
                         ({"dt_fs": 0}, "0 is less than or equal to the minimum of 0")):
        with pytest.raises(WorkflowError) as err:
            validate(_test_config(**bad), schema)
        assert message in str(err.value)


def _dry_run(tmp_path: Path, config: dict | None = None) -> tuple[dict[str, int], str]:
    """``snakemake --dry-run --printshellcmds`` in a copy of the workflow under ``tmp_path``
    with ``config`` (default: the study's own config/config.yaml); jobs per rule and the
    output. Nothing runs and nothing is downloaded."""
    import shutil
    import subprocess
    import sys

    import yaml

    for name in ("Snakefile", "environment.yml"):
        shutil.copy(REPO / name, tmp_path / name)
    for name in ("workflow", "config"):
        shutil.copytree(REPO / name, tmp_path / name)
    config_file = "config/config.yaml"
    if config is not None:
        config_file = "dyn.yaml"
        (tmp_path / config_file).write_text(yaml.safe_dump(config))
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([str(bin_dir / "snakemake"), "--cores", "1", "--configfile",
                           config_file, "--dry-run", "--printshellcmds"], cwd=tmp_path,
                          capture_output=True, text=True, env=env)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    jobs = {line.split()[0]: int(line.split()[1]) for line in text.splitlines()
            if len(line.split()) == 2 and line.split()[1].isdigit()}
    return jobs, text


def test_dry_run_schedules_one_dynamics_job_per_run(tmp_path):
    config = _test_config(datasets=["qm9-U0"], models={"mace": ["baseline", "fusion"]},
                          seeds=[0, 1], n_trajectories=2)
    jobs, text = _dry_run(tmp_path, config)
    assert jobs["dynamics"] == 4 and jobs["dynamics_table"] == 1, jobs
    assert ("fusion dynamics --spec '{\"cache_dir\": \"resources\", \"dt_fs\": 0.25, \"n_steps\": "
            "400, \"n_trajectories\": 2, \"out_dir\": \"results/dynamics/qm9-U0/mace/fusion/"
            "seed-1\"") in text
    table_command = "fusion dynamics-table results/dynamics/qm9-U0/mace/baseline/seed-0/"
    assert table_command + "analysis.json" in text


def test_dry_run_of_the_study_schedules_xxmd_stilbene_dynamics(tmp_path):
    """config/config.yaml: the seed-0 MACE and MACE + fusion runs of both multi-state
    datasets, stilbene-tddft-1k (S0/S1) and xxmd-stilbene (S0/S1/S2), each drive one
    dynamics job, and the one dynamics table reads all four."""
    jobs, text = _dry_run(tmp_path)
    runs = [(dataset, variant) for dataset in ("stilbene-tddft-1k", "xxmd-stilbene")
            for variant in ("baseline", "fusion")]
    assert jobs["dynamics"] == len(runs) and jobs["dynamics_table"] == 1, jobs
    for dataset, variant in runs:
        where = f"{dataset}/mace/{variant}/seed-0"
        assert f'"out_dir": "results/dynamics/{where}"' in text
        assert f'"run_dir": "results/train/{where}"' in text
        assert f"results/dynamics/{where}/analysis.json" in text.split(
            "fusion dynamics-table", 1)[1].splitlines()[0]


def test_fusion_train_on_stilbene_then_fusion_dynamics(tmp_path, capsys):
    """The chain the workflow runs: a tiny two-state MACE trained by ``fusion train`` on
    stilbene-tddft (S0/S1), then ``fusion dynamics`` and ``fusion dynamics-table`` on it."""
    run = tmp_path / "results/train/stilbene-tddft/mace/baseline/seed-0"
    train_spec = {"dataset": "stilbene-tddft", "model": "mace", "variant": "baseline",
                  "seed": 0, "out_dir": str(run), "cache_dir": str(tmp_path / "resources"),
                  "split": {"n_train": 8, "n_val": 4, "n_test": 4}, "batch_size": 4,
                  "hparams": TINY_MACE, "threads": 1,
                  "training": {"epochs": 1, "lr": 0.01, "dtype": "float64", "progress": False}}
    assert main(["train", "--spec", json.dumps(train_spec)]) == 0
    out = tmp_path / "results/dynamics/stilbene-tddft/mace/baseline/seed-0"
    spec = tiny_spec(run, out, starts=["trans"], n_trajectories=1, n_steps=10)
    assert main(["dynamics", "--spec", json.dumps(spec)]) == 0
    assert "2 states; 1 trajectories x 10 steps" in capsys.readouterr().out
    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["run"]["dataset"] == "stilbene-tddft" and analysis["n_trajectories"] == 1
    tables = tmp_path / "results/tables"
    assert main(["dynamics-table", str(out / "analysis.json"), "--tables-dir", str(tables),
                 "--figures-dir", str(tmp_path / "results/figures")]) == 0
    table = pd.read_csv(tables / "dynamics.csv")
    assert table[["model", "variant", "seed", "start", "n_trajectories"]].values.tolist() == [
        ["mace", "baseline", 0, "trans", 1]]
