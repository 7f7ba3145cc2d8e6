"""Tests for fusion.data.structures: container validation, offsets, subsets."""

import numpy as np
import pytest

from fusion.data.structures import Structures, ragged_arange


def make(n_atoms=(2, 3, 1), forces=True, seed=0) -> Structures:
    rng = np.random.default_rng(seed)
    a = int(sum(n_atoms))
    return Structures(
        z=rng.integers(1, 10, size=a),
        pos=rng.normal(size=(a, 3)),
        n_atoms=np.array(n_atoms),
        y=rng.normal(size=len(n_atoms)),
        forces=rng.normal(size=(a, 3)) if forces else None,
        meta={"name": "toy", "unit": "eV"},
    )


def test_ragged_arange():
    out = ragged_arange(np.array([5, 0, 10]), np.array([2, 0, 3]))
    np.testing.assert_array_equal(out, [5, 6, 10, 11, 12])
    assert ragged_arange(np.array([], dtype=int), np.array([], dtype=int)).shape == (0,)


def test_sizes_offsets_dtypes():
    s = make()
    assert len(s) == 3 and s.n_atoms_total == 6
    np.testing.assert_array_equal(s.offsets, [0, 2, 5, 6])
    np.testing.assert_array_equal(s.structure_index, [0, 0, 1, 1, 1, 2])
    assert s.z.dtype == np.int64 and s.pos.dtype == np.float64 and s.n_atoms.dtype == np.int64
    assert s.elements() == sorted(set(s.z.tolist()))


def test_subset_gathers_atoms_in_order():
    s = make()
    sub = s.subset(np.array([2, 0]))
    np.testing.assert_array_equal(sub.n_atoms, [1, 2])
    np.testing.assert_array_equal(sub.z, s.z[[5, 0, 1]])
    np.testing.assert_array_equal(sub.pos, s.pos[[5, 0, 1]])
    np.testing.assert_array_equal(sub.forces, s.forces[[5, 0, 1]])
    np.testing.assert_array_equal(sub.y, s.y[[2, 0]])
    assert sub.meta == s.meta and sub.meta is not s.meta
    s.meta["ids"] = np.array([10, 11, 12])  # per-structure meta arrays follow the subset
    np.testing.assert_array_equal(s.subset(np.array([2, 0])).meta["ids"], [12, 10])
    mask = s.subset(np.array([False, True, False]))
    np.testing.assert_array_equal(mask.z, s.z[2:5])
    assert len(s.subset(np.array([], dtype=int))) == 0
    with pytest.raises(IndexError, match="out of range"):
        s.subset(np.array([3]))


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("pos", np.zeros((6, 2)), r"Structures\.pos has shape \(6, 2\); expected \[A, 3\]"),
        ("z", np.ones(5, dtype=int), r"Structures\.z has shape \(5,\); expected \[A\]"),
        ("y", np.zeros(2), r"Structures\.y has shape \(2,\); expected \[M\]"),
        ("forces", np.zeros((6,)), r"Structures\.forces has shape \(6,\); expected \[A, 3\]"),
    ],
)
def test_validate_names_field_and_expected_shape(field, value, expected):
    s = make()
    kwargs = dict(z=s.z, pos=s.pos, n_atoms=s.n_atoms, y=s.y, forces=s.forces)
    kwargs[field] = value
    with pytest.raises(ValueError, match=expected):
        Structures(**kwargs)


def test_validate_non_finite_and_bad_counts():
    s = make()
    pos = s.pos.copy()
    pos[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"Structures\.pos has a non-finite value .* \[3, 1\]"):
        Structures(z=s.z, pos=pos, n_atoms=s.n_atoms, y=s.y)
    with pytest.raises(ValueError, match=r"n_atoms\[1\] = 0"):
        Structures(z=s.z[:3], pos=s.pos[:3], n_atoms=np.array([3, 0]), y=np.zeros(2))
    s.y[0] = np.inf  # validate() is callable after mutation
    with pytest.raises(ValueError, match=r"Structures\.y has a non-finite value"):
        s.validate()
