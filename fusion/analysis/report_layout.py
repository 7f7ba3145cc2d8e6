"""Layout of the Snakemake report: categories, model pages, optional inputs.

Used by workflow/rules/aggregate.smk and report.smk (kept out of the rule files, as
``snakemake --lint`` asks). Categories are numbered so the report's menu, which sorts them
by name, lists them in reading order: 1 Front page, 2 Dataset – <key> (and 2 All datasets),
3 Model – <family>, 4 Kernels, 5 Dynamics – <key>, 6 Provenance, 7 All numbers. Category
names hold no colon: Snakemake turns them into rst link targets, where a colon ends the name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from fusion.analysis.figures import is_force_field
from fusion.analysis.style import model_label

FRONT_PAGE_RST = "results/tables/front_page.rst"
# Benchmarks are run by benchmarks/*.py and committed, not rerun by the workflow.
KERNEL_BENCHMARK_CSVS = ("results/benchmarks/product.csv", "results/benchmarks/cormorant_speed.csv",
                         "results/benchmarks/model_step.csv")


def report_models(config: Mapping) -> list[str]:
    """Model families with runs in ``config`` (the composition baseline included)."""
    models = set(config["models"])
    for override in config.get("dataset_overrides", {}).values():
        models |= set(override.get("models", {}))
    if config.get("composition", True):
        models.add("composition")
    return sorted(models)


def model_category(model: str) -> str:
    return f"3 Model – {model_label(model)}"


def dataset_category(dataset: str) -> str:
    """Category of a dataset's figures; stilbene (non-adiabatic dynamics) data: Dynamics."""
    if "stilbene" in dataset:
        return f"5 Dynamics – {dataset}"
    return f"2 Dataset – {dataset}"


def any_force_field(config: Mapping) -> bool:
    """True when ``config`` has a force-field dataset (then per-molecule bars are drawn)."""
    return any(is_force_field(d) for d in config["datasets"])


def kernel_benchmarks() -> list[str]:
    """The committed kernel benchmark CSVs present in the working directory."""
    return [path for path in KERNEL_BENCHMARK_CSVS if os.path.exists(path)]


def landing_page() -> str | None:
    """Absolute path of the generated front page (rst) when it exists, else None."""
    return os.path.abspath(FRONT_PAGE_RST) if os.path.exists(FRONT_PAGE_RST) else None
