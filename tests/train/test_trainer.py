"""The trainer on a toy problem: learning, determinism, log.csv, forces, EMA, schedules,
early stopping, divergence."""

import csv
import math

import pytest
import torch

from fusion.train.checkpoint import read_checkpoint
from fusion.train.losses import compute_loss
from fusion.train.trainer import (
    EMA,
    LOG_COLUMNS,
    LRSchedule,
    TrainConfig,
    TrainingDivergedError,
    evaluate,
)

TIMING = ("seconds_per_epoch", "wall_seconds")


def read_log(workdir):
    with open(workdir / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def strip_timing(metrics):
    """Everything that must be bit-identical between two runs (not times, not memory)."""
    return {
        "val": metrics["val"],
        "test": metrics["test"],
        "units": metrics["units"],
        "train": {k: v for k, v in metrics["train"].items() if k not in TIMING},
    }


def test_loss_decreases_on_learnable_problem(toy, tmp_path):
    metrics = toy.run(tmp_path, config={"epochs": 12, "ema": False})
    rows = read_log(tmp_path)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 13))
    first, last = float(rows[0]["train_loss"]), float(rows[-1]["train_loss"])
    assert last < 0.3 * first
    assert float(rows[-1]["val_mae"]) < 0.7 * float(rows[0]["val_mae"])
    assert metrics["val"]["mae"] == pytest.approx(min(float(r["val_mae"]) for r in rows))


def test_metrics_fragment_layout(toy, reference):
    m = reference["metrics"]
    assert set(m) == {"test", "val", "train", "inference", "peak_memory_mb", "units"}
    for split in ("val", "test"):
        assert set(m[split]) == {
            "mae", "rmse", "mae_per_atom", "forces_mae", "forces_rmse", "n_structures",
        }  # fmt: skip
        assert m[split]["n_structures"] == 16
        assert m[split]["rmse"] >= m[split]["mae"] > m[split]["mae_per_atom"] > 0
        assert m[split]["forces_mae"] is None
    assert m["train"]["n_structures"] == 32
    assert m["train"]["epochs"] == 6
    assert 1 <= m["train"]["best_epoch"] <= 6
    assert m["train"]["seconds_per_epoch"] > 0
    assert m["train"]["wall_seconds"] >= 6 * m["train"]["seconds_per_epoch"] * 0.5
    assert m["inference"]["structures_per_second"] > 0
    assert m["peak_memory_mb"] > 10
    assert m["units"] == {"y": "meV", "y_per_atom": "meV/atom", "forces": "meV/Å"}


def test_same_seed_gives_identical_results(toy, tmp_path, reference):
    metrics = toy.run(tmp_path)
    assert strip_timing(metrics) == strip_timing(reference["metrics"])
    best = torch.load(tmp_path / "model.pt", weights_only=True)
    assert all(torch.equal(best[k], reference["model"][k]) for k in best)


def test_other_seed_gives_other_results(toy, tmp_path, reference):
    metrics = toy.run(tmp_path, config={"seed": 1})
    assert metrics["val"]["mae"] != reference["metrics"]["val"]["mae"]


def test_model_pt_holds_the_evaluated_best_weights(toy, tmp_path, reference):
    """model.pt (EMA weights of the best epoch) reproduces the reported val/test errors."""
    model = toy.ToyModel(dropout=0.1).double()
    model.load_state_dict(reference["model"])
    _, val_loader, test_loader = toy.loaders()
    for name, loader in (("val", val_loader), ("test", test_loader)):
        res = evaluate(model, loader, report_factor=1000.0)
        assert res["mae"] == reference["metrics"][name]["mae"]


def test_log_csv_rows_and_eval_every(toy, tmp_path):
    toy.run(tmp_path, config={"epochs": 5, "eval_every": 2, "scheduler": "none", "lr": 0.005})
    with open(tmp_path / "log.csv", newline="") as f:
        header = next(csv.reader(f))
    assert tuple(header) == LOG_COLUMNS
    rows = read_log(tmp_path)
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4", "5"]
    validated = [r["epoch"] for r in rows if r["val_mae"]]
    assert validated == ["2", "4", "5"]  # every 2nd epoch and always the last one
    assert all(float(r["lr"]) == 0.005 for r in rows)
    assert all(r["val_forces_mae"] == "" for r in rows)
    assert all(float(r["seconds"]) > 0 and math.isfinite(float(r["train_loss"])) for r in rows)


def test_cosine_schedule_with_warmup_in_log(toy, tmp_path):
    toy.run(tmp_path, config={"epochs": 6, "warmup_epochs": 2, "lr": 0.01, "min_lr": 0.001})
    lrs = [float(r["lr"]) for r in read_log(tmp_path)]
    expected = [0.005, 0.01] + [
        0.001 + 0.009 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)
    ]
    assert lrs == pytest.approx(expected, rel=1e-12)


def test_cosine_batch_schedule_is_torch_cosine_stepped_every_minibatch(toy, tmp_path,
                                                                       monkeypatch):
    """'cosine-batch' = torch's CosineAnnealingLR over all optimiser steps (the reference
    Cormorant's schedule), and the optimiser sees a new rate at every minibatch."""
    config = TrainConfig(scheduler="cosine-batch", epochs=3, lr=0.01, min_lr=0.001)
    sched, n = LRSchedule(config), 4
    ours = [sched.lr_for_step(e, b, n) for e in range(1, 4) for b in range(1, n + 1)]
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=0.01, amsgrad=True)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3 * n, eta_min=0.001)
    expected = []
    for _ in range(3 * n):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        cosine.step()
    assert ours == pytest.approx(expected, rel=1e-12)
    seen = []
    original = torch.optim.Adam.step

    def record(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", record)
    toy.run(tmp_path, config={"epochs": 3, "scheduler": "cosine-batch", "lr": 0.01,
                              "min_lr": 0.001, "ema": False})
    n_batches = len(seen) // 3
    assert n_batches > 1 and len(set(seen)) == len(seen)  # a new rate every step
    sched_run = LRSchedule(TrainConfig(scheduler="cosine-batch", epochs=3, lr=0.01,
                                       min_lr=0.001))
    assert seen == pytest.approx([sched_run.lr_for_step(e, b, n_batches) for e in range(1, 4)
                                  for b in range(1, n_batches + 1)], rel=1e-12)


def test_plateau_schedule_reduces_lr_after_patience():
    sched = LRSchedule(TrainConfig(scheduler="plateau", lr=0.1, plateau_patience=1,
                                   plateau_factor=0.5, min_lr=0.02))  # fmt: skip
    sched.step(1.0)
    sched.step(1.0)  # 1 bad validation: within patience
    assert sched.lr_for_epoch(3) == 0.1
    sched.step(1.0)  # 2 bad > patience 1: reduce
    assert sched.lr_for_epoch(4) == 0.05
    sched.step(0.5)  # improvement resets the count
    sched.step(0.5)
    assert sched.lr_for_epoch(5) == 0.05
    for _ in range(6):
        sched.step(0.5)
    assert sched.lr_for_epoch(6) == 0.02  # never below min_lr
    restored = LRSchedule(sched.config)
    restored.load_state_dict(sched.state_dict())
    assert restored.state_dict() == sched.state_dict()


def test_ema_update_and_swap():
    p = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    ema = EMA([p], decay=0.9)
    with torch.no_grad():
        p.fill_(1.0)
    ema.update()  # decay = min(0.9, 2/11)
    d = 2 / 11
    assert torch.allclose(ema.shadow[0], torch.full((2,), 1 - d, dtype=torch.float64))
    with ema.applied():
        assert torch.equal(p.detach(), ema.shadow[0])
    assert torch.equal(p.detach(), torch.ones(2, dtype=torch.float64))


def test_ema_changes_the_evaluated_model(toy, tmp_path, reference):
    metrics = toy.run(tmp_path, config={"ema": False})
    assert metrics["val"]["mae"] != reference["metrics"]["val"]["mae"]


def test_early_stopping_on_validation_mae(toy, tmp_path):
    # lr far below float64 resolution of the weights: validation MAE never improves.
    cfg = {"epochs": 10, "lr": 1e-30, "patience": 2, "scheduler": "none", "ema": False}
    lines = []
    metrics = toy.run(tmp_path, config=cfg, log=lines.append)
    assert metrics["train"]["epochs"] == 3
    assert metrics["train"]["best_epoch"] == 1
    assert metrics["train"]["stopped_early"] is True
    assert any("early stopping after epoch 3" in line for line in lines)
    assert len(read_log(tmp_path)) == 3
    # Running again resumes the finished run: no more epochs, same answer.
    again = toy.run(tmp_path, config=cfg)
    assert strip_timing(again) == strip_timing(metrics)


def test_forces_loss_path(toy, tmp_path):
    torch.manual_seed(0)
    untrained = toy.ToyModel(dropout=0.1).double()
    _, val_loader, _ = toy.loaders(with_forces=True)
    initial = evaluate(untrained, val_loader)["forces_mae"]

    cfg = {"epochs": 8, "energy_weight": 0.01, "forces_weight": 1.0, "ema": False}
    metrics = toy.run(tmp_path / "f", config=cfg, with_forces=True)
    f_mae = [float(r["val_forces_mae"]) for r in read_log(tmp_path / "f")]
    assert f_mae[-1] < 0.8 * initial
    for split in ("val", "test"):
        assert metrics[split]["forces_rmse"] >= metrics[split]["forces_mae"] > 0
    # forces_weight 0: forces are still evaluated but not learned.
    no_f = toy.run(tmp_path / "e", config={**cfg, "forces_weight": 0.0}, with_forces=True)
    assert no_f["val"]["forces_mae"] > 2 * metrics["val"]["forces_mae"]
    # monitor="forces_mae" selects the best epoch by the forces error.
    by_f = toy.run(tmp_path / "m", config={**cfg, "monitor": "forces_mae"}, with_forces=True)
    assert by_f["val"]["forces_mae"] == pytest.approx(min(f_mae), rel=1e-12)


def test_model_without_forces_on_force_batches(toy, tmp_path):
    metrics = toy.run(
        tmp_path, config={"epochs": 2}, with_forces=True, model_cls=toy.EnergyOnlyModel
    )
    assert metrics["val"]["forces_mae"] is None
    assert metrics["val"]["mae"] > 0


def test_compute_loss_values():
    out = {"energy": torch.tensor([1.0, 2.0]), "forces": torch.ones(3, 3)}
    batch = {"y": torch.zeros(2), "forces": torch.zeros(3, 3)}
    loss, parts = compute_loss(out, batch, energy_weight=1.0, forces_weight=0.0, target_scale=2.0)
    assert parts == {"energy": pytest.approx(0.625), "forces": None}  # mean(0.5^2, 1^2)
    loss, parts = compute_loss(out, batch, energy_weight=2.0, forces_weight=3.0, target_scale=2.0)
    assert parts["forces"] == pytest.approx(0.25)
    assert float(loss) == pytest.approx(2 * 0.625 + 3 * 0.25)
    loss, _ = compute_loss(out, batch, kind="huber", huber_delta=0.5)
    # huber(1) = 0.5*(1 - 0.25), huber(2) = 0.5*(2 - 0.25) -> mean 0.625
    assert float(loss) == pytest.approx(0.625)
    with pytest.raises(ValueError, match="shape"):
        compute_loss({"energy": torch.zeros(3)}, {"y": torch.zeros(2)})


def test_nan_loss_raises_and_keeps_last_good_checkpoint(toy, tmp_path, reference):
    def poison(epoch, b, batch):
        if (epoch, b) == (3, 2):
            batch["y"] = batch["y"].clone()
            batch["y"][0] = float("nan")
        return batch

    with pytest.raises(TrainingDivergedError) as err:
        toy.run(tmp_path, train_hook=poison)
    message = str(err.value)
    assert "epoch 3" in message and "batch 2" in message
    assert str(tmp_path / "checkpoint.pt") in message
    assert (err.value.epoch, err.value.batch) == (3, 2)
    assert read_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 2
    assert read_checkpoint(tmp_path / "checkpoint.prev.pt")["epoch"] == 1
    assert len(read_log(tmp_path)) == 2
    # The kept checkpoint is good: resuming without the fault ends as the clean run does.
    metrics = toy.run(tmp_path)
    assert strip_timing(metrics) == strip_timing(reference["metrics"])


def test_torch_settings_restored(toy, tmp_path):
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    toy.run(tmp_path, config={"epochs": 1, "dtype": "float64", "threads": 1})
    assert torch.get_default_dtype() == dtype
    assert torch.get_num_threads() == threads


def test_float32_training(toy, tmp_path):
    metrics = toy.run(tmp_path, config={"epochs": 2, "dtype": "float32"})
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert all(v.dtype == torch.float32 for v in state.values())
    assert math.isfinite(metrics["test"]["mae"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda(toy, tmp_path):
    with pytest.raises(RuntimeError, match="no CUDA device"):
        toy.run(tmp_path, config={"device": "cuda"})
