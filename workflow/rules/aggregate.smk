# Aggregation: every metrics.json -> tidy summary, comparison, front page, provenance.
# Report categories are numbered so that the report menu lists them in reading order.
from fusion.analysis.report_layout import model_category, report_models
from fusion.analysis.style import model_label


rule aggregate:
    input:
        get_all_metrics,
    output:
        summary=report(
            "results/tables/summary.csv",
            caption="../report/summary.rst",
            category="7 All numbers",
        ),
        comparison=report(
            "results/tables/comparison.csv",
            caption="../report/comparison.rst",
            category="7 All numbers",
        ),
        comparison_md="results/tables/comparison.md",
        front_page=report(
            "results/tables/front_page.html",
            caption="../report/front_page.rst",
            category="1 Front page",
            labels={"table": "results at a glance", "format": "HTML"},
        ),
        front_page_csv=report(
            "results/tables/front_page.csv",
            caption="../report/front_page.rst",
            category="1 Front page",
            labels={"table": "results at a glance", "format": "CSV"},
        ),
        front_page_md="results/tables/front_page.md",
        front_page_rst="results/tables/front_page.rst",
        provenance=report(
            "results/tables/provenance.html",
            caption="../report/provenance.rst",
            category="6 Provenance",
            labels={"table": "provenance", "format": "HTML"},
        ),
        provenance_csv=report(
            "results/tables/provenance.csv",
            caption="../report/provenance.rst",
            category="6 Provenance",
            labels={"table": "provenance", "format": "CSV"},
        ),
        model_pages=[
            report(
                f"results/tables/models/{model}.html",
                caption="../report/model_page.rst",
                category=model_category(model),
                labels={"model": model_label(model), "table": "all variants"},
            )
            for model in report_models(config)
        ],
    log:
        "results/logs/aggregate.log",
    conda:
        "../../environment.yml"
    params:
        models=report_models(config),
        study=STUDY_RST,
    shell:
        "fusion aggregate {input:q} --out-dir results/tables --model-pages {params.models:q} "
        "--study-page {params.study:q} 2>&1 | tee {log:q}"


# The committed study's tables (results/study/, written by `make study`), in the report.
rule study_page:
    input:
        STUDY_HTML,
    output:
        report(
            "results/tables/study.html",
            caption="../report/study.rst",
            category="0 Study (committed)",
            labels={"table": "real benchmarks vs published", "format": "HTML"},
        ),
    log:
        "results/logs/study_page.log",
    conda:
        "../../environment.yml"
    shell:
        "cp {input:q} {output:q} 2>&1 | tee {log:q}"


# Per-state errors (S0, S1, S1 - S0 gap) of multi-state datasets such as stilbene-tddft.
rule states_table:
    input:
        "results/tables/summary.csv",
    output:
        table=report(
            "results/tables/states.html",
            caption="../report/states.rst",
            category="5 Dynamics",
            labels={"table": "per-state errors", "format": "HTML"},
        ),
        csv="results/tables/states.csv",
        md="results/tables/states.md",
    log:
        "results/logs/states_table.log",
    conda:
        "../../environment.yml"
    shell:
        "fusion states-table --summary {input:q} --out-dir results/tables 2>&1 | tee {log:q}"
