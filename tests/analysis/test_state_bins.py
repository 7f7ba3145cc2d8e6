"""fusion.analysis.state_bins: errors binned by torsion and by reference gap, exact values."""

import numpy as np
import pandas as pd
import pytest

from fusion.analysis.state_bins import binned_errors


def test_bins_hold_the_exact_maes_and_the_constant_gap_baseline():
    ref = np.array([[0.0, 5.0], [0.0, 6.0], [0.0, 7.0], [0.0, 4.0]])  # gaps 5, 6, 7, 4 eV
    pred = ref + np.array([[0.001, 0.003], [-0.002, 0.0], [0.0, 0.010], [0.004, 0.004]])
    torsion = np.array([10.0, 100.0, 180.0, 90.0])
    table = binned_errors(pred, ref, torsion, torsion_edges=(0, 90, 180),
                          gap_edges_ev=(4.0, 5.5, 7.0), baseline_gap_ev=5.5)
    by_torsion = table[table["by"] == "torsion"].reset_index(drop=True)
    assert by_torsion["n"].tolist() == [1, 3]  # 90 goes to the upper bin, 180 included
    assert by_torsion.loc[0, "mae_S0_mev"] == pytest.approx(1.0)
    assert by_torsion.loc[1, "mae_S0_mev"] == pytest.approx(2.0)  # (2 + 0 + 4) / 3
    assert by_torsion.loc[1, "gap_mae_mev"] == pytest.approx(4.0)  # (2 + 10 + 0) / 3
    # constant gap 5.5 eV against 6, 7, 4: (0.5 + 1.5 + 1.5) / 3 eV
    assert by_torsion.loc[1, "constant_gap_mae_mev"] == pytest.approx(3500.0 / 3)
    by_gap = table[table["by"] == "gap"].reset_index(drop=True)
    assert by_gap["n"].tolist() == [2, 2] and by_gap.loc[0, "gap_mae_mev"] == pytest.approx(1.0)


def test_default_gap_bins_are_quartiles_and_empty_bins_are_none():
    rng = np.random.default_rng(0)
    ref = np.stack([np.zeros(40), rng.uniform(4, 7, 40)], axis=1)
    table = binned_errors(ref, ref, np.full(40, 45.0))
    by_gap = table[table["by"] == "gap"]
    assert by_gap["n"].sum() == 40 and len(by_gap) == 4
    empty = table[(table["by"] == "torsion") & (table["n"] == 0)]
    assert len(empty) == 5 and empty["gap_mae_mev"].isna().all()
    assert isinstance(table, pd.DataFrame) and table["constant_gap_mae_mev"].isna().all()


def test_bad_shapes_and_edges_are_named():
    ref = np.zeros((3, 2))
    with pytest.raises(ValueError, match="S >= 2 states"):
        binned_errors(np.zeros((3, 1)), np.zeros((3, 1)), np.zeros(3))
    with pytest.raises(ValueError, match="torsion should be"):
        binned_errors(ref, ref, np.zeros(4))
    with pytest.raises(ValueError, match="torsion_edges should be"):
        binned_errors(ref, ref, np.zeros(3), torsion_edges=(0, 0))
