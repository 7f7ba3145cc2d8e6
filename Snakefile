# fusion-bench: the whole study. See README.md; configs in config/, rules in workflow/rules/.
import os

from snakemake.utils import min_version, validate

from fusion.workflow_config import validate_config

min_version("9.0")


# The paper grid unless a --configfile is given (merging both would mix two grids); values
# given with --config alone change the paper grid's.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


# One line per problem (an empty config file, 48.0 for an integer, a typo), then Snakemake's
# own validation, which fills in the schema's defaults.
validate_config(
    config,
    workflow.overwrite_configfiles,
    os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml"),
)
validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/crosscheck.smk"
include: "workflow/rules/dynamics.smk"
include: "workflow/rules/augment.smk"


# Light rules run where Snakemake runs (the login node under SLURM), not as cluster jobs.
localrules:
    all,
    aggregate,
    figures,
    dataset_cards,
    product_benchmark_figure,
    dynamics_table,
    states_table,
    study_page,


rule all:
    default_target: True
    input:
        get_final_outputs,
        get_crosscheck_outputs,
        get_dynamics_targets,
        get_augment_targets,
