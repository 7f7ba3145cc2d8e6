"""README tables that cannot drift from the committed result tables.

A generated block in README.md is

    <!-- generated from results/study/tables/study.md -->
    ...the file's contents...
    <!-- end generated -->

``fusion readme`` rewrites every block from its file; ``fusion readme --check`` (and the test
suite) fails naming each block whose text differs from its file. ``<path>#table`` shows only
the file's table lines (e.g. a front page without its title and note).
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["BLOCK", "render_readme", "stale_blocks"]

BLOCK = re.compile(
    r"(<!-- generated from (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S
)


def _source(root: Path, rel: str) -> str:
    """The text a block shows: the file, or only its table lines for ``<path>#table``."""
    rel, _, part = rel.partition("#")
    path = root / rel
    if not path.is_file():
        raise FileNotFoundError(f"README block names {rel}, which does not exist under {root}")
    text = path.read_text(encoding="utf-8")
    if part == "table":
        text = "\n".join(line for line in text.splitlines() if line.startswith("|"))
    elif part:
        raise ValueError(f"README block {rel}#{part}: unknown part {part!r} (known: table)")
    return text.rstrip("\n") + "\n"


def render_readme(text: str, root: str | Path = ".") -> str:
    """``text`` with every generated block replaced by its file's contents."""
    root = Path(root)
    return BLOCK.sub(lambda m: m.group(1) + _source(root, m["path"]) + m.group(4), text)


def stale_blocks(text: str, root: str | Path = ".") -> list[str]:
    """Paths of the generated blocks whose text differs from their file."""
    root = Path(root)
    return [m["path"] for m in BLOCK.finditer(text) if m["body"] != _source(root, m["path"])]
