"""Checks of the Snakemake config that run before the DAG is built (Snakefile, common.smk).

Every problem is one ``ValueError`` whose message is one line starting with ``config:``,
naming the key and what was expected, so Snakemake shows it instead of a schema dump or a
failure inside a job.
"""

from __future__ import annotations

import os


def config_path(config: dict, key: str, default: str) -> str:
    """The directory named by ``config[key]`` (``default`` when absent), checked.

    Refused: a value that is not a string, empty or blank, holding a newline (one path per
    value), or braces (Snakemake would read ``{...}`` in an output path as a wildcard).
    A leading ``~`` is expanded here, deliberately and once, so the workflow and every shell
    line see the same directory (left to the shell, ``~`` meant the home directory to
    ``fusion`` but a folder named ``~`` to Snakemake).
    """
    value = config.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(
            f"config: {key} must name a directory (such as {default!r}), got {value!r}"
        )
    for bad, why in (("\n", "a newline"), ("{", "a brace"), ("}", "a brace")):
        if bad in value:
            raise ValueError(
                f"config: {key} {value!r} contains {why}; Snakemake reads braces in output "
                "paths as wildcards and a path is one line: rename the directory"
            )
    return os.path.expanduser(value)


# numpy's legacy seeding (np.random.seed, used by the trainer) takes 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1


def validate_config(config: dict, configfiles, schema_path: str | os.PathLike) -> None:
    """Check ``config`` against the JSON schema; the first problem as one line.

    Stricter than the schema's own reading in two ways: an integer must be written as one
    (``48.0`` and ``true`` are refused, where JSON Schema would take ``48.0`` for 48), and
    a config file that sets nothing is an error (it would otherwise leave the grid empty,
    or, with ``if not config``, silently run the paper grid).
    """
    import jsonschema
    import yaml

    if not config:
        files = ", ".join(str(f) for f in configfiles) or "(none)"
        raise ValueError(
            f"config: the config file(s) {files} set nothing (empty); pass a complete grid "
            "such as config/demo.yaml, or leave --configfile out for the paper grid "
            "config/config.yaml"
        )
    with open(schema_path) as fh:
        schema = yaml.safe_load(fh)
    base = jsonschema.validators.validator_for(schema)
    checker = base.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
    )
    strict = jsonschema.validators.extend(base, type_checker=checker)
    errors = sorted(strict(schema).iter_errors(config), key=lambda e: list(map(str, e.path)))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ValueError(f"config: {where}: {error.message}{more}")


def check_run_settings(run: str, training: dict, hparams: dict, model: str,
                       variant: str) -> None:
    """The training settings and hyperparameters of one run of the grid, checked as the
    job would check them (TrainConfig, the builder's own check), before any job runs."""
    from fusion.models.registry import check_hparams
    from fusion.train.trainer import TrainConfig

    try:
        if model != "composition":
            TrainConfig.from_dict(dict(training))
        check_hparams(model, variant, hparams)
    except (KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise ValueError(f"config: {run}: {message}") from None


def augment_bases(config: dict, runs) -> list[str]:
    """Base datasets whose ``<base>-aug`` is in ``config["datasets"]`` (one augmentation
    round each, rules in ``workflow/rules/augment.smk``); each one's driver is checked with
    :func:`augment_driver`."""
    from fusion.data.stilbene_aug import base_key

    # the grid check has already refused unregistered keys: every "-aug" key here is one
    bases = [base_key(d) for d in config["datasets"] if d.endswith("-aug")]
    for base in bases:
        augment_driver(config, runs, base)
    return bases


def augment_driver(config: dict, runs, base: str) -> tuple[str, str, int]:
    """(model, variant, seed) of ``config["augment"]["driver"]``, checked: it must be a
    training run of ``base`` and of ``<base>-aug`` in ``runs`` (the retrained model it is
    compared with)."""
    section = config.get("augment")
    if not isinstance(section, dict) or not isinstance(section.get("driver"), dict):
        raise ValueError(
            f"config: datasets lists {base}-aug, which one augmentation round makes; add "
            "an `augment:` section with `driver: {model: ..., variant: ..., seed: ...}`, "
            f"the {base} run whose dynamics picks the frames"
        )
    d = section["driver"]
    driver = (str(d.get("model")), str(d.get("variant")), d.get("seed", 0))
    run_set = {tuple(run) for run in runs}
    for dataset in (base, f"{base}-aug"):
        if (dataset, *driver) not in run_set:
            raise ValueError(
                f"config: augment.driver {driver[0]}/{driver[1]} seed {driver[2]} is not a "
                f"training run of {dataset} in this config (the driver runs on {base}, the "
                f"retrained model on {base}-aug): add it to that dataset's models and seeds"
            )
    return driver


def augment_inputs(config: dict, runs, base: str, cache_dir: str, run_dir) -> dict[str, str]:
    """Files the comparison of one augmentation round reads: the ``model.pt`` of the driver
    (trained on ``base``) and of the retrained run (``<base>-aug``), and the ``<base>-aug``
    cache. ``run_dir(dataset, model, variant, seed)``: the workflow's run directory."""
    from fusion.data.registry import dataset_cache_path

    driver = augment_driver(config, runs, base)
    return {
        "driver": os.path.join(run_dir(base, *driver), "model.pt"),
        "retrained": os.path.join(run_dir(f"{base}-aug", *driver), "model.pt"),
        "augmented": str(dataset_cache_path(f"{base}-aug", cache_dir)),
    }
