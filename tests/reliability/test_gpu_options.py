"""GPU options from the config: device selection, mixed precision, cuEquivariance kernels.

This machine has no GPU, so the CUDA paths are checked for configuration and error handling
only: every test here passes on a CPU-only machine and checks what a user on one sees. The
CUDA branches that need a device are marked by which assertion depends on
``torch.cuda.is_available()``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fusion._mace_first  # noqa: F401  (mace before e3nn)
from fusion.models import mace as mace_models
from fusion.models.registry import ModelStats, build_model, count_parameters
from fusion.train.trainer import TrainConfig, resolve_device

STATS = ModelStats(
    elements=(1, 6, 8), atomic_energies=np.array([-13.6, -1029.0, -2041.0]), avg_num_neighbors=4
)
TINY_MACE = {"num_channels": 4, "max_L": 0, "max_ell": 1, "correlation": 2, "radial_MLP": [4]}


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:0", "cuda:3", "auto"])
def test_device_names_accepted_by_the_config(device):
    assert TrainConfig(device=device).device == device


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:-1", "cuda:x", "CUDA", "cuda0", 0])
def test_bad_device_names_the_field_and_the_choices(device):
    with pytest.raises(ValueError) as err:
        TrainConfig(device=device)
    message = str(err.value)
    assert message.startswith("TrainConfig.device: expected one of ['cpu', 'cuda', 'auto']")
    assert "'cuda:N' (N = 0, 1, ...)" in message and repr(device) in message


def test_auto_resolves_to_what_torch_sees():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


def test_missing_gpu_number_is_named():
    # On a CPU machine: no CUDA at all; on a GPU machine: an index past the last device.
    with pytest.raises(RuntimeError) as err:
        resolve_device("cuda:99")
    message = str(err.value)
    assert "TrainConfig.device is 'cuda:99' but torch sees" in message
    if not torch.cuda.is_available():
        assert message.endswith("torch sees no CUDA device")
    else:
        assert f"only {torch.cuda.device_count()} CUDA device(s)" in message


def test_amp_config_validation():
    config = TrainConfig(amp=True, dtype="float32", device="cuda")
    assert config.amp and config.amp_dtype == "bfloat16"
    assert TrainConfig(amp=True, amp_dtype="float16", dtype="float32").amp_dtype == "float16"
    assert TrainConfig().amp is False  # off by default
    with pytest.raises(ValueError, match=r"TrainConfig\.amp: expected true or false, got 1"):
        TrainConfig(amp=1, dtype="float32")
    with pytest.raises(
        ValueError,
        match=r"TrainConfig\.amp_dtype: expected one of \['bfloat16', 'float16'\], got 'fp8'",
    ):
        TrainConfig(amp=True, amp_dtype="fp8", dtype="float32")
    with pytest.raises(ValueError) as err:
        TrainConfig(amp=True, dtype="float64")
    assert str(err.value).startswith("TrainConfig.amp: expected false when dtype is 'float64'")
    assert "set dtype: float32" in str(err.value)


def test_amp_on_cpu_stops_before_training_with_a_clear_message(toy, tmp_path):
    config = {"amp": True, "dtype": "float32", "device": "cpu", "epochs": 2}
    with pytest.raises(ValueError) as err:
        toy.run(tmp_path, config=config)
    assert str(err.value) == (
        "training.amp is true but the run's device is 'cpu' (training.device='cpu'): mixed "
        "precision (autocast) runs on CUDA only; set training.amp: false or train on a GPU"
    )
    assert not (tmp_path / "checkpoint.pt").exists()  # nothing ran, nothing written


def test_amp_with_auto_device_on_a_cpu_machine(toy, tmp_path):
    config = {"amp": True, "dtype": "float32", "device": "auto", "epochs": 1}
    if torch.cuda.is_available():  # a GPU machine: autocast on CUDA trains
        metrics = toy.run(tmp_path, config=config)
        assert np.isfinite(metrics["test"]["mae"])
    else:
        with pytest.raises(ValueError, match=r"device is 'cpu' \(training.device='auto'\)"):
            toy.run(tmp_path, config=config)


def test_amp_off_on_cpu_trains_in_float32(toy, tmp_path):
    metrics = toy.run(tmp_path, config={"amp": False, "dtype": "float32", "epochs": 2})
    assert np.isfinite(metrics["test"]["mae"]) and metrics["train"]["epochs"] == 2


def test_enable_cueq_without_the_package_names_it(monkeypatch):
    real_find_spec = mace_models.importlib.util.find_spec

    def find_spec_without_cueq(name, *args):
        return None if name.startswith("cuequivariance") else real_find_spec(name, *args)

    monkeypatch.setattr(mace_models.importlib.util, "find_spec", find_spec_without_cueq)
    with pytest.raises(ValueError) as err:
        build_model("mace", "baseline", {**TINY_MACE, "enable_cueq": True}, STATS)
    message = str(err.value)
    assert message.startswith(
        "MACE hyperparameter enable_cueq=true needs NVIDIA's cuEquivariance packages, but "
        "['cuequivariance', 'cuequivariance_torch'] cannot be imported"
    )
    assert "pip install cuequivariance-torch cuequivariance-ops-torch-cu12" in message


def test_enable_cueq_without_a_gpu_says_so(monkeypatch):
    # As if the packages were installed, on a machine whose torch sees no GPU.
    monkeypatch.setattr(mace_models, "cueq_available", lambda: True)
    monkeypatch.setattr(mace_models.torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="enable_cueq=true needs a CUDA GPU .* but torch sees "
                       "none; set enable_cueq: false on CPU"):  # fmt: skip
        build_model("mace", "baseline", {**TINY_MACE, "enable_cueq": True}, STATS)


def test_enable_cueq_false_is_the_plain_e3nn_model():
    plain = build_model("mace", "baseline", TINY_MACE, STATS)
    explicit = build_model("mace", "baseline", {**TINY_MACE, "enable_cueq": False}, STATS)
    assert count_parameters(plain) == count_parameters(explicit)
    assert type(plain.mace) is type(explicit.mace)
    with pytest.raises(ValueError, match="enable_cueq: expected true or false, got 'yes'"):
        build_model("mace", "baseline", {**TINY_MACE, "enable_cueq": "yes"}, STATS)


def test_enable_cueq_is_a_baseline_option_only():
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) \['enable_cueq'\]"):
        build_model("mace", "fusion", {**TINY_MACE, "enable_cueq": True}, STATS)
