"""Literature anchors (dataset matching, units) and the style table."""

from __future__ import annotations

import pytest

from fusion.analysis import literature as lit
from fusion.analysis import style


@pytest.mark.parametrize(
    ("dataset", "target"),
    [
        ("qm9-U0", "U0"),
        ("qm9-u0", "U0"),
        ("qm9-U", "U"),
        ("qm9-HOMO", "HOMO"),
        ("qm9-eps-homo", "HOMO"),
        ("qm9-gap", "gap"),
        ("qm9-Cv", "Cv"),
        ("qm9-R2", "R2"),
        ("qm9-zpve", "ZPVE"),
        ("qm9-alpha", "alpha"),
        ("qm9-mu", "mu"),
        ("xtb-md-aspirin", None),
        ("rmd17-aspirin", None),
        ("qm9-unknown", None),
        ("qm9", None),
    ],
)
def test_qm9_target_matching(dataset, target):
    assert lit.qm9_target(dataset) == target


def test_all_twelve_cormorant_targets():
    targets = {e.target for e in lit.LITERATURE if e.model == "cormorant"}
    assert targets == {
        "U0",
        "U",
        "H",
        "G",
        "HOMO",
        "LUMO",
        "gap",
        "mu",
        "alpha",
        "Cv",
        "ZPVE",
        "R2",
    }
    values = {e.target: (e.value, e.unit) for e in lit.LITERATURE}
    assert values["U0"] == (22.0, "meV") and values["alpha"] == (0.085, "bohr^3")
    assert all("not ours" in e.source for e in lit.LITERATURE)
    assert lit.literature_for("xtb-md-aspirin") == []
    assert [e.value for e in lit.literature_for("qm9-gap")] == [61.0]


def test_unit_conversion():
    assert lit.convert(0.034, "eV", "meV") == pytest.approx(34.0)
    assert lit.convert(2.0, "bohr³", "bohr^3") == 2.0
    assert lit.convert(1.0, "cal/mol K", "cal/(mol K)") == 1.0
    assert lit.convert(1.0, "D", "meV") is None


def test_styles_consistent_and_distinct():
    pairs = [
        (m, v)
        for m in ("mace", "cormorant", "unite")
        for v in ("baseline", "fusion", "fusion-vertex", "fusion-3body")
    ]
    styles = [style.style_for(m, v) for m, v in pairs]
    assert len({(s.color, s.marker) for s in styles}) == len(pairs)
    assert style.style_for("mace", "fusion") == style.style_for("mace", "fusion")
    assert style.style_for("mace", "baseline").marker != style.style_for("mace", "fusion").marker
    new = style.style_for("painn", "fusion-9body")  # unknown names still get a style
    assert new == style.style_for("painn", "fusion-9body")
    assert new.color.startswith("#") and new.label == "painn + fusion-9body"
    assert style.style_for("composition", "baseline").linestyle == "--"
    assert style.label("mace", "baseline") == "MACE baseline"
    order = sorted(pairs + [("composition", "baseline")], key=lambda k: style.sort_key(*k))
    assert order[0] == ("composition", "baseline")
    assert order[1] == ("cormorant", "baseline")
