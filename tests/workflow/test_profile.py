"""The default profile takes effect when Snakemake runs as the README says (issue 19).

Snakemake looks for a workflow profile in ``profiles/default/`` (next to the Snakefile or
in the working directory), not in ``workflow/profiles/``. The README's command, run in a
copy of the repository, must print that it uses the profile and act on its settings: the
shell commands are printed (``printshellcmds``) and an output left incomplete by a killed
job is scheduled again instead of refused (``rerun-incomplete``); with the profile turned
off the same call refuses the incomplete output.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CACHE = "resources/stilbene-tddft/stilbene-tddft.npz"


def _run(work: Path, *args: str) -> str:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(
        [str(BIN / "snakemake"), "--configfile", "config/test.yaml", "--cores", "2",
         "--dry-run", *args, CACHE],
        cwd=work, env=env, capture_output=True, text=True,
    )
    return f"rc={proc.returncode}\n{proc.stdout}{proc.stderr}"


def test_readme_command_loads_the_default_profile(tmp_path):
    readme = (REPO / "README.md").read_text()
    assert "snakemake --configfile config/demo.yaml --cores 2" in readme
    assert "profiles/default/config.yaml" in readme
    settings = yaml.safe_load((REPO / "profiles/default/config.yaml").read_text())
    assert settings["rerun-incomplete"] is True and settings["printshellcmds"] is True

    work = tmp_path / "repo"
    work.mkdir()
    for name in ("Snakefile", "environment.yml"):
        shutil.copy(REPO / name, work / name)
    for name in ("workflow", "config", "profiles"):
        shutil.copytree(REPO / name, work / name)
    # An output a killed job left behind: the file and Snakemake's incomplete marker.
    (work / CACHE).parent.mkdir(parents=True)
    (work / CACHE).write_bytes(b"half")
    marker = work / ".snakemake/incomplete" / base64.urlsafe_b64encode(CACHE.encode()).decode()
    marker.parent.mkdir(parents=True)
    marker.write_text("{}")

    out = _run(work)  # as in the README: no profile option
    assert out.startswith("rc=0\n"), out
    assert "Using workflow specific profile profiles/default" in out
    assert "Shell command: OMP_NUM_THREADS=1 fusion prepare stilbene-tddft" in out
    assert "reason: Forced execution" in out  # rerun-incomplete: the incomplete file is redone

    off = _run(work, "--workflow-profile", "none")
    assert not off.startswith("rc=0\n")
    assert "IncompleteFilesException" in off and "Shell command:" not in off
