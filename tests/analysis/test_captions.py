"""Report captions render the way ``snakemake --report`` renders them (Jinja, then rst)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import docutils.core as docutils_core
import jinja2
import pytest

REPORT_DIR = Path(__file__).resolve().parents[2] / "workflow" / "report"
CAPTIONS = (
    "summary.rst",
    "comparison.rst",
    "error_vs_params.rst",
    "learning_curves.rst",
    "product_benchmark.rst",
    "dataset_cards.rst",
    "front_page.rst",
    "provenance.rst",
    "model_page.rst",
    "per_molecule.rst",
    "workflow.rst",
    "states.rst",
    "study.rst",
    "dynamics_table.rst",
    "dynamics_population.rst",
    "dynamics_torsion.rst",
    "dynamics_combined_population.rst",
    "dynamics_combined_torsion.rst",
)


# what Snakemake gives the captions of per-run outputs (e.g. the dynamics figures)
WILDCARDS = SimpleNamespace(dataset="stilbene-tddft", model="mace", variant="baseline", seed="0")


def _render(name: str, config: dict) -> str:
    text = (REPORT_DIR / name).read_text(encoding="utf-8")
    text = (
        jinja2.Environment()
        .from_string(text)
        .render(snakemake=SimpleNamespace(config=config, wildcards=WILDCARDS), categories={},
                files={})
    )
    # halt on any rst warning, as a broken caption would show garbled in the report
    parts = docutils_core.publish_parts(
        text, writer="html", settings_overrides={"halt_level": 2, "report_level": 2}
    )
    return parts["body"]


def test_every_report_caption_of_the_rules_exists_and_is_tested():
    rules = Path(__file__).resolve().parents[2] / "workflow" / "rules"
    named = set()
    for smk in rules.glob("*.smk"):
        text = smk.read_text(encoding="utf-8")
        named |= set(re.findall(r"\.\./report/([\w.]+\.rst)", text))
        if "../report/{figure}.rst" in text:
            named |= {"error_vs_params.rst", "learning_curves.rst"}
    assert named, "no captions found in workflow/rules"
    assert named <= set(CAPTIONS), f"captions not rendered by this test: {named - set(CAPTIONS)}"
    assert all((REPORT_DIR / name).exists() for name in named)


@pytest.mark.parametrize("name", CAPTIONS)
def test_caption_renders(name):
    html = _render(name, {"seeds": [0, 1, 2]})
    assert len(html) > 200


def test_caption_without_seeds_in_config_still_renders():
    assert "0, 1, 2" in _render("comparison.rst", {"seeds": [0, 1, 2]})
    assert _render("comparison.rst", {})  # a config without "seeds" must not break the report
