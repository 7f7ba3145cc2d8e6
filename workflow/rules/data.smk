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
    threads: 1
    params:
        cache_dir=lambda wildcards, output: os.path.dirname(os.path.dirname(output[0])),
    shell:
        # xTB (tblite) and pyscf spin up one OpenMP thread per core unless told: with
        # several jobs in parallel that oversubscribes the CPU many times over.
        "OMP_NUM_THREADS={threads} fusion prepare {wildcards.family} "
        "--cache-dir {params.cache_dir} 2>&1 | tee {log}"
