"""Tables: metrics.json validation, summary.csv, comparison.csv/md on constructed numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from fusion.analysis import aggregate as agg
from fusion.analysis.aggregate import (
    C_D,
    C_D_STD,
    C_DP,
    C_DP_STD,
    C_F,
    C_FD,
    C_FD_STD,
    C_MAE,
    C_MAE_STD,
    C_NPAIR,
    C_RATIO,
    C_SPE,
    COMPARISON_COLUMNS,
    SUMMARY_COLUMNS,
)


def _row(table: pd.DataFrame, dataset: str, model: str, variant: str) -> pd.Series:
    sel = table[
        (table["dataset"] == dataset) & (table["model"] == model) & (table["variant"] == variant)
    ]
    assert len(sel) == 1, (dataset, model, variant, len(sel))
    return sel.iloc[0]


@pytest.fixture
def tables(results_tree, tmp_path):
    paths = agg.main_aggregate(results_tree["metrics"], tmp_path / "tables")
    return {k: p for k, p in paths.items()}


# --------------------------------------------------------------------------- summary


def test_summary_columns_and_row_counts(tables):
    summary = pd.read_csv(tables["summary"])
    assert list(summary.columns) == SUMMARY_COLUMNS
    # 18 runs; each has test+val mae, rmse, mae_per_atom (6 rows); the 12 trained runs add
    # train seconds_per_epoch and inference structures_per_second (the composition fit
    # has neither); the 6 aspirin mace runs add forces_mae and forces_rmse for test and val;
    # every run (the composition fit too) has its training wall time.
    assert len(summary) == 18 * 6 + 12 * 2 + 6 * 4 + 18
    counts = summary.groupby(["split", "metric"]).size().to_dict()
    assert counts[("test", "mae")] == 18
    assert counts[("test", "forces_mae")] == 6
    assert counts[("train", "seconds_per_epoch")] == 12
    assert counts[("inference", "structures_per_second")] == 12
    units = summary.groupby("metric")["unit"].unique().to_dict()
    assert list(units["mae"]) == ["meV"]
    assert list(units["mae_per_atom"]) == ["meV/atom"]
    assert list(units["forces_mae"]) == ["meV/Å"]
    assert list(units["seconds_per_epoch"]) == ["s"]
    assert list(units["structures_per_second"]) == ["1/s"]
    assert set(summary["split"]) == {"test", "val", "train", "inference"}


def test_summary_values_and_params(tables):
    summary = pd.read_csv(tables["summary"])
    sel = summary[
        (summary["dataset"] == "qm9-U0")
        & (summary["model"] == "mace")
        & (summary["variant"] == "fusion")
        & (summary["split"] == "test")
        & (summary["metric"] == "mae")
    ].sort_values("seed")
    assert sel["value"].tolist() == [8.0, 11.0, 11.0]
    assert sel["seed"].tolist() == [0, 1, 2]
    assert set(sel["n_params"]) == {41000}


def test_collect_accepts_a_directory(results_tree):
    df = agg.collect_metrics(results_tree["root"])
    assert len(df) == 18
    assert df["test_forces_mae"].notna().sum() == 6


# --------------------------------------------------------------------------- comparison


def test_comparison_means_stds_and_paired_deltas(tables):
    comp = pd.read_csv(tables["comparison"])
    assert list(comp.columns) == COMPARISON_COLUMNS
    base = _row(comp, "qm9-U0", "mace", "baseline")
    fus = _row(comp, "qm9-U0", "mace", "fusion")
    assert base[C_MAE] == 12.0 and base[C_MAE_STD] == 2.0
    assert fus[C_MAE] == 10.0
    assert fus[C_MAE_STD] == pytest.approx(math.sqrt(3.0), rel=1e-12)
    assert base["n_seeds"] == 3 and base["n_params"] == 95760
    assert base["seeds"] == "0;1;2"
    # paired per-seed differences: 8-10, 11-12, 11-14 = -2, -1, -3
    assert fus[C_D] == pytest.approx(-2.0, abs=1e-12)
    assert fus[C_D_STD] == pytest.approx(1.0, abs=1e-12)
    rel = np.array([-2 / 10, -1 / 12, -3 / 14]) * 100
    assert fus[C_DP] == pytest.approx(rel.mean(), rel=1e-12)
    assert fus[C_DP_STD] == pytest.approx(rel.std(ddof=1), rel=1e-12)
    assert fus[C_NPAIR] == 3
    assert pd.isna(base[C_D])  # the baseline has no delta to itself
    # forces: 10-20, 20-30, 30-40 = -10 each
    asp = _row(comp, "xtb-md-aspirin", "mace", "fusion")
    assert asp[C_F] == 20.0
    assert asp[C_FD] == pytest.approx(-10.0, abs=1e-12)
    assert asp[C_FD_STD] == pytest.approx(0.0, abs=1e-12)
    assert asp[C_D] == pytest.approx(2.0, abs=1e-12)  # energy got worse: 5-4, 5-4, 8-4
    assert pd.isna(fus[C_F])  # qm9 has no forces
    assert base[C_SPE] == pytest.approx(3.0)  # seconds/epoch 2, 3, 4


def test_composition_ratio(tables):
    comp = pd.read_csv(tables["comparison"])
    assert _row(comp, "qm9-U0", "mace", "baseline")[C_RATIO] == pytest.approx(100 / 12)
    assert _row(comp, "qm9-U0", "mace", "fusion")[C_RATIO] == pytest.approx(10.0)
    assert _row(comp, "qm9-U0", "composition", "baseline")[C_RATIO] == pytest.approx(1.0)
    assert _row(comp, "xtb-md-aspirin", "mace", "fusion")[C_RATIO] == pytest.approx(40 / 6)


def test_best_marking(tables):
    comp = pd.read_csv(tables["comparison"])
    best = comp[comp["best"]]
    assert sorted(zip(best["dataset"], best["model"], best["variant"])) == [
        ("qm9-U0", "mace", "fusion"),
        ("xtb-md-aspirin", "mace", "baseline"),
    ]
    md = tables["comparison_md"].read_text(encoding="utf-8")
    bold_lines = [line for line in md.splitlines() if line.startswith("| **")]
    assert len(bold_lines) == 2
    assert "**MACE + fusion**" in bold_lines[0]
    assert "**MACE baseline**" in bold_lines[1]
    assert "test MAE [meV]" in md and "forces MAE [meV/Å]" in md
    assert "−2.0 ± 1.0" in md  # the paired delta, rendered


def test_literature_rows_only_for_present_datasets(tables):
    comp = pd.read_csv(tables["comparison"])
    lit = comp[comp["variant"] == "literature"]
    assert lit["dataset"].tolist() == ["qm9-U0"]  # not for xtb-md-aspirin, not qm9-HOMO
    row = lit.iloc[0]
    assert row["model"] == "cormorant" and row[C_MAE] == 22.0 and row["y_unit"] == "meV"
    assert "not ours" in row["source"] and "Anderson" in row["source"]
    assert not row["best"] and pd.isna(row["n_seeds"]) and pd.isna(row[C_RATIO])
    assert (comp.loc[comp["variant"] != "literature", "source"] == "this work").all()
    md = tables["comparison_md"].read_text(encoding="utf-8")
    assert md.count("*published*") >= 1 and "not ours" in md


def test_literature_can_be_switched_off(results_tree):
    summary = agg.summary_table(agg.collect_metrics(results_tree["metrics"]))
    comp = agg.comparison_table(summary, literature=False)
    assert "literature" not in set(comp["variant"])


def test_pairing_uses_common_seeds_only(tmp_path, make_metrics, write_metrics):
    paths = [
        write_metrics(tmp_path, make_metrics("qm9-U0", "mace", "baseline", s, m))
        for s, m in [(0, 10.0), (1, 20.0)]
    ]
    paths += [
        write_metrics(tmp_path, make_metrics("qm9-U0", "mace", "fusion", s, m))
        for s, m in [(1, 14.0), (2, 1.0)]
    ]
    comp = agg.comparison_table(agg.summary_table(agg.collect_metrics(paths)))
    fus = _row(comp, "qm9-U0", "mace", "fusion")
    assert fus[C_NPAIR] == 1
    assert fus[C_D] == pytest.approx(-6.0)  # only seed 1: 14 - 20
    assert pd.isna(fus[C_D_STD])  # one pair: no std
    assert fus[C_MAE] == pytest.approx(7.5)  # the mean still uses all its seeds
    assert pd.isna(fus[C_RATIO])  # no composition baseline on this dataset
    assert "(n=1)" in agg.comparison_markdown(comp)


def test_mixed_parameter_counts_raise(tmp_path, make_metrics, write_metrics):
    paths = [
        write_metrics(tmp_path, make_metrics("qm9-U0", "mace", "baseline", s, 1.0, n_params=n))
        for s, n in [(0, 100), (1, 200)]
    ]
    with pytest.raises(ValueError, match="different parameter counts"):
        agg.comparison_table(agg.summary_table(agg.collect_metrics(paths)))


# --------------------------------------------------------------------------- bad input


def _write(tmp_path, record, name="metrics.json"):
    path = tmp_path / name
    path.write_text(json.dumps(record), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda r: r.pop("schema_version"), "schema_version"),
        (lambda r: r.update(schema_version=2), "schema_version"),
        (lambda r: r.pop("n_params"), "n_params"),
        (lambda r: r.update(seed="0"), "seed"),
        (lambda r: r["test"].pop("mae"), "test.mae"),
        (lambda r: r["test"].update(rmse=None), "test.rmse"),
        (lambda r: r["test"].update(mae_per_atom="big"), "test.mae_per_atom"),
        (lambda r: r["test"].update(mae=float("nan")), "test.mae"),
        (lambda r: r.pop("train"), "train"),
        (lambda r: r["units"].pop("forces"), "units.forces"),
    ],
)
def test_malformed_metrics_name_file_and_key(tmp_path, results_tree, make_metrics, mutate, key):
    record = make_metrics("xtb-md-aspirin", "mace", "fusion", 0, 1.0, forces_mae=2.0)
    mutate(record)
    bad = _write(tmp_path, record, "bad-metrics.json")
    with pytest.raises(ValueError) as err:
        agg.collect_metrics(results_tree["metrics"] + [bad])
    assert str(bad) in str(err.value)
    assert f"'{key}'" in str(err.value)


def test_invalid_json_names_file(tmp_path):
    bad = tmp_path / "metrics.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON") as err:
        agg.collect_metrics([bad])
    assert str(bad) in str(err.value)


def test_path_must_agree_with_content(tmp_path, make_metrics, write_metrics):
    path = write_metrics(tmp_path, make_metrics("qm9-U0", "mace", "fusion", 1, 1.0))
    record = json.loads(path.read_text(encoding="utf-8"))
    record["variant"] = "baseline"
    path.write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(ValueError, match="'variant'") as err:
        agg.collect_metrics([path])
    assert str(path) in str(err.value)


def test_duplicate_runs_raise(tmp_path, make_metrics):
    a = _write(tmp_path, make_metrics("qm9-U0", "mace", "fusion", 0, 1.0), "a.json")
    b = _write(tmp_path, make_metrics("qm9-U0", "mace", "fusion", 0, 2.0), "b.json")
    with pytest.raises(ValueError, match="two metrics files") as err:
        agg.collect_metrics([a, b])
    assert str(a) in str(err.value) and str(b) in str(err.value)


def test_empty_input_raises(tmp_path):
    with pytest.raises(ValueError, match="no metrics.json files"):
        agg.collect_metrics([])
    with pytest.raises(ValueError, match="no metrics.json files"):
        agg.main_aggregate(tmp_path, tmp_path / "tables")  # directory without results
    with pytest.raises(ValueError, match="empty"):
        agg.summary_table(pd.DataFrame())
    with pytest.raises(ValueError, match="empty"):
        agg.comparison_table(pd.DataFrame(columns=SUMMARY_COLUMNS))
    assert not (tmp_path / "tables" / "summary.csv").exists()


def test_markdown_table_escapes_and_aligns():
    text = agg.markdown_table(["a", "b"], [["x|y", "1"], ["z", "–"]], ["l", "r"], [False, True])
    lines = text.splitlines()
    assert lines[0] == "| a | b |"
    assert lines[1] == "|:---|---:|"
    assert lines[2] == "| x\\|y | 1 |"
    assert lines[3] == "| **z** | – |"


def test_literature_in_the_datasets_unit(tmp_path, make_metrics, write_metrics):
    mu = make_metrics("qm9-mu", "mace", "baseline", 0, 0.05)
    mu["units"] = {"y": "D", "y_per_atom": "D/atom", "forces": "D/Å"}
    gap = make_metrics("qm9-gap", "mace", "baseline", 0, 0.2)
    gap["units"] = {"y": "eV", "y_per_atom": "eV/atom", "forces": "eV/Å"}
    paths = [write_metrics(tmp_path, mu), write_metrics(tmp_path, gap)]
    comp = agg.comparison_table(agg.summary_table(agg.collect_metrics(paths)))
    lit = comp[comp["variant"] == "literature"].set_index("dataset")
    assert lit.loc["qm9-mu", C_MAE] == 0.038 and lit.loc["qm9-mu", "y_unit"] == "D"
    assert lit.loc["qm9-gap", C_MAE] == pytest.approx(0.061)  # 61 meV shown in eV
    assert lit.loc["qm9-gap", "y_unit"] == "eV"
    md = agg.comparison_markdown(comp)
    assert "test MAE [D]" in md and "test MAE [eV]" in md
