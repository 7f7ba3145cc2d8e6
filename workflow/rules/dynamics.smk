# Non-adiabatic dynamics of stilbene (issue 9): each trained multi-state run listed under
# `dynamics:` in the config drives a surface-hopping ensemble (fusion dynamics, started on S1
# from cis and trans Franck-Condon geometries); one table and two figures combine them.
# Logic lives in fusion/dynamics/workflow.py (jobs) and fusion/dynamics/tables.py (the combined
# table and figures); a config without `dynamics:` runs none of this.
from fusion.dynamics.workflow import (
    dynamics_analysis_files,
    dynamics_spec_json,
    dynamics_targets,
)

# rule all: every analysis.json, results/tables/dynamics.{csv,md}, the two combined figures.
get_dynamics_targets = lambda wildcards=None: dynamics_targets(config, grid())

# The trained run a dynamics job starts from.
get_dynamics_run = lambda wildcards: [
    f"{run_dir(wildcards.dataset, wildcards.model, wildcards.variant, wildcards.seed)}/{name}"
    for name in ("metrics.json", "model.pt")
]

# The `fusion dynamics --spec` JSON of one job, built from the config's dynamics section.
get_dynamics_spec = lambda wildcards: dynamics_spec_json(
    config,
    wildcards.dataset,
    wildcards.model,
    wildcards.variant,
    wildcards.seed,
    CACHE_DIR,
)


rule dynamics:
    input:
        get_dynamics_run,
    output:
        analysis="results/dynamics/{dataset}/{model}/{variant}/seed-{seed}/analysis.json",
        population_csv="results/dynamics/{dataset}/{model}/{variant}/seed-{seed}/population.csv",
        branching="results/dynamics/{dataset}/{model}/{variant}/seed-{seed}/branching.csv",
        summary="results/dynamics/{dataset}/{model}/{variant}/seed-{seed}/summary.csv",
        trajectories="results/dynamics/{dataset}/{model}/{variant}/seed-{seed}/trajectories.csv",
        hops="results/dynamics/{dataset}/{model}/{variant}/seed-{seed}/hops.csv",
        torsion=report(
            "results/dynamics/{dataset}/{model}/{variant}/seed-{seed}/torsion.png",
            caption="../report/dynamics_torsion.rst",
            category="5 Dynamics – {dataset}",
            subcategory="trajectories",
            labels={
                "model": "{model}",
                "variant": "{variant}",
                "seed": "{seed}",
                "figure": "torsion",
            },
        ),
        population=report(
            "results/dynamics/{dataset}/{model}/{variant}/seed-{seed}/population.png",
            caption="../report/dynamics_population.rst",
            category="5 Dynamics – {dataset}",
            subcategory="trajectories",
            labels={
                "model": "{model}",
                "variant": "{variant}",
                "seed": "{seed}",
                "figure": "S1 population",
            },
        ),
    log:
        "results/logs/dynamics/{dataset}/{model}/{variant}/seed-{seed}.log",
    conda:
        "../../environment.yml"
    threads: config.get("threads", 1)
    params:
        spec=get_dynamics_spec,
    shell:
        "fusion dynamics --spec {params.spec:q} 2>&1 | tee {log:q}"


rule dynamics_table:
    input:
        lambda wildcards: dynamics_analysis_files(config, grid()),
    output:
        table=report(
            "results/tables/dynamics.csv",
            caption="../report/dynamics_table.rst",
            category="5 Dynamics",
            subcategory="all runs",
            labels={"table": "lifetimes and branching", "format": "CSV"},
        ),
        table_md="results/tables/dynamics.md",
        population=report(
            "results/figures/dynamics_population.png",
            caption="../report/dynamics_combined_population.rst",
            category="5 Dynamics",
            subcategory="all runs",
            labels={"figure": "S1 population, all models"},
        ),
        population_svg="results/figures/dynamics_population.svg",
        torsion=report(
            "results/figures/dynamics_torsion.png",
            caption="../report/dynamics_combined_torsion.rst",
            category="5 Dynamics",
            subcategory="all runs",
            labels={"figure": "torsion, all models"},
        ),
        torsion_svg="results/figures/dynamics_torsion.svg",
    log:
        "results/logs/dynamics_table.log",
    conda:
        "../../environment.yml"
    shell:
        "fusion dynamics-table {input:q} --tables-dir results/tables "
        "--figures-dir results/figures 2>&1 | tee {log:q}"
