"""Tests for fusion.data.registry: keys, cards, unknown-key errors, loading via the registry."""

import numpy as np
import pytest

from fusion.data import registry
from fusion.data.qm9 import TARGETS


def test_qm9_keys_registered():
    keys = registry.dataset_keys()
    assert [k for k in keys if k.startswith("qm9-")] == [f"qm9-{t}" for t in TARGETS]
    assert set(keys) == set(registry.DATASETS)
    card = registry.dataset_card("qm9-U0")
    assert card["unit"] == "eV" and card["report_unit"] == "meV"
    assert card["split_sizes"] == {"train": 100_000, "val": 17_748, "test": 13_083}
    for field in ("source", "license", "n_structures", "split"):
        assert field in card


def test_unknown_key_lists_valid_keys():
    with pytest.raises(KeyError, match=r"unknown dataset 'qm9-u0'; valid keys: .*qm9-U0"):
        registry.get_dataset("qm9-u0")
    with pytest.raises(KeyError, match="qm9-Cv"):
        registry.dataset_card("nope")


def test_duplicate_registration_rejected():
    spec = registry.DATASETS["qm9-U0"]
    with pytest.raises(ValueError, match="already registered"):
        registry.register(spec)


def test_get_dataset_loads_fixture(qm9_dir, cache_dir):
    s, splits = registry.get_dataset("qm9-homo", cache_dir=cache_dir, n_train=2,
                                     data_dir=qm9_dir)
    assert s.meta["name"] == "qm9-homo" and s.meta["unit"] == "eV"
    assert set(splits) == {"train", "val", "test"} and len(splits["train"]) == 2
    assert s.y[0] == pytest.approx(-0.3877 * 27.211386245988)
    assert all(v.dtype == np.int64 for v in splits.values())


def test_family_inputs_name_the_jobs_a_cache_is_built_from(tmp_path):
    from pathlib import Path

    from fusion.data.qm9xtb import N_SHARDS

    shards = registry.family_inputs("qm9xtb", tmp_path)
    assert len(shards) == N_SHARDS and len(set(shards)) == N_SHARDS
    assert shards[0] == tmp_path / "qm9xtb" / "shards" / f"shard-000-of-{N_SHARDS:03d}.npz"
    assert registry.family_inputs("rmd17xtb-ethanol", "c") == [
        Path("c") / "rmd17-full-ethanol" / "rmd17-full-ethanol.npz"
    ]
    assert registry.family_inputs("qm9", tmp_path) == []
    with pytest.raises(KeyError, match="unknown dataset family 'qm10'"):
        registry.family_inputs("qm10", tmp_path)
