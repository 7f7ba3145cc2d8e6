# Aggregation: every metrics.json -> tidy summary and the comparison table.


rule aggregate:
    input:
        get_all_metrics,
    output:
        summary=report(
            "results/tables/summary.csv",
            caption="../report/summary.rst",
            category="Tables",
        ),
        comparison=report(
            "results/tables/comparison.csv",
            caption="../report/comparison.rst",
            category="Tables",
        ),
        comparison_md="results/tables/comparison.md",
    log:
        "results/logs/aggregate.log",
    conda:
        "../../environment.yml"
    shell:
        "fusion aggregate {input} --out-dir results/tables 2>&1 | tee {log}"
