"""The SLURM profile: which jobs the paper grid submits and what each asks for, without a
cluster.

A dry run with ``--profile workflow/profiles/slurm`` prints every job with its resources
(after the profile's defaults and per-rule settings); each job is then turned into the
``sbatch`` call by snakemake-executor-plugin-slurm's own functions (``get_submit_command``,
``set_gres_string``, ``validate_slurm_extra``), i.e. exactly the flags the plugin would
submit, minus the job name, log file and account, which depend on the cluster.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string
from snakemake_executor_plugin_slurm.validation import validate_slurm_extra

from tests.workflow.test_workflow import n_train_runs

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PROFILE = REPO / "workflow/profiles/slurm/config.yaml"


class Resources(dict):
    """A job's resources with attribute access, as the plugin reads them."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as err:
            raise AttributeError(name) from err


def _value(text: str):
    return int(text) if re.fullmatch(r"-?\d+", text) else text


def dry_run_jobs(config: str, tmp_path: Path) -> list[dict]:
    """Jobs of ``snakemake --profile workflow/profiles/slurm --configfile <config> -n``:
    ``{"rule", "wildcards", "resources", "shell"}`` each (``all`` left out)."""
    for name in ("Snakefile", "environment.yml"):
        shutil.copy(REPO / name, tmp_path / name)
    for name in ("workflow", "config"):
        shutil.copytree(REPO / name, tmp_path / name)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(
        [str(BIN / "snakemake"), "--profile", "workflow/profiles/slurm",
         "--configfile", f"config/{config}", "--dry-run"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Using profile workflow/profiles/slurm" in out
    jobs = []
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", out)[1:]:
        rule = re.search(r"^(?:local)?rule (\S+):", block, re.M).group(1)
        if rule == "all":
            continue
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        resources = re.search(r"^\s+resources: (.*)$", block, re.M).group(1)
        shell = re.search(r"^Shell command: (.*)$", block, re.M)
        jobs.append(
            {
                "rule": rule,
                "wildcards": dict(kv.split("=", 1) for kv in wildcards.group(1).split(", "))
                if wildcards
                else {},
                "resources": Resources(
                    (k, _value(v)) for k, v in (kv.split("=", 1) for kv in resources.split(", "))
                ),
                "shell": shell.group(1) if shell else "",
            }
        )
    return jobs


def sbatch_call(job: dict) -> str:
    """The sbatch flags snakemake-executor-plugin-slurm 2.x builds for ``job``."""
    resources = job["resources"]
    shim = SimpleNamespace(
        resources=resources, threads=1, name=job["rule"], is_group=lambda: False
    )
    validate_slurm_extra(shim)  # raises on --gres/--mem/... smuggled into slurm_extra
    partition = resources.get("slurm_partition")
    params = {
        "run_uuid": "RUN",
        "slurm_logfile": "LOG",
        "comment_str": f"rule_{job['rule']}",
        "account": "",
        "partition": f"-p {partition}" if partition else "",
        "workdir": "",
    }
    return get_submit_command(shim, params) + set_gres_string(shim)


@pytest.fixture(scope="module")
def paper_jobs(tmp_path_factory):
    return dry_run_jobs("config.yaml", tmp_path_factory.mktemp("slurm"))


def test_paper_grid_fans_out_one_train_job_per_run(paper_jobs):
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    overrides = config.get("dataset_overrides", {})
    expected = {
        (d, m, v, str(s))
        for d in config["datasets"]
        for m, variants in overrides.get(d, {}).get("models", config["models"]).items()
        for v in variants
        for s in config["seeds"]
    }
    train = [job["wildcards"] for job in paper_jobs if job["rule"] == "train"]
    runs = [(w["dataset"], w["model"], w["variant"], w["seed"]) for w in train]
    assert len(runs) == len(set(runs)) == len(expected)
    assert set(runs) == expected
    # every model family of the study is in the paper grid
    assert {m for _, m, _, _ in runs} == {"mace", "cormorant", "unite"}


def test_train_jobs_ask_for_a_gpu_memory_time_and_the_configured_threads(paper_jobs):
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    train = [job for job in paper_jobs if job["rule"] == "train"]
    for job in train:
        call = sbatch_call(job)
        assert f" --gpus={config['gpus_per_job']}" in call, call
        assert " --mem 32000" in call and " -t 1440" in call, call
        assert "--gres" not in call  # one way of asking for GPUs, not two
        spec = json.loads(job["shell"].split("--spec ", 1)[1].split("' ")[0].strip("'"))
        # SLURM reserves as many CPUs as the job's torch threads use.
        assert f" --cpus-per-task={spec['threads']}" in call, (call, spec["threads"])


def test_aggregate_and_light_jobs_ask_for_no_gpu(paper_jobs):
    light = {"aggregate", "figures", "dataset_cards", "composition_baseline"}
    seen = set()
    for job in paper_jobs:
        if job["rule"] not in light:
            continue
        seen.add(job["rule"])
        call = sbatch_call(job)
        assert "--gpus" not in call and "--gres" not in call, call
        assert " --mem 4000" in call and " -t 60" in call and " --cpus-per-task=1" in call
        assert " --ntasks=1" in call
    assert seen == light


def test_dataset_preparation_gets_more_memory(paper_jobs):
    prepare = [job for job in paper_jobs if job["rule"] in ("prepare_dataset", "qm9xtb_shard")]
    assert {job["rule"] for job in prepare} == {"prepare_dataset", "qm9xtb_shard"}
    for job in prepare:
        call = sbatch_call(job)
        assert " --mem 16000" in call and " -t 240" in call and "--gpus" not in call, call


def test_profile_sets_no_forbidden_or_conflicting_options():
    profile = yaml.safe_load(PROFILE.read_text())
    assert profile["executor"] == "slurm"
    for rule, resources in {"default": profile["default-resources"],
                            **profile["set-resources"]}.items():  # fmt: skip
        assert "slurm_extra" not in resources, rule
        assert "gres" not in resources and "gpu" not in resources, rule  # GPUs: from config
        assert isinstance(resources.get("mem_mb", 0), int), rule


def test_smuggled_gres_in_slurm_extra_is_rejected_by_the_plugin():
    """What the previous profile did (slurm_extra: --gres=gpu:1): the plugin refuses it."""
    job = {"rule": "train", "resources": Resources(mem_mb=1000, runtime=5,
                                                   slurm_extra="--gres=gpu:1")}  # fmt: skip
    with pytest.raises(Exception, match="generic resources"):
        sbatch_call(job)


def test_a_cpu_config_submits_no_gpu_jobs(tmp_path):
    """The same profile with config/test.yaml (gpus_per_job: 0): CPU-only train jobs."""
    jobs = dry_run_jobs("test.yaml", tmp_path)
    train = [job for job in jobs if job["rule"] == "train"]
    config = yaml.safe_load((REPO / "config/test.yaml").read_text())
    assert config["gpus_per_job"] == 0
    assert len(train) == n_train_runs(config)
    for job in train:
        call = sbatch_call(job)
        assert "--gpus" not in call and "--gres" not in call and " --ntasks=1" in call, call
