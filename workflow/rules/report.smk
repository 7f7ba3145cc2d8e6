# Figures and the layout of `snakemake --report results/report.html`.
# Landing page: the front-page table (results/tables/front_page.rst, written by `aggregate`)
# once it exists, otherwise a description of the report. Categories are numbered so the
# menu lists them in reading order: 1 Front page, 2 Dataset ..., 3 Model ..., 4 Kernels,
# 5 Dynamics, 6 Provenance, 7 All numbers.
from fusion.analysis.report_layout import (
    any_force_field,
    dataset_category,
    kernel_benchmarks,
    landing_page,
)

if landing_page():

    report: landing_page()

else:

    report: "../report/workflow.rst"


rule figures:
    input:
        summary="results/tables/summary.csv",
        logs=get_all_logs,
    output:
        error_vs_params=report(
            "results/figures/error_vs_params.png",
            caption="../report/error_vs_params.rst",
            category="2 All datasets",
            labels={"figure": "error vs parameters"},
        ),
        error_vs_params_svg="results/figures/error_vs_params.svg",
        learning_curves=report(
            "results/figures/learning_curves.png",
            caption="../report/learning_curves.rst",
            category="2 All datasets",
            labels={"figure": "learning curves"},
        ),
        learning_curves_svg="results/figures/learning_curves.svg",
        per_dataset=[
            report(
                f"results/figures/datasets/{dataset}/{figure}.png",
                caption=f"../report/{figure}.rst",
                category=dataset_category(dataset),
                labels={"dataset": dataset, "figure": figure.replace("_", " ")},
            )
            for dataset in config["datasets"]
            for figure in ("error_vs_params", "learning_curves")
        ],
        per_molecule=(
            [
                report(
                    "results/figures/per_molecule.png",
                    caption="../report/per_molecule.rst",
                    category="2 All datasets",
                    labels={"figure": "error per molecule"},
                )
            ]
            if any_force_field(config)
            else []
        ),
    log:
        "results/logs/figures.log",
    conda:
        "../../environment.yml"
    params:
        datasets=config["datasets"],
    shell:
        "fusion figures --summary {input.summary:q} --logs {input.logs:q} "
        "--datasets {params.datasets:q} --out-dir results/figures 2>&1 | tee {log:q}"


rule dataset_cards:
    input:
        get_all_dataset_caches,
    output:
        report(
            "results/tables/dataset_cards.md",
            caption="../report/dataset_cards.rst",
            category="2 All datasets",
            labels={"figure": "dataset cards"},
        ),
    log:
        "results/logs/dataset_cards.log",
    conda:
        "../../environment.yml"
    params:
        datasets=config["datasets"],
        cache_dir=CACHE_DIR,
    shell:
        "fusion cards {params.datasets:q} --cache-dir {params.cache_dir:q} --out {output:q} "
        "2>&1 | tee {log:q}"


# Requested by rule all when results/benchmarks/product.png exists (common.smk); drawn from
# the benchmark CSVs (product.csv, and cormorant_speed.csv when present).
rule product_benchmark_figure:
    input:
        kernel_benchmarks(),
    output:
        report(
            "results/figures/product_speedup.png",
            caption="../report/product_benchmark.rst",
            category="4 Kernels",
            labels={"figure": "kernel speedup"},
        ),
    log:
        "results/logs/product_benchmark_figure.log",
    conda:
        "../../environment.yml"
    shell:
        "fusion figures --kernels {input:q} --kernel-name product_speedup "
        "--out-dir results/figures 2>&1 | tee {log:q}"
