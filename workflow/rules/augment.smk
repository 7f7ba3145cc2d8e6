# One round of trajectory-driven augmentation (issue 20). For every <base>-aug dataset in
# the config's `datasets`: the `augment.driver` run of <base> runs a small surface-hopping
# ensemble and picks frames (augment_select), <base>'s reference method labels them in shard
# jobs (augment_label, resumable), prepare_dataset merges them into <base>-aug, the ordinary
# train rule retrains, and augment_compare sets the driver against the retrained model on
# frames neither saw. Logic: fusion/dynamics/augment.py, fusion/data/stilbene_aug.py.
from fusion.data.stilbene_aug import AUG_FRAMES, AUG_SHARDS, AUGMENTED_BASES
from fusion.workflow_config import augment_bases, augment_inputs

# Driver and retrained runs (same model, variant, seed) and the <base>-aug cache.
get_augment_comparison_inputs = lambda wildcards: augment_inputs(
    config, grid(), wildcards.base, CACHE_DIR, run_dir
)

# The driver run of a base dataset (config augment.driver): metrics.json and model.pt.
get_augment_driver = lambda wildcards: [
    get_augment_comparison_inputs(wildcards)["driver"].replace("model.pt", name)
    for name in ("metrics.json", "model.pt")
]

# rule all: the comparison of every augmented dataset in the config.
get_augment_targets = lambda wildcards=None: [
    f"results/augment/{base}-aug/comparison.csv"
    for base in augment_bases(config, grid())
]


rule augment_select:
    input:
        get_augment_driver,
    output:
        f"{CACHE_DIR}/{{base}}-aug/selected.npz",
    log:
        "results/logs/augment/{base}-select.log",
    wildcard_constraints:
        base=_alternatives(AUGMENTED_BASES),
    conda:
        "../../environment.yml"
    threads: config.get("threads", 1)
    params:
        driver=lambda wildcards, input: os.path.dirname(input[0]),
        n_frames=AUG_FRAMES,
        n_trajectories=config.get("augment", {}).get("n_trajectories", 4),
        n_steps=config.get("augment", {}).get("n_steps", 400),
        dt_fs=config.get("augment", {}).get("dt_fs", 0.25),
        record_every=config.get("augment", {}).get("record_every", 20),
        seed=config.get("augment", {}).get("seed", 0),
        cache_dir=lambda wildcards, output: Path(output[0]).parents[1],
    shell:
        "OMP_NUM_THREADS={threads:q} fusion augment select --run-dir {params.driver:q} "
        "--out {output:q} --n-frames {params.n_frames:q} "
        "--n-trajectories {params.n_trajectories:q} --n-steps {params.n_steps:q} "
        "--dt-fs {params.dt_fs:q} --record-every {params.record_every:q} "
        "--seed {params.seed:q} --threads {threads:q} --cache-dir {params.cache_dir:q} "
        "2>&1 | tee {log:q}"


rule augment_label:
    input:
        f"{CACHE_DIR}/{{base}}-aug/selected.npz",
    output:
        f"{CACHE_DIR}/{{base}}-aug/shards/shard-{{shard}}-of-{AUG_SHARDS:03d}.npz",
    log:
        "results/logs/augment/{base}-label-{shard}.log",
    wildcard_constraints:
        base=_alternatives(AUGMENTED_BASES),
        shard=r"\d{3}",
    conda:
        "../../environment.yml"
    threads: 1
    params:
        shard=lambda wildcards: int(wildcards.shard),
        n_shards=AUG_SHARDS,
    shell:
        "OMP_NUM_THREADS={threads:q} fusion augment label --base {wildcards.base:q} "
        "--selected {input:q} --out {output:q} --shard {params.shard:q} "
        "--n-shards {params.n_shards:q} --threads {threads:q} 2>&1 | tee {log:q}"


rule augment_compare:
    input:
        unpack(get_augment_comparison_inputs),
    output:
        csv="results/augment/{base}-aug/comparison.csv",
        md="results/augment/{base}-aug/comparison.md",
    log:
        "results/logs/augment/{base}-compare.log",
    wildcard_constraints:
        base=_alternatives(AUGMENTED_BASES),
    conda:
        "../../environment.yml"
    params:
        driver=lambda wildcards, input: os.path.dirname(input.driver),
        retrained=lambda wildcards, input: os.path.dirname(input.retrained),
        cache_dir=lambda wildcards, input: Path(input.augmented).parents[1],
        split=lambda wildcards: json.dumps(dataset_setting(wildcards.base, "split", {})),
    shell:
        "fusion augment compare --driver {params.driver:q} --retrained {params.retrained:q} "
        "--augmented {input.augmented:q} --out {output.csv:q} "
        "--cache-dir {params.cache_dir:q} --split {params.split:q} 2>&1 | tee {log:q}"
