# Datasets: build each cache once (one job per cache file).


rule prepare_dataset:
    input:
        get_family_inputs,
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
        "OMP_NUM_THREADS={threads} fusion prepare {wildcards.family:q} "
        "--cache-dir {params.cache_dir:q} 2>&1 | tee {log:q}"


# UNiTE's orbital features of all of QM9 (qm9xtb): one job per shard, merged by
# prepare_dataset. The demo family (qm9xtb-demo) is small and computed in one job.
rule qm9xtb_shard:
    output:
        f"{CACHE_DIR}/qm9xtb/shards/shard-{{shard}}-of-{QM9XTB_SHARDS:03d}.npz",
    log:
        "results/logs/prepare/qm9xtb-shard-{shard}.log",
    wildcard_constraints:
        shard=r"\d{3}",
    conda:
        "../../environment.yml"
    threads: 1
    params:
        cache_dir=lambda wildcards, output: Path(output[0]).parents[2],
        n_shards=QM9XTB_SHARDS,
    shell:
        "OMP_NUM_THREADS={threads} python -m fusion.data.qm9xtb --cache-dir {params.cache_dir:q} "
        "--shard {wildcards.shard:q} --n-shards {params.n_shards:q} 2>&1 | tee {log:q}"
