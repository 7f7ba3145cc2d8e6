# Datasets: build each cache once (one job per cache file).


rule prepare_dataset:
    output:
        f"{CACHE_DIR}/{{family}}/{{family}}.npz",
    log:
        "results/logs/prepare/{family}.log",
    wildcard_constraints:
        family=r"[a-z0-9][a-z0-9-]*",
    conda:
        "../../environment.yml"
    params:
        cache_dir=lambda wildcards, output: os.path.dirname(os.path.dirname(output[0])),
    shell:
        "fusion prepare {wildcards.family} --cache-dir {params.cache_dir} 2>&1 | tee {log}"
