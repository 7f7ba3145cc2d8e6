"""fusion.models.ordered_states: E_k >= E_{k-1} by construction, identity for large gaps,
exact value at zero raw gap, gradients through the map."""

import math

import pytest
import torch

from fusion.models.ordered_states import ordered_energies


def test_states_are_ordered_whatever_the_raw_heads_say():
    raw = torch.tensor([[-10.0, -12.0, -9.0], [0.0, 0.0, 0.0], [1.0, 5.0, 4.0]],
                       dtype=torch.float64)
    e = ordered_energies(raw)
    # >= exactly (a raw gap of -2 eV gives 0.05 exp(-40) eV, below float64 resolution at -10)
    assert torch.all(e.diff(dim=-1) >= 0)
    assert e[0, 1].item() == -10.0 and e[0, 2].item() == pytest.approx(-7.0)
    torch.testing.assert_close(e[:, 0], raw[:, 0])  # the ground state is untouched
    # zero raw gap: exactly w ln 2 per step
    assert e[1, 1].item() == pytest.approx(0.05 * math.log(2), rel=1e-12)
    assert e[1, 2].item() == pytest.approx(2 * 0.05 * math.log(2), rel=1e-12)


def test_large_gaps_pass_through_unchanged():
    raw = torch.tensor([[-14438.3, -14431.4]], dtype=torch.float64)  # 6.9 eV gap
    torch.testing.assert_close(ordered_energies(raw), raw, rtol=0, atol=1e-12)
    one = torch.tensor([[-3.0]], dtype=torch.float64)
    assert ordered_energies(one) is one


def test_gradients_flow_and_bad_input_is_named():
    x = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    raw = torch.stack([x[0] ** 2, x[0] + x[1]])  # two states of two "coordinates"
    e1 = ordered_energies(raw)[1]
    (g,) = torch.autograd.grad(e1, x)
    gap = (raw[1] - raw[0]).detach()
    s = torch.sigmoid(gap / 0.05)  # d softplus_w / d gap
    expected = torch.tensor([2 * 0.3 + s * (1 - 2 * 0.3), s], dtype=torch.float64)
    torch.testing.assert_close(g, expected)
    with pytest.raises(ValueError, match="state axis"):
        ordered_energies(torch.tensor(1.0))
    with pytest.raises(ValueError, match="width_ev must be > 0"):
        ordered_energies(torch.zeros(2, 2), width_ev=0.0)
