"""Published reference values ("literature anchors") shown next to our own results.

These numbers were **not** produced by this workflow. They come from papers, were
obtained with the authors' own code, training-set sizes and training budgets (Cormorant on
QM9: 100k training molecules, hundreds of epochs), and are shown only to anchor the scale
of our numbers. The comparison table gives them their own rows with variant
``"literature"`` and a ``source`` column, and only for datasets present in the results.

Values are in the units this project reports (``docs/architecture.md``): energies in meV,
forces in meV/Å, dipole moment in D, polarizability in bohr^3, electronic spatial extent in
bohr^2, heat capacity in cal/(mol K).

Anchors exist for ``qm9-<target>`` (Cormorant), ``rmd17-<molecule>`` and ``acac-300K``/
``acac-600K`` (MACE; acac as RMSE, shown in the study tables only). Generated
force-field data (``xtb-md-<molecule>``: GFN2-xTB, not the rMD17 PBE/def2-SVP labels) get
no anchor: a published rMD17 number is not a reference for a different level of theory.
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
    """One published test error for one dataset target (a QM9 target or an rMD17 molecule)."""

    target: str  # canonical target name, e.g. "U0", or the rMD17 molecule, e.g. "aspirin"
    model: str  # model key in our registry that the number belongs to
    metric: str  # "mae" (energy / graph-level target), "forces_mae", "rmse", "forces_rmse"
    value: float
    unit: str
    citation: str  # short, shown in tables
    reference: str  # full reference
    note: str = ""
    family: str = "qm9"  # dataset family the target belongs to: "qm9", "rmd17" or "acac"

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

MACE_REFERENCE = (
    "I. Batatia, D. P. Kovács, G. N. C. Simm, C. Ortner, G. Csányi, 'MACE: Higher Order "
    "Equivariant Message Passing Neural Networks for Fast and Accurate Force Fields', "
    "NeurIPS 2022 (arXiv:2206.07697), rMD17 table (1000 training configurations)"
)
MACE_CITATION = "Batatia et al., NeurIPS 2022"

# MACE, rMD17 test MAE (Batatia et al. 2022, Table 1: 950 training + 50 validation
# configurations): energy (meV) and forces (meV/Å), the MACE column, read from the paper's
# text (arXiv:2206.07697). Aspirin, benzene, ethanol and toluene (both values) and the other
# molecules' energies also agree with an independent reprint
# (github.com/kcheng0407/mace-rmd17-benchmark README); for the other six molecules' forces
# that reprint shows neighbouring columns of the same table (e.g. Allegro's 2.6 meV/Å for
# azobenzene), so the paper's own values are used.
_MACE_RMD17 = {
    "aspirin": (2.2, 6.6),
    "azobenzene": (1.2, 3.0),
    "benzene": (0.4, 0.3),
    "ethanol": (0.4, 2.1),
    "malonaldehyde": (0.8, 4.1),
    "naphthalene": (0.5, 1.6),
    "paracetamol": (1.3, 4.8),
    "salicylic-acid": (0.9, 3.1),
    "toluene": (0.5, 1.5),
    "uracil": (0.5, 2.1),
}

LITERATURE += tuple(
    LiteratureValue(
        target=molecule,
        model="mace",
        metric=metric,
        value=value,
        unit=unit,
        citation=MACE_CITATION,
        reference=MACE_REFERENCE,
        note="950 train + 50 val configurations, the authors' training budget",
        family="rmd17",
    )
    for molecule, (energy, forces) in _MACE_RMD17.items()
    for metric, value, unit in (("mae", energy, "meV"), ("forces_mae", forces, "meV/Å"))
)

# MACE, acetylacetone test RMSE (Batatia et al. 2022, Table 3; trained on 450 + 50
# configurations of the 300 K set, mean of three runs): energy (meV), forces (meV/Å). The
# paper gives no numbers for the H-transfer path or the dihedral scan (figures only).
MACE_ACAC_NOTE = ("trained on 300 K (450 + 50), 2.8M parameters, float64, the authors' "
                  "training budget; RMSE")
_MACE_ACAC = {"300K": (0.9, 5.1), "600K": (4.6, 22.4)}

LITERATURE += tuple(
    LiteratureValue(
        target=test_set,
        model="mace",
        metric=metric,
        value=value,
        unit=unit,
        citation=MACE_CITATION + ", Table 3",
        reference=MACE_REFERENCE.replace("rMD17 table (1000 training configurations)",
                                         "acetylacetone table (Table 3)"),
        note=MACE_ACAC_NOTE,
        family="acac",
    )
    for test_set, (energy, forces) in _MACE_ACAC.items()
    for metric, value, unit in (("rmse", energy, "meV"), ("forces_rmse", forces, "meV/Å"))
)

_RMD17_KEY = re.compile(r"^rmd17[-_](?P<molecule>[a-z_-]+)$", re.IGNORECASE)
_ACAC_KEY = re.compile(r"^acac-(?P<test_set>.+)$")

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


def rmd17_molecule(dataset: str) -> str | None:
    """The molecule of an rMD17 dataset key like ``"rmd17-aspirin"``; None for other keys."""
    match = _RMD17_KEY.match(dataset)
    return None if match is None else match.group("molecule").lower()


def literature_for(dataset: str) -> list[LiteratureValue]:
    """Published values that belong to the dataset key ``dataset`` (may be empty)."""
    target = qm9_target(dataset)
    if target is not None:
        return [e for e in LITERATURE if e.family == "qm9" and e.target == target]
    molecule = rmd17_molecule(dataset)
    if molecule is not None:
        return [e for e in LITERATURE if e.family == "rmd17" and e.target == molecule]
    match = _ACAC_KEY.match(dataset)
    if match is not None:
        return [e for e in LITERATURE if e.family == "acac" and e.target == match["test_set"]]
    return []


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
    "mev/å": "meV/Å",
    "mev/a": "meV/Å",
    "mev/ang": "meV/Å",
    "ev/å": "eV/Å",
    "ev/a": "eV/Å",
}

# factor that converts the first unit into the second
_CONVERSIONS = {
    ("eV", "meV"): 1000.0,
    ("meV", "eV"): 1e-3,
    ("eV/Å", "meV/Å"): 1000.0,
    ("meV/Å", "eV/Å"): 1e-3,
}


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
