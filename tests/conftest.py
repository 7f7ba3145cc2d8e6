"""Shared test set-up.

- Importing ``fusion._mace_first`` first imports mace before e3nn with safe loading left
  on (it allow-lists the one global e3nn 0.4.4's constants need), whatever order a test
  module imports e3nn and mace in.
- One intra-op thread: the tests use small tensors, where threads only add overhead
  (and oversubscribe CI's 2 cores when subprocesses run).
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import fusion._mace_first  # noqa: E402, F401

torch.set_num_threads(1)


@pytest.fixture
def float64_default():
    """torch's default dtype float64 for the test (restored after); model and block tests
    check equivariance and exactness to 1e-10 and below."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture(scope="session")
def toy():
    """tests/train/toy_problem.py (loaded by path): toy model, synthetic batches, ``run()``.

    Used by the trainer tests and the reliability tests.
    """
    import importlib.util
    import sys
    from pathlib import Path

    name = "fusion_train_toy_problem"
    if name not in sys.modules:
        path = Path(__file__).resolve().parent / "train" / "toy_problem.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """config/test.yaml run once, for real, in a copy of the workflow; report built.

    Shared by tests/workflow (pipeline outputs) and tests/report (the HTML report in a
    browser), so the slowest run of the suite happens once. The committed kernel benchmark
    (results/benchmarks/product.{csv,png}) is copied too, so the report has its Kernels page.
    Returns the working directory; results are under ``<dir>/results``.
    """
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    work = tmp_path_factory.mktemp("tiny-study")
    shutil.copy(repo / "Snakefile", work / "Snakefile")
    shutil.copy(repo / "environment.yml", work / "environment.yml")
    shutil.copytree(repo / "workflow", work / "workflow")
    shutil.copytree(repo / "config", work / "config")
    (work / "results" / "benchmarks").mkdir(parents=True)
    for name in ("product.csv", "product.png"):
        shutil.copy(repo / "results" / "benchmarks" / name, work / "results" / "benchmarks")
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    for args in (
        ["--configfile", "config/test.yaml"],
        ["--configfile", "config/test.yaml", "--report", "results/report.html"],
    ):
        proc = subprocess.run(
            [str(bin_dir / "snakemake"), "--cores", "2", *args],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise AssertionError(
                f"snakemake {' '.join(args)} failed in {work}:\n{proc.stdout}\n{proc.stderr}"
            )
    return work
