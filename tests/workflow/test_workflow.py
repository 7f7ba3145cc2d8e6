"""The Snakemake workflow: lint, config validation, dry runs, and a tiny end-to-end run.

The end-to-end test copies the workflow into a temporary folder and runs config/test.yaml
for real (QM9 from the qm9pack wheel, two tiny MACE seeds, composition baseline, tables,
figures, HTML report). It is the slowest test (about two minutes on 2 cores).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _env():
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _copy_workflow(dest: Path) -> Path:
    shutil.copy(REPO / "Snakefile", dest / "Snakefile")
    shutil.copy(REPO / "environment.yml", dest / "environment.yml")
    shutil.copytree(REPO / "workflow", dest / "workflow")
    shutil.copytree(REPO / "config", dest / "config")
    return dest


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(BIN / "snakemake"), "--cores", "2", *args],
        cwd=workdir,
        env=_env(),
        capture_output=True,
        text=True,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _write_config(path: Path, base: str, **changes) -> Path:
    """``config/<base>`` with top-level keys replaced (a value of None removes the key)."""
    config = yaml.safe_load((REPO / "config" / base).read_text())
    config.update(changes)
    config = {k: v for k, v in config.items() if v is not None}
    path.write_text(yaml.safe_dump(config))
    return path


def n_train_runs(cfg: dict) -> int:
    """Training runs a config asks for: per dataset, its (overridden) seeds x variants."""
    overrides = cfg.get("dataset_overrides", {})
    return sum(
        len(overrides.get(dataset, {}).get("seeds", cfg["seeds"])) * len(variants)
        for dataset in cfg["datasets"]
        for variants in overrides.get(dataset, {}).get("models", cfg["models"]).values()
    )


def test_lint_is_clean(tmp_path):
    _copy_workflow(tmp_path)
    proc = snakemake(tmp_path, "--configfile", "config/demo.yaml", "--lint", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("config", ["config.yaml", "demo.yaml", "test.yaml", "study.yaml"])
def test_dry_run_schedules_the_whole_grid(tmp_path, config):
    from fusion.data.registry import dataset_card

    _copy_workflow(tmp_path)
    cfg = yaml.safe_load((REPO / "config" / config).read_text())
    proc = snakemake(tmp_path, "--configfile", f"config/{config}", "--dry-run", "--quiet", "rules")
    # Transfer test sets (acac-600K, ...) are evaluated with their training set's runs.
    transfer = [d for d in cfg["datasets"] if dataset_card(d).get("trained_as")]
    n_runs = n_train_runs({**cfg, "datasets": [d for d in cfg["datasets"] if d not in transfer]})
    n_evaluated = n_train_runs({**cfg, "datasets": transfer})
    table = proc.stdout + proc.stderr
    counts = {
        line.split()[0]: int(line.split()[1])
        for line in table.splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    }
    assert counts["train"] == n_runs, table
    assert counts.get("evaluate_transfer", 0) == n_evaluated, table
    assert (config == "study.yaml") is (n_evaluated == 18)
    assert counts["composition_baseline"] == len(cfg["datasets"]), table
    assert counts["aggregate"] == 1 and counts["figures"] == 1, table


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"datasets": ["qm9-U7"]}, "unknown dataset 'qm9-U7'; valid: "),
        ({"models": {"mace": ["fusoin"]}}, "unknown variant mace/fusoin"),
        ({"models": {"macee": ["baseline"]}}, "unknown model 'macee'"),
        ({"seeds": [-1]}, "-1 is less than the minimum of 0"),
        ({"batch_size": "big"}, "'big' is not of type 'integer'"),
        ({"epochs": 3}, "Additional properties are not allowed ('epochs' was unexpected)"),
        (
            {"dataset_overrides": {"qm9-homo": {"split": {"n_train": 5}}}},
            "dataset_overrides names 'qm9-homo', which is not in datasets",
        ),
        (
            {"dataset_overrides": {"qm9-U0": {"models": {"mace": ["fusoin"]}}}},
            "unknown variant mace/fusoin",
        ),
        (
            {"model_overrides": {"macee": {"batch_size": 3}}},
            "model_overrides names unknown model 'macee'",
        ),
        (
            {"dataset_overrides": {"qm9-U0": {"epochs": 3}}},
            "Additional properties are not allowed ('epochs' was unexpected)",
        ),
    ],
)
def test_bad_config_fails_before_running_with_a_clear_message(tmp_path, change, message):
    _copy_workflow(tmp_path)
    _write_config(tmp_path / "bad.yaml", "test.yaml", **change)
    proc = snakemake(tmp_path, "--configfile", "bad.yaml", "--dry-run", check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    if "unknown dataset" in message:
        assert "qm9-U0" in proc.stdout + proc.stderr  # the valid names are listed


def test_dataset_overrides_change_the_grid_and_the_run_specs(tmp_path):
    _copy_workflow(tmp_path)
    overrides = {
        "qm9-homo": {
            "models": {"mace": ["baseline"]},
            "split": {"n_train": 7},
            "training": {"epochs": 5},
            "hparams": {"mace": {"baseline": {"r_max": 4.0}}},
        }
    }
    _write_config(
        tmp_path / "two.yaml", "test.yaml", datasets=["qm9-U0", "qm9-homo"],
        dataset_overrides=overrides, dynamics=None,
        model_overrides={"mace": {"batch_size": 5, "training": {"epochs": 4, "lr": 0.002}}},
    )
    proc = snakemake(tmp_path, "--configfile", "two.yaml", "--dry-run", "--printshellcmds")
    out = proc.stdout + proc.stderr
    specs = [
        json.loads(line.split("--spec ", 1)[1].strip().strip("'").split("' ")[0])
        for line in out.splitlines()
        if "fusion train --spec" in line
    ]
    base = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    homo = [s for s in specs if s["dataset"] == "qm9-homo"]
    u0 = [s for s in specs if s["dataset"] == "qm9-U0"]
    assert {(s["model"], s["variant"]) for s in homo} == {("mace", "baseline")}
    assert len(u0) == len(base["seeds"]) * sum(len(v) for v in base["models"].values())
    for spec in homo:  # dataset overrides win over model overrides, which win over globals
        assert spec["training"]["epochs"] == 5
        assert spec["training"]["lr"] == 0.002
        assert spec["training"]["optimizer"] == base["training"]["optimizer"]
        assert spec["batch_size"] == 5
        assert spec["split"]["n_train"] == 7
        assert spec["split"]["n_test"] == base["split"]["n_test"]
        assert spec["hparams"]["r_max"] == 4.0
        mace_tiny = base["hparams"]["mace"]["baseline"]
        assert spec["hparams"]["num_channels"] == mace_tiny["num_channels"]
    for spec in u0:
        assert spec["training"]["epochs"] == 4
        assert spec["batch_size"] == 5


def test_tiny_study_end_to_end(tiny_study):
    """config/test.yaml for real: metrics, tables, figures and the HTML report.

    The run itself is the session fixture ``tiny_study`` (tests/conftest.py), shared with
    tests/report/test_report_browser.py.
    """
    work = tiny_study
    cfg = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    for seed in cfg["seeds"]:
        run = work / f"results/train/qm9-U0/mace/baseline/seed-{seed}"
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["schema_version"] == 1
        assert metrics["n_params"] > 0 and metrics["test"]["mae"] > 0
        assert metrics["test"]["n_structures"] == cfg["split"]["n_test"]
        assert (run / "model.pt").stat().st_size > 0
        assert len((run / "log.csv").read_text().splitlines()) == cfg["training"]["epochs"] + 1
    composition = json.loads(
        (work / "results/train/qm9-U0/composition/baseline/seed-0/metrics.json").read_text()
    )
    assert composition["units"]["y"] == "meV"
    summary = (work / "results/tables/summary.csv").read_text().splitlines()
    assert summary[0] == "dataset,model,variant,seed,n_params,split,metric,value,unit"
    assert "| **MACE" in (work / "results/tables/comparison.md").read_text() or "| MACE" in (
        work / "results/tables/comparison.md"
    ).read_text()
    for fig in ("error_vs_params", "learning_curves"):
        for ext in ("png", "svg"):
            assert (work / f"results/figures/{fig}.{ext}").stat().st_size > 1000

    # Everything is up to date: a second run has nothing to do and loses nothing.
    proc = snakemake(work, "--configfile", "config/test.yaml", "--dry-run")
    assert "Nothing to be done" in proc.stdout + proc.stderr

    html = (work / "results/report.html").read_text(errors="replace")
    assert "<html" in html.lower() and len(html) > 10_000
