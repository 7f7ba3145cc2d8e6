# Figures for the report (`snakemake --report results/report.html`).


rule figures:
    input:
        summary="results/tables/summary.csv",
        logs=get_all_logs,
    output:
        error_vs_params=report(
            "results/figures/error_vs_params.png",
            caption="../report/error_vs_params.rst",
            category="Figures",
        ),
        error_vs_params_svg="results/figures/error_vs_params.svg",
        learning_curves=report(
            "results/figures/learning_curves.png",
            caption="../report/learning_curves.rst",
            category="Figures",
        ),
        learning_curves_svg="results/figures/learning_curves.svg",
    log:
        "results/logs/figures.log",
    conda:
        "../../environment.yml"
    shell:
        "fusion figures --summary {input.summary} --logs {input.logs} "
        "--out-dir results/figures 2>&1 | tee {log}"


rule dataset_cards:
    output:
        report(
            "results/tables/dataset_cards.md",
            caption="../report/dataset_cards.rst",
            category="Datasets",
        ),
    log:
        "results/logs/dataset_cards.log",
    conda:
        "../../environment.yml"
    params:
        datasets=config["datasets"],
    shell:
        "fusion cards {params.datasets} --out {output} 2>&1 | tee {log}"


rule product_benchmark_figure:
    input:
        "results/benchmarks/product.png",
    output:
        report(
            "results/figures/product_speedup.png",
            caption="../report/product_benchmark.rst",
            category="Kernels",
        ),
    log:
        "results/logs/product_benchmark_figure.log",
    conda:
        "../../environment.yml"
    shell:
        "cp {input} {output} 2>&1 | tee {log}"
