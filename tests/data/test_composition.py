"""Tests for fusion.data.composition: exact recovery on synthetic linear data."""

import numpy as np
import pytest

from fusion.data.composition import (
    composition_baseline,
    element_counts,
    element_index,
    fit_composition,
    predict_composition,
)
from fusion.data.structures import Structures

ELEMENTS = [1, 6, 7, 8, 9]
WEIGHTS = np.array([-13.6, -1029.8, -1485.1, -2042.6, -2713.4])  # eV per atom


def linear_structures(n_mol=60, seed=0) -> Structures:
    rng = np.random.default_rng(seed)
    n_atoms = rng.integers(1, 20, size=n_mol)
    z = rng.choice(ELEMENTS, size=int(n_atoms.sum()))
    mol = np.repeat(np.arange(n_mol), n_atoms)
    y = np.bincount(mol, weights=WEIGHTS[np.searchsorted(ELEMENTS, z)], minlength=n_mol)
    return Structures(z=z, pos=rng.normal(size=(len(z), 3)), n_atoms=n_atoms, y=y,
                      meta={"report_factor": 1000.0, "report_unit": "meV"})


def test_element_counts():
    s = Structures(z=[6, 1, 1, 8, 1, 1, 1], pos=np.zeros((7, 3)), n_atoms=[3, 1, 3],
                   y=np.zeros(3))
    np.testing.assert_array_equal(
        element_counts(s, np.array([2, 0]), [1, 6, 8]), [[3, 0, 0], [2, 1, 0]])
    np.testing.assert_array_equal(element_counts(s, None, [1, 6, 8]).sum(0), [5, 1, 1])


def test_fit_is_exact_on_linear_data():
    s = linear_structures()
    train = np.arange(40)
    w = fit_composition(s, train, ELEMENTS)
    np.testing.assert_allclose(w, WEIGHTS, rtol=1e-10)
    test = np.arange(40, 60)
    np.testing.assert_allclose(predict_composition(s, test, ELEMENTS, w), s.y[test], rtol=1e-10)
    out = composition_baseline(s, {"train": train, "val": test[:10], "test": test[10:]})
    assert out["elements"] == ELEMENTS and out["unit"] == "meV"
    assert out["test"]["mae"] < 1e-6 and out["test"]["n_structures"] == 10


def test_absent_element_gets_zero_weight():
    s = linear_structures()
    no_f = np.array([i for i in range(len(s)) if 9 not in s.z[s.offsets[i]:s.offsets[i + 1]]])
    w = fit_composition(s, no_f, ELEMENTS)
    assert w[-1] == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(w[:-1], WEIGHTS[:-1], rtol=1e-10)


def test_errors():
    with pytest.raises(ValueError, match=r"atomic numbers \[17\] are not in elements \[1, 6\]"):
        element_index(np.array([1, 6, 17]), [1, 6])
    s = linear_structures()
    with pytest.raises(ValueError, match=r"weights has shape \(3,\); expected \[n_elements\]"):
        predict_composition(s, None, ELEMENTS, np.zeros(3))
