"""Every rule's shell line with hostile paths: nothing is run that the config only names.

A dry run (``--printshellcmds``) renders the shell command of every rule of the workflow
with a ``cache_dir`` holding spaces, quotes, ``$(...)``, backticks and ``;``. Each command is
then run by bash (``set -euo pipefail``, as Snakemake runs it) with stand-ins for ``fusion``,
``python`` and ``cp`` that record their arguments: the hostile value must arrive as one argument,
unchanged, and none of the embedded commands may run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fusion.workflow_config import config_path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HOSTILE = """res dir $(touch PWNED) `touch PWNED2` 'q' "dq" ;touch PWNED3 #x"""

STAND_IN = """#!{python}
import json, os, sys
with open(os.environ["ARGV_RECORD"], "a") as f:
    f.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
"""


def _rules() -> set[str]:
    names = set()
    for path in [REPO / "Snakefile", *sorted((REPO / "workflow/rules").glob("*.smk"))]:
        names |= set(re.findall(r"^rule (\w+):", path.read_text(), flags=re.M))
    return names - {"all"}


def _hostile_workflow(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(REPO / "Snakefile", work / "Snakefile")
    shutil.copy(REPO / "environment.yml", work / "environment.yml")
    shutil.copytree(REPO / "workflow", work / "workflow")
    shutil.copytree(REPO / "config", work / "config")
    (work / "results/benchmarks").mkdir(parents=True)  # product_benchmark_figure's input
    for name in ("product.csv", "product.png"):
        (work / "results/benchmarks" / name).write_text("x")
    (work / "results/study/tables").mkdir(parents=True)  # study_page's input
    (work / "results/study/tables/study.html").write_text("<html></html>")
    config = yaml.safe_load((REPO / "config/test.yaml").read_text())
    config["cache_dir"] = HOSTILE
    config["crosscheck"] = True  # crosscheck_mace
    config["datasets"] += ["qm9xtb-U0"]  # qm9xtb_shard
    config["dataset_overrides"]["qm9xtb-U0"] = {"models": {"unite": ["baseline"]}, "seeds": [0]}
    (work / "hostile.yaml").write_text(yaml.safe_dump(config))
    return work


def test_every_rules_shell_line_passes_hostile_paths_as_one_argument(tmp_path):
    work = _hostile_workflow(tmp_path)
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(
        [str(BIN / "snakemake"), "--configfile", "hostile.yaml", "--dry-run",
         "--printshellcmds", "--cores", "2"],
        cwd=work, env=env, capture_output=True, text=True,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    # One command per rule (the first job of each) is enough: jobs of a rule differ only
    # in wildcard values, which the registries constrain.
    commands, rule = {}, None
    for line in out.splitlines():
        if match := re.match(r"^(?:local)?rule (\w+):$", line.strip()):
            rule = match.group(1)
        elif line.startswith("Shell command: ") and line != "Shell command: None" and (
            rule not in commands
        ):
            commands[rule] = line.removeprefix("Shell command: ")
    # Rules this grid does not schedule: every placeholder of their shell line is quoted.
    for name in _rules() - set(commands):
        text = "".join((REPO / "workflow/rules").joinpath(f).read_text()
                       for f in sorted(os.listdir(REPO / "workflow/rules")))
        shell = re.search(rf"^rule {name}:.*?shell:\n(.*?)\n\n", text, flags=re.M | re.S)
        fields = re.findall(r"{([^{}]*)}", shell.group(1))
        assert fields and all(f.endswith(":q") for f in fields), (name, fields)
    assert set(commands) <= _rules(), set(commands) - _rules()

    stand_ins = tmp_path / "bin"
    stand_ins.mkdir()
    for name in ("fusion", "python", "cp"):
        (stand_ins / name).write_text(STAND_IN.format(python=sys.executable))
        (stand_ins / name).chmod(0o755)
    record = tmp_path / "argv.jsonl"
    for rule, command in sorted(commands.items()):
        log = shlex.split(command)[-1]  # every rule ends in `| tee LOG`
        (work / log).parent.mkdir(parents=True, exist_ok=True)
        run = subprocess.run(
            ["bash", "-c", f"set -euo pipefail; {command}"], cwd=work, capture_output=True,
            text=True, env=dict(os.environ, PATH=f"{stand_ins}{os.pathsep}/usr/bin:/bin",
                                ARGV_RECORD=str(record)),
        )
        assert run.returncode == 0, (rule, command, run.stderr)
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(calls) == len(commands)  # one program per shell line, nothing else
    assert not list(tmp_path.rglob("PWNED*")), "a command embedded in a path was run"
    seen = 0
    for argv in calls:
        if "--cache-dir" in argv:
            assert argv[argv.index("--cache-dir") + 1] == HOSTILE, argv
            seen += 1
        if "--spec" in argv:
            assert json.loads(argv[argv.index("--spec") + 1])["cache_dir"] == HOSTILE, argv
            seen += 1
    # prepare_dataset, qm9xtb_shard, dataset_cards; train, composition, crosscheck, dynamics
    assert seen == 7, calls


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "config: cache_dir must name a directory (such as 'resources'), got ''"),
        ("   ", "config: cache_dir must name a directory (such as 'resources'), got '   '"),
        (None, "config: cache_dir must name a directory (such as 'resources'), got None"),
        ("cache/{family}", "contains a brace; Snakemake reads braces in output paths as"),
        ("cache\nx", "config: cache_dir 'cache\\nx' contains a newline"),
    ],
)
def test_path_values_in_the_config_are_checked(value, message):
    with pytest.raises(ValueError) as err:
        config_path({"cache_dir": value}, "cache_dir", "resources")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_leading_tilde_is_expanded_once_for_workflow_and_shell():
    path = config_path({"cache_dir": "~/fusion-cache"}, "cache_dir", "resources")
    assert path == os.path.join(os.path.expanduser("~"), "fusion-cache")
    assert config_path({}, "cache_dir", "resources") == "resources"
