"""Front page, per-model pages, provenance table, per-molecule and kernel figures."""

from __future__ import annotations

import json

import docutils.core
import pandas as pd
import pytest

from fusion.analysis import literature as lit
from fusion.analysis.aggregate import main_aggregate
from fusion.analysis.figures import kernel_speed, main_figures, per_molecule_bars


@pytest.fixture
def tables(results_tree, tmp_path):
    return main_aggregate(
        results_tree["root"], tmp_path / "tables", model_pages=["mace", "composition", "unite"]
    )


def test_front_page_rows_deltas_and_best(tables):
    front = pd.read_csv(tables["front_page"])
    ours = front[front["source"] == "this work"]
    u0 = ours[(ours["dataset"] == "qm9-U0") & (ours["target"] == "U0")].set_index("variant")
    # mace fusion: 8, 11, 11 vs baseline 10, 12, 14 -> per-seed -20 %, -8.33 %, -21.43 %
    fusion = ours[(ours["dataset"] == "qm9-U0") & (ours["variant"] == "fusion")].iloc[0]
    assert fusion["test_mae_mean"] == pytest.approx(10.0)
    expected = [100 * (8 - 10) / 10, 100 * (11 - 12) / 12, 100 * (11 - 14) / 14]
    assert fusion["delta_vs_baseline_mean [%]"] == pytest.approx(sum(expected) / 3)
    assert fusion["n_paired_seeds"] == 3 and fusion["best"]
    assert len(u0) == 3  # composition baseline, mace baseline, mace fusion
    forces = ours[(ours["dataset"] == "xtb-md-aspirin") & (ours["target"] == "forces")]
    assert set(forces["variant"]) == {"baseline", "fusion"}
    assert forces.set_index("variant").loc["fusion", "best"]  # 20 < 30 meV/Å
    energy = ours[(ours["dataset"] == "xtb-md-aspirin") & (ours["target"] == "energy")]
    best = energy[energy["best"]]
    assert list(best["variant"]) == ["baseline"] and list(best["model"]) == ["mace"]
    assert (ours["train_wall_seconds_mean [s]"] == 10.0).all()
    # literature: Cormorant's QM9 U0 value, labelled, never best
    published = front[front["source"] != "this work"]
    assert list(published["test_mae_mean"]) == [22.0]
    assert "published" in published["source"].iloc[0] and not published["best"].any()


def test_front_page_markdown_html_and_rst(tables):
    md = tables["front_page_md"].read_text()
    assert "★" in md and "(literature)" in md and "meV/Å" in md
    page = tables["front_page_html"].read_text()
    assert "<script" not in page and "class='best'" in page and "literature</span>" in page
    rst = tables["front_page_rst"].read_text()
    html = docutils.core.publish_parts(
        rst, writer="html", settings_overrides={"halt_level": 2, "report_level": 2}
    )["html_body"]
    assert "18 training runs" in html and "baseline (params)" in html
    # the landing page is the study's question: each fusion variant next to its baseline
    assert "xtb-md-aspirin" in html and "MACE: fusion" in html
    assert "composition" not in html.split("How to read it")[0]  # no baseline-only rows


def test_model_pages(tables):
    mace = tables["model:mace"].read_text()
    assert "MACE + fusion" in mace and "composition baseline" not in mace
    assert "No results" in tables["model:unite"].read_text()


def test_provenance_table_reads_every_run(results_tree, tables):
    prov = pd.read_csv(tables["provenance"])
    assert len(prov) == len(results_tree["metrics"])
    assert (prov["wall_seconds"] == 10.0).all()  # falls back to train.wall_seconds
    assert json.loads(prov["config"].iloc[0]) == {}
    assert "run spec" in tables["provenance_html"].read_text()


def test_provenance_table_names_a_broken_file(results_tree, tmp_path):
    from fusion.analysis.front_page import provenance_table

    bad = results_tree["metrics"][0]
    record = json.loads(bad.read_text())
    record["provenance"] = "cpu"
    bad.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"metrics.json: key 'provenance' must be an object"):
        provenance_table([bad])


def test_mace_rmd17_literature_has_energy_and_forces(make_metrics, write_metrics, tmp_path):
    for seed in (0, 1):
        write_metrics(
            tmp_path, make_metrics("rmd17-aspirin", "mace", "baseline", seed, 3.0, 9.0)
        )
    paths = main_aggregate(tmp_path / "results", tmp_path / "t")
    front = pd.read_csv(paths["front_page"])
    published = front[front["source"] != "this work"].set_index("target")
    assert published.loc["energy", "test_mae_mean"] == 2.2
    assert published.loc["forces", "test_mae_mean"] == 6.6
    assert published.loc["forces", "unit"] == "meV/Å"
    assert [e.value for e in lit.literature_for("xtb-md-aspirin")] == []
    _, svg = per_molecule_bars(pd.read_csv(paths["summary"]), tmp_path / "pm")
    assert "published (literature, not ours)" in svg.read_text()


def test_per_molecule_and_dataset_figures(results_tree, tables, tmp_path):
    written = main_figures(tables["summary"], results_tree["logs"], tmp_path / "fig")
    for key in ("per_molecule", "qm9-U0:error_vs_params", "xtb-md-aspirin:learning_curves"):
        png, svg = written[key]
        assert png.stat().st_size > 5000 and svg.exists()
    with pytest.raises(ValueError, match=r"no results for dataset\(s\) \['qm9-G'\]"):
        main_figures(tables["summary"], results_tree["logs"], tmp_path / "f2", datasets=["qm9-G"])
    summary = pd.read_csv(tables["summary"])
    with pytest.raises(ValueError, match="no dataset reports test forces_mae"):
        per_molecule_bars(summary[summary["dataset"] == "qm9-U0"], tmp_path / "pm")


def test_kernel_speed_figure_and_bad_csv(tmp_path):
    csv = tmp_path / "product.csv"
    csv.write_text(
        "device,channels,mode,baseline_s,fusion_s\n"
        "cpu,64,fwd,1.0,0.25\ncpu,128,fwd,2.0,0.5\ncpu,64,fwd+bwd,3.0,1.0\n"
    )
    png, _ = kernel_speed([csv], tmp_path / "k")
    assert png.stat().st_size > 5000
    bad = tmp_path / "bad.csv"
    bad.write_text("device,mode\ncpu,fwd\n")
    with pytest.raises(ValueError, match="bad.csv: benchmark CSV needs a 'speedup' column"):
        kernel_speed([bad], tmp_path / "k2")


def test_kernel_speed_reads_the_committed_benchmark_csvs(tmp_path):
    """The workflow draws results/benchmarks/product.csv and cormorant_speed.csv together
    (a model benchmark against a published reference time, one bar per variant)."""
    from pathlib import Path

    from fusion.analysis.figures import read_benchmark

    bench = Path(__file__).resolve().parents[2] / "results" / "benchmarks"
    cormorant = read_benchmark(bench / "cormorant_speed.csv")
    # the reference code (speedup 1) and ours, timed side by side
    assert set(cormorant["mode"]) == {"CormorantQM9", "baseline", "fusion"}
    assert (cormorant["speedup"] == cormorant["speedup_vs_reference"]).all()
    png, _ = kernel_speed([bench / "product.csv", bench / "cormorant_speed.csv"], tmp_path / "k")
    assert png.stat().st_size > 5000


def test_provenance_record_has_hardware_and_wall_time():
    from fusion.train.provenance import provenance

    record = provenance(started="2020-01-01T00:00:00+00:00", device="cpu")
    assert record["cpu"] and record["cpu_count"] >= 1 and record["platform"]
    assert record["gpu"] is None  # a CPU run names no GPU
    assert record["wall_seconds"] > 3600 * 24 * 365  # from 2020 to now
