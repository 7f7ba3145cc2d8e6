# Training: one job per (dataset, model, variant, seed); resumes from its checkpoint.


rule composition_baseline:
    input:
        get_dataset_cache,
    output:
        "results/train/{dataset}/composition/baseline/seed-{seed}/metrics.json",
    log:
        "results/logs/train/{dataset}/composition/baseline/seed-{seed}.log",
    conda:
        "../../environment.yml"
    params:
        spec=get_run_spec,
    shell:
        "fusion composition --spec {params.spec:q} 2>&1 | tee {log:q}"


rule train:
    input:
        get_dataset_cache,
    output:
        metrics="results/train/{dataset}/{model}/{variant}/seed-{seed}/metrics.json",
        log_csv="results/train/{dataset}/{model}/{variant}/seed-{seed}/log.csv",
        model="results/train/{dataset}/{model}/{variant}/seed-{seed}/model.pt",
    log:
        "results/logs/train/{dataset}/{model}/{variant}/seed-{seed}.log",
    wildcard_constraints:
        dataset=TRAINED_DATASETS,
    conda:
        "../../environment.yml"
    threads: config.get("threads", 1)
    resources:
        gpu=config.get("gpus_per_job", 0),
    params:
        spec=get_run_spec,
    shell:
        "fusion train --spec {params.spec:q} 2>&1 | tee {log:q}"


rule evaluate_transfer:
    input:
        get_dataset_cache,
        get_transfer_source,
    output:
        "results/train/{dataset}/{model}/{variant}/seed-{seed}/metrics.json",
    log:
        "results/logs/evaluate/{dataset}/{model}/{variant}/seed-{seed}.log",
    wildcard_constraints:
        dataset=EVALUATED_DATASETS,
    conda:
        "../../environment.yml"
    threads: config.get("threads", 1)
    params:
        spec=get_run_spec,
    shell:
        "fusion evaluate --spec {params.spec:q} 2>&1 | tee {log:q}"


ruleorder: composition_baseline > train
ruleorder: composition_baseline > evaluate_transfer
