"""README.md's result tables are generated from the committed tables and cannot drift."""

from __future__ import annotations

from pathlib import Path

import pytest

from fusion.analysis.readme import render_readme, stale_blocks
from fusion.cli import main as cli_main

REPO = Path(__file__).resolve().parents[2]


def test_readme_tables_equal_the_committed_tables():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert "<!-- generated from results/study/tables/study.md -->" in text
    assert stale_blocks(text, REPO) == []


def test_a_changed_table_is_caught_and_rewritten(tmp_path, capsys):
    (tmp_path / "t.md").write_text("| a | b |\n|---|---|\n| 1 | 2 |\n")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- generated from t.md -->\n| a | b |\n|---|---|\n| 1 | 3 |\n"
                      "<!-- end generated -->\nrest\n")
    assert stale_blocks(readme.read_text(), tmp_path) == ["t.md"]
    assert cli_main(["readme", "--readme", str(readme), "--check"]) == 2
    assert "generated block(s) differ from t.md" in capsys.readouterr().err
    assert cli_main(["readme", "--readme", str(readme)]) == 0
    assert readme.read_text() == ("intro\n<!-- generated from t.md -->\n| a | b |\n|---|---|\n"
                                  "| 1 | 2 |\n<!-- end generated -->\nrest\n")
    assert cli_main(["readme", "--readme", str(readme), "--check"]) == 0
    (tmp_path / "page.md").write_text("# Title\n\nA note.\n\n| x |\n|---|\n| 5 |\n")
    assert render_readme("<!-- generated from page.md#table -->\n<!-- end generated -->",
                         tmp_path) == ("<!-- generated from page.md#table -->\n| x |\n|---|\n"
                                       "| 5 |\n<!-- end generated -->")
    with pytest.raises(FileNotFoundError, match="names gone.md, which does not exist"):
        render_readme("<!-- generated from gone.md -->\nx\n<!-- end generated -->", tmp_path)
