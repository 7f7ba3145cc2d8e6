"""Model registry: default hyperparameters the workflow needs before building a model."""

from __future__ import annotations

import pytest

from fusion.models.registry import DEFAULT_R_MAX, graph_cutoff


def test_graph_cutoff_comes_from_hparams_then_the_builder_defaults():
    assert graph_cutoff("cormorant", "baseline", {}) == pytest.approx(1.73)  # published
    assert graph_cutoff("cormorant", "fusion", {"r_max": 3.0}) == 3.0
    assert graph_cutoff("mace", "fusion-3body", {}) == 5.0  # mace_run_train's default
    assert graph_cutoff("unite", "baseline", {}) == DEFAULT_R_MAX


def test_graph_cutoff_of_an_unknown_model_names_the_valid_ones():
    with pytest.raises(KeyError, match="unknown model 'cormorat'; valid models: "):
        graph_cutoff("cormorat", "baseline", {})
