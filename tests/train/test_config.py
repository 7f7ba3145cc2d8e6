"""TrainConfig validation: every bad value names the field and what is expected."""

import pytest

from fusion.train.trainer import TrainConfig


@pytest.mark.parametrize(
    ("values", "field", "expected"),
    [
        ({"epochs": 0}, "epochs", "integer >= 1"),
        ({"epochs": True}, "epochs", "integer >= 1"),
        ({"epochs": 2.5}, "epochs", "integer >= 1"),
        ({"lr": -0.1}, "lr", "> 0.0"),
        ({"lr": "0.1"}, "lr", "finite number"),
        ({"lr": float("nan")}, "lr", "finite number"),
        ({"optimizer": "sgd"}, "optimizer", "['adam', 'amsgrad']"),
        ({"scheduler": "step"}, "scheduler", "['cosine', 'cosine-batch', 'plateau', 'none']"),
        ({"loss": "l1"}, "loss", "['mse', 'huber']"),
        ({"dtype": "float16"}, "dtype", "['float32', 'float64']"),
        ({"device": "tpu"}, "device", "['cpu', 'cuda', 'auto']"),
        ({"ema": 1}, "ema", "true or false"),
        ({"progress": "no"}, "progress", "true or false"),
        ({"ema_decay": 1.0}, "ema_decay", "< 1.0"),
        ({"grad_clip": 0}, "grad_clip", "or None"),
        ({"patience": 0}, "patience", "integer >= 1 or None"),
        ({"warmup_epochs": 5, "epochs": 5}, "warmup_epochs", "fewer than epochs"),
        ({"min_lr": 0.1, "lr": 0.01}, "min_lr", "below lr"),
        ({"energy_weight": 0, "forces_weight": 0}, "energy_weight", "positive weight"),
        ({"weight_decay": -1}, "weight_decay", ">= 0.0"),
        ({"target_scale": 0}, "target_scale", "> 0.0"),
        ({"eval_every": 0}, "eval_every", "integer >= 1"),
        ({"threads": 0}, "threads", "integer >= 1 or None"),
        ({"seed": -1}, "seed", "integer >= 0"),
        ({"monitor": "loss"}, "monitor", "['mae', 'forces_mae']"),
        ({"plateau_factor": 1.5}, "plateau_factor", "< 1.0"),
    ],
)
def test_bad_value_names_field_and_expectation(values, field, expected):
    with pytest.raises(ValueError) as err:
        TrainConfig(**values)
    message = str(err.value)
    assert f"TrainConfig.{field}:" in message
    assert expected in message


def test_from_dict_rejects_unknown_keys_listing_valid_ones():
    with pytest.raises(ValueError) as err:
        TrainConfig.from_dict({"learning_rate": 0.1, "epochs": 3})
    message = str(err.value)
    assert "learning_rate" in message
    assert "valid keys" in message
    for key in ("lr", "epochs", "ema_decay", "forces_weight", "eval_every"):
        assert f"'{key}'" in message


def test_from_dict_requires_mapping():
    with pytest.raises(ValueError, match="expected a mapping"):
        TrainConfig.from_dict([("epochs", 3)])


def test_valid_values_are_normalised_and_round_trip():
    cfg = TrainConfig.from_dict({"lr": 1, "grad_clip": None, "patience": None, "threads": 2})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.grad_clip is None
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert set(cfg.to_dict()) == set(TrainConfig.keys())
