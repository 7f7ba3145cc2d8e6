"""The worked examples in docs/fusion-diagrams.md and fusion.diagrams run as shown."""

import fusion._mace_first  # noqa: F401  (mace before e3nn)

# isort: split

import doctest
from pathlib import Path

import fusion.diagrams
import fusion.diagrams.tree

DOC = Path(__file__).resolve().parents[2] / "docs" / "fusion-diagrams.md"
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def test_package_docstring_example():
    result = doctest.testmod(fusion.diagrams, optionflags=FLAGS)
    assert result.attempted > 5 and result.failed == 0


def test_tree_docstrings():
    result = doctest.testmod(fusion.diagrams.tree, optionflags=FLAGS)
    assert result.attempted > 0 and result.failed == 0


def test_docs_page_examples():
    result = doctest.testfile(str(DOC), module_relative=False, optionflags=FLAGS)
    assert result.attempted > 15 and result.failed == 0
