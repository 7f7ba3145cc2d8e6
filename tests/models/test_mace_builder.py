"""The MACE baseline builder: mace_run_train's model through our registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from e3nn import o3

import fusion._mace_first  # noqa: F401  (mace before e3nn)
from fusion.models.mace import MACE_DEFAULTS, hidden_irreps
from fusion.models.registry import (
    ModelStats,
    build_model,
    check_model_name,
    count_parameters,
    model_names,
)

STATS = ModelStats(
    elements=(1, 6, 8), atomic_energies=np.array([-13.6, -1029.0, -2041.0]), avg_num_neighbors=4
)
TINY = {"num_channels": 8, "max_L": 1, "max_ell": 2, "correlation": 2, "radial_MLP": [8]}


def _water_batch(dtype=torch.float64):
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]], dtype=dtype)
    onehot = torch.tensor([[0, 0, 1], [1, 0, 0], [1, 0, 0]], dtype=dtype)
    edge_index = torch.tensor([[0, 0, 1, 1, 2, 2], [1, 2, 0, 2, 0, 1]])
    return {
        "positions": pos,
        "node_attrs": onehot,
        "edge_index": edge_index,
        "shifts": torch.zeros(6, 3, dtype=dtype),
        "unit_shifts": torch.zeros(6, 3, dtype=dtype),
        "cell": torch.zeros(3, 3, dtype=dtype),
        "batch": torch.zeros(3, dtype=torch.long),
        "ptr": torch.tensor([0, 3]),
        "head": torch.zeros(1, dtype=torch.long),
    }


def test_hidden_irreps_follow_mace_convention():
    assert hidden_irreps(16, 2) == o3.Irreps("16x0e+16x1o+16x2e")


def test_registry_lists_mace_and_composition():
    names = model_names()
    assert "baseline" in names["mace"] and names["composition"] == ("baseline",)


def test_unknown_names_list_valid_ones():
    with pytest.raises(KeyError, match="unknown model 'macee'; valid models: ") as err:
        check_model_name("macee", "baseline")
    assert ", ".join(sorted(model_names())) in str(err.value)
    assert {"composition", "mace"} <= set(model_names())
    with pytest.raises(KeyError, match="unknown variant 'fusoin' of model 'mace'"):
        check_model_name("mace", "fusoin")


def test_unknown_hyperparameter_is_named():
    with pytest.raises(ValueError, match=r"unknown MACE hyperparameter\(s\) \['num_channel'\]"):
        build_model("mace", "baseline", {"num_channel": 8}, STATS)


def _mace_run_train_model(extra_args: list[str]):
    """The model mace_run_train itself builds: its own argument parser and defaults, its
    ``check_args`` and ``configure_model`` (mace-torch 0.3.16), for STATS' elements."""
    from mace import tools
    from mace.tools.model_script_utils import configure_model

    argv = ["--name", "parity", "--train_file", "unused.xyz", "--E0s", "average", *extra_args]
    args, _ = tools.check_args(tools.build_default_arg_parser().parse_args(argv))
    args.mean, args.std, args.avg_num_neighbors = 0.0, 1.0, float(STATS.avg_num_neighbors)
    # what run_train sets for an energy/forces model before configure_model
    args.compute_energy, args.compute_dipole, args.compute_polarizability = True, False, False
    model, _ = configure_model(
        args, None, np.asarray(STATS.atomic_energies), heads=["Default"],
        z_table=tools.AtomicNumberTable(list(STATS.elements)),
    )
    return model


@pytest.mark.parametrize("reduced", [False, True], ids=["full-cg", "reduced-cg"])
def test_default_parameter_count_matches_mace_run_train(reduced):
    """Our defaults are mace_run_train's: same parameter count, parameter for parameter
    (names and shapes), for the default model and with --use_reduced_cg."""
    hp = {"use_reduced_cg": True} if reduced else {}
    ours = build_model("mace", "baseline", hp, STATS).mace
    theirs = _mace_run_train_model(["--use_reduced_cg", "True"] if reduced else [])
    assert type(theirs).__name__ == type(ours).__name__ == "ScaleShiftMACE"
    shapes = {k: tuple(v.shape) for k, v in ours.named_parameters()}
    assert shapes == {k: tuple(v.shape) for k, v in theirs.named_parameters()}
    assert count_parameters(ours) == sum(p.numel() for p in theirs.parameters())
    # the reduced basis is really used (mace silently falls back to the full one when
    # cuequivariance_torch is missing): 8 order-3 weights for 0e instead of 23
    weights_max = ours.products[0].symmetric_contractions.contractions[0].weights_max
    assert weights_max.shape[1] == (8 if reduced else 23)
    assert MACE_DEFAULTS["num_channels"] == 128 and count_parameters(ours) > 500_000


def test_energy_is_invariant_and_forces_equivariant_under_o3():
    torch.manual_seed(0)
    model = build_model("mace", "baseline", TINY, STATS)
    batch = _water_batch()
    out = model(batch, compute_forces=True)
    rot = o3.rand_matrix(dtype=torch.float64) * -1.0  # rotation times inversion
    rotated = _water_batch()
    rotated["positions"] = batch["positions"].detach() @ rot.T
    out_rot = model(rotated, compute_forces=True)
    assert torch.allclose(out["energy"], out_rot["energy"], atol=1e-10)
    assert torch.allclose(out["forces"] @ rot.T, out_rot["forces"], atol=1e-10)
