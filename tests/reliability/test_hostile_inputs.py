"""Inputs of a hostile but fair user (issue 19): run specs naming odd paths, specs of
another model, operating-system errors. Each ends in one ``error:`` line naming the path or
key, and nothing finished is overwritten."""

from __future__ import annotations

import json

import pytest

from fusion.cli import main


def _spec(tmp_path, **changes) -> dict:
    spec = {
        "dataset": "qm9-U0",
        "model": "mace",
        "variant": "baseline",
        "seed": 0,
        "out_dir": str(tmp_path / "run"),
        "cache_dir": str(tmp_path / "no-cache-here"),
    }
    spec.update(changes)
    return spec


@pytest.mark.parametrize(
    ("key", "value"),
    [("out_dir", ""), ("out_dir", "  "), ("cache_dir", ""), ("cache_dir", "~/resources")],
)
def test_run_spec_paths_that_name_no_directory_are_refused(tmp_path, capsys, key, value):
    spec = _spec(tmp_path, **{key: value})
    assert main(["train", "--spec", json.dumps(spec)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: run spec key {key!r} should name a directory (not empty, no leading '~', "
        f"which is not expanded here: give the full path), got {value!r}\n"
    )
    assert not (tmp_path / "no-cache-here").exists()
