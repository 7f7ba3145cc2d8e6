"""Report layout helpers used by the Snakemake rules (categories, model pages)."""

from __future__ import annotations

from fusion.analysis import report_layout as layout


def test_models_of_a_config_include_overrides_and_composition():
    config = {
        "datasets": ["qm9-U0", "xtb-md-ethanol"],
        "models": {"mace": ["baseline"]},
        "dataset_overrides": {"qm9-U0": {"models": {"cormorant": ["fusion"]}}},
    }
    assert layout.report_models(config) == ["composition", "cormorant", "mace"]
    assert layout.report_models({**config, "composition": False}) == ["cormorant", "mace"]
    assert layout.any_force_field(config)
    assert not layout.any_force_field({**config, "datasets": ["qm9-U0"]})


def test_categories_sort_in_reading_order_and_hold_no_colon():
    names = [
        layout.model_category("unite"),
        "1 Front page",
        layout.dataset_category("xxmd-stilbene-s1"),
        layout.dataset_category("qm9-U0"),
        "6 Provenance",
        "4 Kernels",
    ]
    assert sorted(names) == [
        "1 Front page",
        "2 Dataset – qm9-U0",
        "3 Model – UNiTE",
        "4 Kernels",
        "5 Dynamics – xxmd-stilbene-s1",
        "6 Provenance",
    ]
    assert not any(":" in name for name in names)


def test_landing_page_and_kernel_csvs_follow_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert layout.landing_page() is None and layout.kernel_benchmarks() == []
    (tmp_path / "results" / "tables").mkdir(parents=True)
    (tmp_path / "results" / "tables" / "front_page.rst").write_text("x")
    (tmp_path / "results" / "benchmarks").mkdir()
    (tmp_path / "results" / "benchmarks" / "product.csv").write_text("x")
    assert layout.landing_page() == str(tmp_path / "results" / "tables" / "front_page.rst")
    assert layout.kernel_benchmarks() == ["results/benchmarks/product.csv"]
