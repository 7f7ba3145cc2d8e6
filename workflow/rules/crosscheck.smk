# Cross-check: the MACE baseline trained again by mace-torch's own `mace_run_train`, on the
# same structures with the translated hyperparameters (fusion/crosscheck.py,
# docs/crosscheck.md). Needs our run of the same spec first, to compare with.
from fusion.crosscheck import crosscheck_targets


class _RunWildcards(dict):
    """Wildcards of one run, with attribute access, for get_run_spec."""

    __getattr__ = dict.__getitem__


# crosscheck.json of every (dataset, seed) with mace/baseline when `crosscheck: true`.
get_crosscheck_outputs = lambda wildcards=None: crosscheck_targets(config)

# The run spec of our mace/baseline run that the cross-check repeats.
get_crosscheck_spec = lambda wildcards: get_run_spec(
    _RunWildcards(
        dataset=wildcards.dataset,
        model="mace",
        variant="baseline",
        seed=wildcards.seed,
    )
)


rule crosscheck_mace:
    input:
        metrics="results/train/{dataset}/mace/baseline/seed-{seed}/metrics.json",
        cache=get_dataset_cache,
    output:
        "results/crosscheck/{dataset}/mace/baseline/seed-{seed}/crosscheck.json",
    log:
        "results/logs/crosscheck/{dataset}/mace/baseline/seed-{seed}.log",
    conda:
        "../../environment.yml"
    threads: config.get("threads", 1)
    resources:
        gpu=config.get("gpus_per_job", 0),
    params:
        spec=get_crosscheck_spec,
        workdir=lambda wildcards, output: os.path.dirname(output[0]),
    shell:
        "python -m fusion.crosscheck --spec {params.spec:q} --workdir {params.workdir:q} "
        "2>&1 | tee {log:q}"
