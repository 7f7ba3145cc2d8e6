"""Figures: files written (PNG and SVG, non-empty), clear errors on missing data."""

from __future__ import annotations

import pandas as pd
import pytest

from fusion.analysis import aggregate as agg
from fusion.analysis import figures as fig

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_written(paths):
    assert [p.suffix for p in paths] == [".png", ".svg"]
    png, svg = paths
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
    text = svg.read_text(encoding="utf-8")
    assert text.lstrip().startswith("<?xml") and "</svg>" in text
    return text


def test_main_figures_writes_png_and_svg(results_tree, tmp_path):
    tables = agg.main_aggregate(results_tree["metrics"], tmp_path / "tables")
    written = fig.main_figures(tables["summary"], results_tree["logs"], tmp_path / "figures")
    assert set(written) == {
        "error_vs_params",
        "forces_error_vs_params",
        "learning_curves",
        "per_molecule",
        "qm9-U0:error_vs_params",
        "qm9-U0:learning_curves",
        "xtb-md-aspirin:error_vs_params",
        "xtb-md-aspirin:learning_curves",
    }
    svg = _check_written(written["error_vs_params"])
    assert "qm9-U0" in svg and "xtb-md-aspirin" in svg  # one panel per dataset
    assert "composition baseline" in svg and "MACE + fusion" in svg
    assert "test MAE [meV]" in svg
    svg = _check_written(written["forces_error_vs_params"])
    assert "meV/Å" in svg
    svg = _check_written(written["learning_curves"])
    assert "validation MAE [meV]" in svg and "MACE baseline (3 seeds)" in svg
    assert "composition" not in svg  # composition fits are not learning curves
    svg = _check_written(written["xtb-md-aspirin:error_vs_params"])
    assert "xtb-md-aspirin, forces" in svg and "qm9-U0" not in svg  # energy and forces panels
    svg = _check_written(written["per_molecule"])
    assert "test forces MAE [meV/Å]" in svg and "qm9-U0" not in svg


def test_output_suffix_is_replaced(results_tree, tmp_path):
    summary = agg.summary_table(agg.collect_metrics(results_tree["metrics"]))
    paths = fig.error_vs_params(summary, tmp_path / "out" / "evp.png")
    assert [p.name for p in paths] == ["evp.png", "evp.svg"]


def test_error_vs_params_without_data_raises(results_tree, tmp_path):
    summary = agg.summary_table(agg.collect_metrics(results_tree["metrics"]))
    with pytest.raises(ValueError, match="no test MAE|no test mae|nothing to plot"):
        fig.error_vs_params(summary.iloc[0:0], tmp_path / "x")
    only_qm9 = summary[summary["dataset"] == "qm9-U0"]
    with pytest.raises(ValueError, match="forces_mae"):
        fig.error_vs_params(only_qm9, tmp_path / "x", metric="forces_mae")
    assert not list(tmp_path.glob("x.*"))


def test_learning_curves_without_logs_raise(results_tree, tmp_path):
    with pytest.raises(ValueError, match="no training logs"):
        fig.learning_curves([], tmp_path / "lc")
    composition_only = [p for p in results_tree["logs"] if "/composition/" in p.as_posix()]
    with pytest.raises(ValueError, match="no training logs"):
        fig.learning_curves(composition_only, tmp_path / "lc")
    assert not list(tmp_path.glob("lc.*"))


def test_bad_logs_name_the_file(tmp_path, write_log):
    empty = write_log(tmp_path, "qm9-U0", "mace", "baseline", 0, n_epochs=0)
    with pytest.raises(ValueError, match="no epochs") as err:
        fig.read_logs([empty])
    assert str(empty) in str(err.value)
    bad = tmp_path / "results" / "train" / "qm9-U0" / "mace" / "fusion" / "seed-0" / "log.csv"
    bad.parent.mkdir(parents=True)
    bad.write_text("epoch,lr\n0,0.1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="val_mae") as err:
        fig.read_logs([bad])
    assert str(bad) in str(err.value)
    stray = tmp_path / "log.csv"
    stray.write_text("epoch,val_mae\n0,1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="results layout"):
        fig.read_logs([stray])


def test_read_logs_keys_runs(results_tree):
    logs = fig.read_logs(results_tree["logs"])
    assert set(logs["model"]) == {"mace"}
    runs = logs.groupby(["dataset", "variant", "seed"]).size()
    assert len(runs) == 12
    assert runs.loc[("qm9-U0", "fusion", 2)] == 8  # 6 + seed epochs
    assert isinstance(logs, pd.DataFrame)
