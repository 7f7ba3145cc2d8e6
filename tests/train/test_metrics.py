"""metrics.json round trip and schema errors; parameter counting; provenance."""

import copy
import json
import re

import pytest
import torch

from fusion.train.metrics import (
    MetricsSchemaError,
    count_parameters,
    read_metrics_json,
    write_metrics_json,
)
from fusion.train.provenance import PACKAGES, provenance


@pytest.fixture()
def full_metrics(reference):
    """A complete metrics.json document as the CLI writes it (trainer fragment + caller keys)."""
    metrics = copy.deepcopy(reference["metrics"])
    metrics.update(
        schema_version=1,
        dataset="toy",
        model="toy",
        variant="baseline",
        seed=0,
        n_params=123,
        hyperparameters={"lr": 0.01},
        provenance=provenance(),
    )
    return metrics


def test_round_trip(full_metrics, tmp_path):
    path = write_metrics_json(tmp_path / "metrics.json", full_metrics)
    assert read_metrics_json(path) == full_metrics
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left
    assert "meV/Å" in path.read_text(encoding="utf-8")  # UTF-8, not escaped


@pytest.mark.parametrize(
    ("drop", "key"),
    [(("dataset",), "'dataset'"), (("val", "rmse"), "'val.rmse'"),
     (("provenance", "git_commit"), "'provenance.git_commit'")],
)  # fmt: skip
def test_missing_key_names_file_and_key(full_metrics, tmp_path, drop, key):
    doc = copy.deepcopy(full_metrics)
    target = doc
    for k in drop[:-1]:
        target = target[k]
    del target[drop[-1]]
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(MetricsSchemaError) as err:
        read_metrics_json(path)
    assert str(path) in str(err.value) and key in str(err.value)
    with pytest.raises(MetricsSchemaError, match=re.escape(key)):
        write_metrics_json(tmp_path / "out.json", doc)
    assert not (tmp_path / "out.json").exists()


def test_schema_version_and_json_errors(full_metrics, tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({**full_metrics, "schema_version": 2}))
    with pytest.raises(MetricsSchemaError, match="schema_version is 2"):
        read_metrics_json(path)
    path.write_text("{not json")
    with pytest.raises(MetricsSchemaError, match="not valid JSON"):
        read_metrics_json(path)
    with pytest.raises(MetricsSchemaError, match="cannot read"):
        read_metrics_json(tmp_path / "absent.json")
    path.write_text(json.dumps({**full_metrics, "val": [1, 2]}))
    with pytest.raises(MetricsSchemaError, match="'val' should be an object"):
        read_metrics_json(path)


def test_non_finite_values_are_refused(full_metrics, tmp_path):
    doc = copy.deepcopy(full_metrics)
    doc["test"]["mae"] = float("nan")
    with pytest.raises(MetricsSchemaError, match=r"'test\.mae' is not a finite number"):
        write_metrics_json(tmp_path / "metrics.json", doc)
    (tmp_path / "metrics.json").write_text(json.dumps(doc))  # Python writes NaN
    with pytest.raises(MetricsSchemaError, match="test.mae"):
        read_metrics_json(tmp_path / "metrics.json")


def test_count_parameters_counts_trainable_only():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    assert count_parameters(model) == 16 + 5
    model[1].weight.requires_grad_(False)
    assert count_parameters(model) == 16 + 1


def test_provenance_fields():
    p = provenance(started=0.0)
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", p["git_commit"])
    assert p["versions"]["torch"] == torch.__version__
    assert set(p["versions"]) == {"python", *PACKAGES}
    assert p["versions"]["fusion-bench"] and p["versions"]["mace-torch"] == "0.3.16"
    assert p["device"].startswith(("cpu: ", "cuda: "))
    assert p["hostname"]
    assert p["started"] == "1970-01-01T00:00:00+00:00"
    assert p["finished"] > p["started"]
    default = provenance()
    assert default["started"] <= default["finished"]


def test_error_sums_pool_states_and_report_each_state_and_gap():
    import numpy as np

    from fusion.train.metrics import ErrorSums

    sums = ErrorSums()
    # two batches, 3 structures, 2 states; errors [[1, 2], [-1, 0], [2, 5]] eV
    true = np.array([[0.0, 10.0], [0.0, 10.0], [0.0, 10.0]])
    pred = true + np.array([[1.0, 2.0], [-1.0, 0.0], [2.0, 5.0]])
    n_atoms = np.array([1, 2, 4])
    f_true = np.zeros((7, 2, 3))
    f_pred = f_true.copy()
    f_pred[:, 1, :] = 0.5  # state 1 off by 0.5 eV/Å everywhere
    sums.add(pred[:2], true[:2], n_atoms[:2], f_pred[:3], f_true[:3])
    sums.add(pred[2:], true[2:], n_atoms[2:], f_pred[3:], f_true[3:])
    e = sums.errors(1000.0)
    assert e["n_structures"] == 3
    assert e["mae"] == pytest.approx(1000 * 11 / 6)
    assert e["mae_S0"] == pytest.approx(1000 * 4 / 3)
    assert e["mae_S1"] == pytest.approx(1000 * 7 / 3)
    assert e["rmse_S1"] == pytest.approx(1000 * np.sqrt(29 / 3))
    assert e["gap_mae_S1"] == pytest.approx(1000 * (1 + 1 + 3) / 3)  # |e1 - e0|
    assert e["mae_per_atom"] == pytest.approx(1000 * (3 / 1 + 1 / 2 + 7 / 4) / 6)
    assert e["forces_mae_S0"] == 0.0
    assert e["forces_mae_S1"] == pytest.approx(500.0)
    assert e["forces_mae"] == pytest.approx(250.0)
    single = ErrorSums()
    single.add(pred[:, 0], true[:, 0], n_atoms)
    assert set(single.errors(1.0)) == {"mae", "rmse", "mae_per_atom", "forces_mae",
                                       "forces_rmse", "n_structures"}
