"""Published reference values ("literature anchors") shown next to our own results.

These numbers were **not** produced by this workflow. They come from papers, were
obtained with the authors' own code, training-set sizes and training budgets (Cormorant on
QM9: 100k training molecules, hundreds of epochs), and are shown only to anchor the scale
of our numbers. The comparison table gives them their own rows with variant
``"literature"`` and a ``source`` column, and only for datasets present in the results.

Values are in the units this project reports (``docs/architecture.md``): energies in meV,
dipole moment in D, polarizability in bohr^3, electronic spatial extent in bohr^2, heat
capacity in cal/(mol K).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CORMORANT_REFERENCE = (
    "B. Anderson, T. S. Hy, R. Kondor, 'Cormorant: Covariant Molecular Neural Networks', "
    "NeurIPS 2019 (arXiv:1906.04015), QM9 results table"
)
CORMORANT_CITATION = "Anderson, Hy & Kondor, NeurIPS 2019"


@dataclass(frozen=True)
class LiteratureValue:
    """One published test MAE for one QM9-type target."""

    target: str  # canonical target name, e.g. "U0"
    model: str  # model key in our registry that the number belongs to
    metric: str  # always "mae" for now
    value: float
    unit: str
    citation: str  # short, shown in tables
    reference: str  # full reference
    note: str = ""

    @property
    def source(self) -> str:
        """Table text: citation, marked as published, with the note."""
        note = f"; {self.note}" if self.note else ""
        return f"{self.citation} (published, not ours{note})"


# Cormorant, QM9 test MAE (Anderson, Hy & Kondor 2019, the QM9 results table; the same
# numbers are reprinted in later papers' QM9 tables, e.g. DimeNet and EGNN).
# Checked against memory of the paper; confidence noted per line.
_CORMORANT_QM9 = {
    "U0": (22.0, "meV"),  # sure
    "U": (21.0, "meV"),  # sure
    "H": (21.0, "meV"),  # sure
    "G": (20.0, "meV"),  # sure
    "HOMO": (34.0, "meV"),  # sure (the paper lists 34 meV / 0.034 eV)
    "LUMO": (38.0, "meV"),  # sure
    "gap": (61.0, "meV"),  # sure
    "mu": (0.038, "D"),  # sure
    "alpha": (0.085, "bohr^3"),  # sure
    "Cv": (0.026, "cal/(mol K)"),  # sure
    # UNCERTAIN in the last digits: remembered as 2.027 meV in the paper (2.03 in reprints);
    # the brief for this module gave 2.0. Rounded to the digits we are sure of.
    "ZPVE": (2.0, "meV"),
    "R2": (0.961, "bohr^2"),  # sure
}

LITERATURE: tuple[LiteratureValue, ...] = tuple(
    LiteratureValue(
        target=target,
        model="cormorant",
        metric="mae",
        value=value,
        unit=unit,
        citation=CORMORANT_CITATION,
        reference=CORMORANT_REFERENCE,
        note="100k training molecules, the authors' code and training budget",
    )
    for target, (value, unit) in _CORMORANT_QM9.items()
)

# Spellings of QM9 targets that a dataset key "qm9-<target>" may use, normalised with
# `_norm` (lower case, without "-", "_", spaces).
_TARGET_ALIASES = {
    "u0": "U0",
    "u": "U",
    "h": "H",
    "g": "G",
    "homo": "HOMO",
    "epshomo": "HOMO",
    "ehomo": "HOMO",
    "lumo": "LUMO",
    "epslumo": "LUMO",
    "elumo": "LUMO",
    "gap": "gap",
    "homolumogap": "gap",
    "deltaeps": "gap",
    "mu": "mu",
    "dipole": "mu",
    "alpha": "alpha",
    "polarizability": "alpha",
    "cv": "Cv",
    "heatcapacity": "Cv",
    "zpve": "ZPVE",
    "r2": "R2",
}

_QM9_KEY = re.compile(r"^qm9[-_](?P<target>[A-Za-z0-9_-]+)$", re.IGNORECASE)


def _norm(text: str) -> str:
    return re.sub(r"[\s_\-]", "", text).lower()


def qm9_target(dataset: str) -> str | None:
    """Canonical QM9 target of a dataset key like ``"qm9-U0"``; None for other datasets."""
    match = _QM9_KEY.match(dataset)
    if match is None:
        return None
    return _TARGET_ALIASES.get(_norm(match.group("target")))


def literature_for(dataset: str) -> list[LiteratureValue]:
    """Published values that belong to the dataset key ``dataset`` (may be empty)."""
    target = qm9_target(dataset)
    if target is None:
        return []
    return [entry for entry in LITERATURE if entry.target == target]


_UNIT_ALIASES = {
    "mev": "meV",
    "ev": "eV",
    "d": "D",
    "debye": "D",
    "bohr^3": "bohr^3",
    "bohr3": "bohr^3",
    "a0^3": "bohr^3",
    "bohr^2": "bohr^2",
    "bohr2": "bohr^2",
    "a0^2": "bohr^2",
    "cal/(molk)": "cal/(mol K)",
    "cal/molk": "cal/(mol K)",
    "cal/(mol*k)": "cal/(mol K)",
    "cal/(mol·k)": "cal/(mol K)",
}

# factor that converts the first unit into the second
_CONVERSIONS = {("eV", "meV"): 1000.0, ("meV", "eV"): 1e-3}


def canonical_unit(unit: str) -> str:
    """Canonical spelling of a unit string (``"bohr³"`` -> ``"bohr^3"``); unknown -> as is."""
    text = unit.replace("³", "^3").replace("²", "^2").replace(" ", "").lower()
    return _UNIT_ALIASES.get(text, unit)


def convert(value: float, unit: str, to_unit: str) -> float | None:
    """``value`` in ``unit`` expressed in ``to_unit``; None when no conversion is known."""
    a, b = canonical_unit(unit), canonical_unit(to_unit)
    if a == b:
        return value
    factor = _CONVERSIONS.get((a, b))
    return None if factor is None else value * factor
