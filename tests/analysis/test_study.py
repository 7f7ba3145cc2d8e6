"""The committed study's tables: rMD17 and acac next to MACE's published numbers."""

from __future__ import annotations

import json

import pytest

from fusion.analysis.study import acac_table, grid_runs, publish_study, rmd17_table

CONFIG = {
    "datasets": ["rmd17-ethanol", "acac-300K", "acac-dihedral"],
    "models": {"mace": ["baseline", "fusion"]},
    "seeds": [0, 1, 2],
    "composition": True,
    "training": {"epochs": 16},
    "hparams": {"mace": {"baseline": {"num_channels": 8, "max_L": 1}}},
    "dataset_overrides": {"acac-300K": {"models": {"mace": ["baseline"]}, "seeds": [0, 1],
                                        "training": {"epochs": 20}},
                          "acac-dihedral": {"models": {"mace": ["baseline"]}, "seeds": [0, 1],
                                            "training": {"epochs": 20}}},
}
# test energy MAE / RMSE and forces MAE / RMSE per (dataset, variant) and seed
ENERGY = {("rmd17-ethanol", "baseline"): [10.0, 12.0, 14.0],
          ("rmd17-ethanol", "fusion"): [8.0, 11.0, 11.0],  # -20, -8.3, -21.4 %
          ("acac-300K", "baseline"): [4.0, 6.0], ("acac-dihedral", "baseline"): [30.0, 50.0]}
FORCES = {("rmd17-ethanol", "baseline"): [20.0, 30.0, 40.0],
          ("rmd17-ethanol", "fusion"): [24.0, 33.0, 44.0],  # +20, +10, +10 %
          ("acac-300K", "baseline"): [10.0, 14.0], ("acac-dihedral", "baseline"): [None, None]}


@pytest.fixture
def study_results(tmp_path, make_metrics, write_metrics, write_log):
    for run in grid_runs(CONFIG):
        dataset, model, variant, seed = run
        if model == "composition":
            record = make_metrics(dataset, model, variant, seed, 500.0)
        else:
            e, f = ENERGY[dataset, variant][seed], FORCES[dataset, variant][seed]
            record = make_metrics(dataset, model, variant, seed, e, f)
            record["test"]["rmse"] = e  # the acac table reads RMSE
            record["test"]["forces_rmse"] = f
            write_log(tmp_path, dataset, model, variant, seed, 4)
        write_metrics(tmp_path, record)
    return tmp_path


def test_grid_follows_dataset_overrides():
    runs = grid_runs(CONFIG)
    assert ("rmd17-ethanol", "mace", "fusion", 2) in runs
    assert ("acac-300K", "mace", "fusion", 0) not in runs
    assert ("acac-300K", "mace", "baseline", 2) not in runs
    assert ("acac-dihedral", "composition", "baseline", 0) in runs
    assert len(runs) == 6 + 2 + 2 + 3


def test_publish_copies_runs_and_writes_tables_with_published_rows(study_results):
    out = study_results / "study"
    paths = publish_study(CONFIG, study_results / "results", out, wall_seconds=123.0,
                          log=lambda _: None)
    assert (out / "train/rmd17-ethanol/mace/fusion/seed-2/metrics.json").is_file()
    assert (out / "train/rmd17-ethanol/mace/fusion/seed-2/log.csv").is_file()
    assert not list(out.rglob("*.pt"))
    assert json.loads((out / "study.json").read_text())["wall_seconds"] == 123.0
    text = paths["study_md"].read_text()
    # rMD17: ours (mean ± std over splits) and MACE's Table 1 row for ethanol (0.4 / 2.1)
    assert "| rMD17 ethanol | mace/baseline | 95,760 | 3 | 12.0 ± 2.0 | 30.0 ± 10.0 |" in text
    assert "| rMD17 ethanol | mace (Batatia et al., NeurIPS 2022:" in text
    assert "| 0.40 | 2.10 |" in text
    assert "-16.6 ± 7.2 %" in text and "+13.3 ± 5.8 %" in text
    # 12 / 0.4 = 30x and 30 / 2.1 = 14x the published errors
    assert "Our baseline's errors are 14-30x the published MACE's" in text
    assert "ours have 41,000-95,760 parameters (mace-torch MACE, 8 channels, L = 1 messages)" \
        in text
    assert "16 epochs" in text
    assert ("mace/fusion, energy error: -16.6 % on average against the baseline; better "
            "beyond one paired std on 1 of 1 (rMD17 ethanol)") in text
    assert "force error: +13.3 %" in text and "worse on 1 (rMD17 ethanol)" in text
    # acac: RMSE, published 300 K row (0.9 / 5.1), energy-only dihedral test
    assert "| acac test 300K | mace/baseline | 95,760 | 2 | 5.00 ± 1.41 | 12.0 ± 2.8 |" in text
    assert "| 0.90 | 5.10 |" in text
    assert "| acac test dihedral | mace/baseline | 95,760 | 2 | 40.0 ± 14.1 |  |" in text
    assert "20 epochs" in text
    assert (out / "figures" / "error_vs_params.png").is_file()
    assert "list-table" in paths["study_rst"].read_text()
    assert "<table>" in paths["study_html"].read_text()


def test_publish_refuses_an_unfinished_study(study_results):
    (study_results / "results/train/acac-300K/mace/baseline/seed-1/metrics.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 run\(s\) of the study are not finished"):
        publish_study(CONFIG, study_results / "results", study_results / "study")
    assert not (study_results / "study").exists()


def test_tables_are_empty_without_their_benchmarks():
    import pandas as pd

    empty = pd.DataFrame(columns=["dataset", "model", "variant", "seed", "n_params", "split",
                                  "metric", "value", "unit"])
    assert rmd17_table(empty).empty and acac_table(empty).empty


def test_landing_page_shows_the_committed_study_first(study_results):
    from fusion.analysis.aggregate import main_aggregate

    out = study_results / "study"
    paths = publish_study(CONFIG, study_results / "results", out, log=lambda _: None)
    metrics = sorted((study_results / "results" / "train").rglob("metrics.json"))
    demo = main_aggregate(metrics, study_results / "tables", study_page=paths["study_rst"])
    rst = demo["front_page_rst"].read_text()
    assert rst.startswith("**The committed study**")
    assert rst.index("rMD17 ethanol") < rst.index("**This run:**") < rst.index("results at a")
    plain = main_aggregate(metrics, study_results / "plain",
                           study_page=study_results / "missing.rst")
    assert plain["front_page_rst"].read_text().startswith("**fusion-bench: results at a")
