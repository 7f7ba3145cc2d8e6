"""Report captions render the way ``snakemake --report`` renders them (Jinja, then rst)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

jinja2 = pytest.importorskip("jinja2")
docutils_core = pytest.importorskip("docutils.core")

REPORT_DIR = Path(__file__).resolve().parents[2] / "workflow" / "report"
CAPTIONS = (
    "summary.rst",
    "comparison.rst",
    "error_vs_params.rst",
    "learning_curves.rst",
    "product_benchmark.rst",
    "dataset_cards.rst",
)


def _render(name: str, config: dict) -> str:
    text = (REPORT_DIR / name).read_text(encoding="utf-8")
    text = (
        jinja2.Environment()
        .from_string(text)
        .render(snakemake=SimpleNamespace(config=config), categories={}, files={})
    )
    # halt on any rst warning, as a broken caption would show garbled in the report
    parts = docutils_core.publish_parts(
        text, writer="html", settings_overrides={"halt_level": 2, "report_level": 2}
    )
    return parts["body"]


@pytest.mark.parametrize("name", CAPTIONS)
def test_caption_renders(name):
    html = _render(name, {"seeds": [0, 1, 2]})
    assert len(html) > 200


def test_caption_without_seeds_in_config_still_renders():
    assert "0, 1, 2" in _render("comparison.rst", {"seeds": [0, 1, 2]})
    assert _render("comparison.rst", {})  # a config without "seeds" must not break the report
