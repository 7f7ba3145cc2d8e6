# Grid, registries and input functions shared by all rules.
import json
import os
import re
from pathlib import Path

from fusion.analysis.study import grid_runs
from fusion.data.qm9xtb import N_SHARDS as QM9XTB_SHARDS
from fusion.data.registry import (
    dataset_cache_path,
    dataset_card,
    dataset_keys,
    dataset_states,
    family_inputs,
)
from fusion.models.registry import model_names
from fusion.workflow_config import check_run_settings, config_path


def _check_grid(config):
    """Fail at DAG build, naming the unknown dataset/model/variant and the valid ones."""
    datasets = set(dataset_keys())
    for dataset in config["datasets"]:
        if dataset not in datasets:
            raise ValueError(
                f"config: unknown dataset {dataset!r}; valid: {', '.join(sorted(datasets))}"
            )
    known = model_names()
    for model, variants in config["models"].items():
        if model not in known:
            raise ValueError(
                f"config: unknown model {model!r}; valid: {', '.join(sorted(known))}"
            )
        for variant in variants:
            if variant not in known[model]:
                raise ValueError(
                    f"config: unknown variant {model}/{variant}; "
                    f"valid: {', '.join(known[model])}"
                )
    for model, variants in config["hparams"].items():
        for variant in variants:
            if model not in known or variant not in known[model]:
                raise ValueError(
                    f"config: hparams given for unknown model {model}/{variant}"
                )
    for model in config.get("model_overrides", {}):
        if model not in known:
            raise ValueError(
                f"config: model_overrides names unknown model {model!r}; "
                f"valid: {', '.join(sorted(known))}"
            )
    for dataset, override in config.get("dataset_overrides", {}).items():
        if dataset not in config["datasets"]:
            raise ValueError(
                f"config: dataset_overrides names {dataset!r}, which is not in datasets "
                f"({', '.join(config['datasets'])})"
            )
        _check_grid(
            {
                "datasets": [dataset],
                "models": override.get("models", {}),
                "hparams": override.get("hparams", {}),
            }
        )


_check_grid(config)

# Dataset caches: checked (not empty, no braces or newlines) and ~ expanded once, here.
CACHE_DIR = config_path(config, "cache_dir", "resources")


def _alternatives(names):
    return "|".join(re.escape(n) for n in sorted(names))


# Transfer datasets (card "trained_as", e.g. acac-600K) are evaluated with the model of the
# dataset they share their training set with, never trained (rule evaluate_transfer).
TRANSFER_DATASETS = sorted(
    d for d in dataset_keys() if dataset_card(d).get("trained_as")
)
TRAINED_DATASETS = _alternatives(set(dataset_keys()) - set(TRANSFER_DATASETS))
EVALUATED_DATASETS = _alternatives(TRANSFER_DATASETS) if TRANSFER_DATASETS else "(?!)"


wildcard_constraints:
    dataset=_alternatives(dataset_keys()),
    model=_alternatives(model_names()),
    variant=_alternatives({v for vs in model_names().values() for v in vs}),
    seed=r"\d+",


def _merge(key, value, override):
    """`override` over `value` for config key `key` (dicts merged, the rest replaced)."""
    if key in ("split", "training"):
        return {**(value or {}), **override}
    if key == "hparams":
        merged = {m: dict(vs) for m, vs in (value or {}).items()}
        for model, variants in override.items():
            for variant, hparams in variants.items():
                base = merged.setdefault(model, {}).get(variant, {})
                merged[model][variant] = {**base, **hparams}
        return merged
    return override


def dataset_setting(dataset, key, default=None, model=None):
    """Config value `key` for a run on `dataset` (of `model`, when given).

    Layers, later ones winning: the global value, `model_overrides[model]`,
    `dataset_overrides[dataset]`. `models` and `seeds` are replaced; `split`, `training`
    and `hparams` (per model/variant) are merged key by key; scalars are replaced.
    """
    value = config.get(key, default)
    layers = [
        config.get("model_overrides", {}).get(model, {}),
        config.get("dataset_overrides", {}).get(dataset, {}),
    ]
    for layer in layers:
        if key in layer:
            value = _merge(key, value, layer[key])
    return value


def grid():
    """(dataset, model, variant, seed) of every training run in the config (the same list
    `fusion study` publishes)."""
    return grid_runs(config)


def _check_runs():
    """Training settings and hyperparameters of every run, checked as its job would check
    them, before any job runs (one line naming the run, the key and the valid range)."""
    for dataset, model, variant in sorted({run[:3] for run in grid()}):
        hparams = dataset_setting(dataset, "hparams", {}, model=model)
        check_run_settings(
            f"{dataset} {model}/{variant}",
            dataset_setting(dataset, "training", {}, model=model),
            hparams.get(model, {}).get(variant, {}),
            model,
            variant,
        )


_check_runs()


def run_dir(dataset, model, variant, seed):
    return f"results/train/{dataset}/{model}/{variant}/seed-{seed}"


def get_all_metrics(wildcards=None):
    return [f"{run_dir(*run)}/metrics.json" for run in grid()]


def get_all_logs(wildcards=None):
    """Training logs (learning curves): trained runs only, not composition or transfer."""
    return [
        f"{run_dir(*run)}/log.csv"
        for run in grid()
        if run[1] != "composition" and run[0] not in TRANSFER_DATASETS
    ]


def get_transfer_source(wildcards):
    """metrics.json and model.pt of the training run a transfer run evaluates."""
    source = dataset_card(wildcards.dataset)["trained_as"]
    folder = run_dir(source, wildcards.model, wildcards.variant, wildcards.seed)
    return [f"{folder}/metrics.json", f"{folder}/model.pt"]


def get_family_inputs(wildcards):
    """Files a family cache is built from by other jobs (DatasetFamily.inputs: the qm9xtb
    feature shards, the rMD17 cache of rmd17xtb-<molecule>)."""
    return [str(path) for path in family_inputs(wildcards.family, CACHE_DIR)]


def get_all_dataset_caches(wildcards=None):
    """The cache files of every dataset in the config (the cards read their statistics)."""
    return sorted({str(dataset_cache_path(d, CACHE_DIR)) for d in config["datasets"]})


def get_dataset_cache(wildcards):
    return dataset_cache_path(wildcards.dataset, CACHE_DIR)


def get_run_spec(wildcards):
    """The JSON run spec of one run (fusion.experiment.RunSpec)."""
    model = wildcards.get("model", "composition")
    variant = wildcards.get("variant", "baseline")
    setting = lambda key, default: dataset_setting(
        wildcards.dataset, key, default, model=model
    )
    spec = {
        "dataset": wildcards.dataset,
        "model": model,
        "variant": variant,
        "seed": int(wildcards.seed),
        "out_dir": run_dir(wildcards.dataset, model, variant, wildcards.seed),
        "cache_dir": CACHE_DIR,
        "split": setting("split", {}),
        "batch_size": setting("batch_size", 32),
        "eval_batch_size": setting("eval_batch_size", 128),
        "hparams": setting("hparams", {}).get(model, {}).get(variant, {}),
        "training": setting("training", {}),
        "threads": config.get("threads", 1),
    }
    return json.dumps(spec, sort_keys=True)


def multi_state_datasets():
    """Configured datasets labelled with several electronic states (card key "states")."""
    return [d for d in config["datasets"] if len(dataset_states(d)) > 1]


STUDY_RST = "results/study/tables/study.rst"
STUDY_HTML = "results/study/tables/study.html"


def get_final_outputs(wildcards=None):
    outputs = [
        "results/tables/summary.csv",
        "results/tables/comparison.csv",
        "results/tables/comparison.md",
        "results/tables/dataset_cards.md",
        "results/figures/error_vs_params.png",
        "results/figures/learning_curves.png",
    ]
    if multi_state_datasets():
        outputs.append("results/tables/states.md")
    if os.path.exists(STUDY_HTML):  # the committed study, when this checkout has one
        outputs.append("results/tables/study.html")
    # The kernel benchmark is run by benchmarks/bench_product.py and committed, not rerun.
    if os.path.exists("results/benchmarks/product.png"):
        outputs.append("results/figures/product_speedup.png")
    return outputs
