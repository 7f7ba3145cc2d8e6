# Datasets: build each cache once (one job per cache file).


rule prepare_dataset:
    output:
        f"{CACHE_DIR}/{{family}}/{{family}}.npz",
    log:
        "results/logs/prepare/{family}.log",
    wildcard_constraints:
        family=r"[a-z0-9]+",
    shell:
        "fusion prepare {wildcards.family} --cache-dir {CACHE_DIR} 2>&1 | tee {log}"
