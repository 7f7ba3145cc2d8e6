"""docs/reliability.md cannot drift from the tests.

Both tables (faults survived, bad-input catalogue) name a test per row as
``path::function``; the function must be defined in that file (read with ``ast``, no
import). Every `quoted` fragment in a catalogue row's message must appear in that test
file, literally or once the regex escapes and Python string-literal joins of the file are
undone. The stated counts must equal the rows, and every kind of bad input issue 10 asks
for must have a row.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs/reliability.md"
KINDS = {
    "config schema",
    "unknown names",
    "missing files",
    "corrupt caches/archives",
    "frames without labels",
    "NaN data",
    "wrong shapes",
    "impossible irreps",
    "bad CLI arguments",
    "bad run specs",
}
NODE_ID = re.compile(r"^`(tests/[\w/]+\.py)::(\w+)`$")


def table(heading: str) -> list[list[str]]:
    """Rows (cells stripped) of the first table after ``## heading``."""
    text = DOC.read_text()
    section = text.split(f"\n## {heading}\n", 1)[1]
    rows, started = [], False
    for line in section.splitlines():
        if line.startswith("|"):
            started = True
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows.append(cells)
        elif started:
            break
    header, separator, *body = rows
    assert set("".join(separator)) <= {"-", ":"}, separator
    assert all(len(row) == len(header) for row in body), heading
    return body


@cache
def defined_tests(path: str) -> set[str]:
    tree = ast.parse((REPO / path).read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    }


@cache
def searchable_texts(path: str) -> tuple[str, ...]:
    """The test file as written, without regex/string escapes, and with adjacent string
    literals joined (a message split over two source lines)."""
    raw = (REPO / path).read_text()
    joined = re.sub(r"""(["'])\s*\)?\s*\n\s*(?:\w+=)?\(?[rfb]*(["'])""", "", raw)
    variants = [raw, joined]
    for text in (raw, joined):
        variants.append(re.sub(r"\\(.)", r"\1", text))
    return tuple(variants)


def node(cell: str) -> tuple[str, str]:
    match = NODE_ID.match(cell)
    assert match, f"not a test id `tests/...py::test_name`: {cell!r}"
    return match.group(1), match.group(2)


FAULTS = table("Faults survived")
CATALOGUE = table("Bad-input catalogue")


def test_stated_counts_match_the_tables():
    text = DOC.read_text()
    stated = re.search(r"\*\*(\d+) faults survived, (\d+) bad inputs tried\.\*\*", text)
    assert stated, "the counts line is missing"
    assert int(stated.group(1)) == len(FAULTS)
    assert int(stated.group(2)) == len(CATALOGUE)
    assert [int(row[0]) for row in FAULTS] == list(range(1, len(FAULTS) + 1))
    assert [int(row[0]) for row in CATALOGUE] == list(range(1, len(CATALOGUE) + 1))


def test_every_kind_of_bad_input_has_rows():
    kinds = [row[1] for row in CATALOGUE]
    assert set(kinds) == KINDS, set(kinds) ^ KINDS


@pytest.mark.parametrize("row", FAULTS, ids=lambda row: f"fault-{row[0]}")
def test_every_fault_names_an_existing_test(row):
    path, function = node(row[-1])
    assert function in defined_tests(path), f"{path} defines no {function}"


@pytest.mark.parametrize("row", CATALOGUE, ids=lambda row: f"input-{row[0]}")
def test_every_catalogue_row_is_backed_by_its_test(row):
    path, function = node(row[-1])
    assert function in defined_tests(path), f"{path} defines no {function}"
    fragments = re.findall(r"`([^`]+)`", row[3])
    assert fragments, f"row {row[0]}: no `quoted` message fragment to check"
    texts = searchable_texts(path)
    for fragment in fragments:
        assert any(fragment in text for text in texts), (
            f"row {row[0]}: {fragment!r} does not appear in {path}"
        )


def test_other_tests_named_in_the_page_exist():
    text = DOC.read_text()
    for path, function in re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", text):
        assert function in defined_tests(path), f"{path} defines no {function}"


def test_the_checker_rejects_drift():
    """A fragment that no test asserts, and a test that does not exist, are caught."""
    texts = searchable_texts("tests/reliability/test_faults.py")
    assert not any("checkpoint is fine, carry on" in text for text in texts)
    assert "test_no_such_test" not in defined_tests("tests/reliability/test_faults.py")
    with pytest.raises(AssertionError, match="not a test id"):
        node("`tests/reliability/test_faults.py::`")
