"""Safe loading stays on (issue 19): importing the package, mace-torch and e3nn through it
leaves ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` unset, so ``torch.load`` of a malicious pickle
refuses instead of running its code, in this process and in every job it starts."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = r"""
import os, sys
import torch

class Payload:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[2],))

torch.save({"weights": torch.ones(2), "payload": Payload()}, sys.argv[1])

import fusion
assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ, "import fusion set it"
import fusion.cli
from fusion.models.registry import model_names
from fusion.data.registry import dataset_keys
import fusion.train.trainer
import fusion.dynamics.calculator
model_names(), dataset_keys()  # imports every model (mace, e3nn) and dataset module
import mace, e3nn
from e3nn import o3
assert o3.wigner_3j(1, 1, 1).shape == (3, 3, 3)  # e3nn's constants loaded
flag = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
print("flag", flag)
try:
    torch.load(sys.argv[1])
except Exception as err:
    print("refused", type(err).__name__)
print("child", os.popen("env").read().count("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"))
"""


def test_importing_fusion_leaves_safe_loading_on(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"}
    marker = tmp_path / "code-ran"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "evil.pt"), str(marker)],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines == ["flag None", "refused UnpicklingError", "child 0"], proc.stdout
    assert not marker.exists()  # the pickle's code never ran
