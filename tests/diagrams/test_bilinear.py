"""sparse_bilinear: the same numbers and derivatives (first and second order) as the
tensor-op contraction it replaces."""

from __future__ import annotations

import pytest
import torch

from fusion.diagrams.bilinear import BilinearPlan, bilinear_tensor_ops, sparse_bilinear


def reference(x, y, i, j, k, coef, dout):
    """Gather / multiply / scatter (what TorchScript runs), autograd for the derivatives."""
    terms = torch.stack([i.double(), j.double(), k.double(), coef])
    return bilinear_tensor_ops(x, y, terms, dout)


def random_plan(da, db, dout, nnz, seed=0):
    g = torch.Generator().manual_seed(seed)
    i = torch.randint(0, da, (nnz,), generator=g)
    j = torch.randint(0, db, (nnz,), generator=g)
    k = torch.randint(0, dout, (nnz,), generator=g)
    coef = torch.randn(nnz, generator=g, dtype=torch.float64)
    return i, j, k, coef


def test_values_and_first_derivatives_match_tensor_ops():
    i, j, k, coef = random_plan(4, 5, 3, 17)  # repeated (i, j, k) triples included
    plan = BilinearPlan.from_tensors(i, j, k, coef, 3)
    x = torch.randn(4, 6, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 6, 2, dtype=torch.float64, requires_grad=True)
    out = sparse_bilinear(x, y, plan)
    ref = reference(x, y, i, j, k, coef, 3)
    assert (out - ref).abs().max() < 1e-14 and ref.abs().max() > 0.1
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out, (x, y), g), torch.autograd.grad(ref, (x, y), g)):
        assert (a - b).abs().max() < 1e-13


def test_second_derivatives_as_in_training_on_forces():
    """Gradient with create_graph (forces), then the gradient of a loss on it."""
    i, j, k, coef = random_plan(6, 6, 4, 25, seed=1)
    plan = BilinearPlan.from_tensors(i, j, k, coef, 4)
    x0 = torch.randn(6, 5, 3, dtype=torch.float64)
    grads = []
    for f in (lambda a: sparse_bilinear(a, a * a.sum(), plan),  # tied leaves, like (A, A)
              lambda a: reference(a, a * a.sum(), i, j, k, coef, 4)):
        x = x0.clone().requires_grad_()
        out = f(x)
        (gx,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
        ramp = torch.linspace(-1, 1, gx.numel(), dtype=gx.dtype).view_as(gx)
        (ggx,) = torch.autograd.grad((gx * ramp).square().sum(), x)
        grads.append((gx.detach(), ggx))
    (g1, gg1), (g2, gg2) = grads
    assert (g1 - g2).abs().max() < 1e-13 * g2.abs().max()
    assert (gg1 - gg2).abs().max() < 1e-12 * gg2.abs().max()


@pytest.mark.parametrize("needs", [(True, False), (False, True)])
def test_gradcheck_and_gradgradcheck(needs):
    i, j, k, coef = random_plan(3, 4, 2, 9, seed=2)
    plan = BilinearPlan.from_tensors(i, j, k, coef, 2)
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=needs[0])
    y = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=needs[1])
    assert torch.autograd.gradcheck(lambda a, b: sparse_bilinear(a, b, plan), (x, y))
    assert torch.autograd.gradgradcheck(lambda a, b: sparse_bilinear(a, b, plan), (x, y))


def test_broadcast_rows_and_their_gradients():
    """x rows [N, 1] against y rows [N, C] (e.g. spherical harmonics against channels)."""
    i, j, k, coef = random_plan(3, 4, 5, 12, seed=5)
    plan = BilinearPlan.from_tensors(i, j, k, coef, 5)
    x = torch.randn(3, 7, 1, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 7, 2, dtype=torch.float64, requires_grad=True)
    out = sparse_bilinear(x, y, plan)
    ref = reference(x.expand(-1, -1, 2), y, i, j, k, coef, 5)
    assert out.shape == (5, 7, 2) and (out - ref).abs().max() < 1e-13
    assert torch.autograd.gradcheck(lambda a, b: sparse_bilinear(a, b, plan), (x, y))
    assert torch.autograd.gradgradcheck(lambda a, b: sparse_bilinear(a, b, plan), (x, y))
