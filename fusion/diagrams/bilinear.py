"""Sparse bilinear contraction with exact derivatives of every order, without big temporaries.

A CG vertex without weights computes, for every non-zero ``(i, j, k, c)`` of its coupling,

    out[k] += c * x[i] * y[j]          x [Da, N, C], y [Db, N, C] -> out [Dout, N, C]

Written with tensor ops (gather the rows, multiply, scatter) this materialises
``[nnz, N, C]`` several times per pass and many more times in the double backward that
training on forces needs; on edges (``N`` = edges) those passes are memory-bound and
dominate the 3-body block. :func:`sparse_bilinear` instead loops over the non-zeros with
in-place ``addcmul_`` on ``[N, C]`` rows (cache-sized), and its backward is the same kind of
contraction with the roles of ``out``, ``x`` and ``y`` exchanged::

    gx[i] += c * g[k] * y[j]      gy[j] += c * x[i] * g[k]

so derivatives of any order are again :func:`sparse_bilinear` calls (tested against
autograd of the tensor-op version, to first and second order).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["BilinearPlan", "bilinear_tensor_ops", "sparse_bilinear"]


@dataclass(eq=False)
class BilinearPlan:
    """Non-zeros ``(i, j, k, c)`` of ``out[k] += c * x[i] * y[j]`` and the output rows."""

    terms: tuple[tuple[int, int, int, float], ...]
    dout: int
    _derived: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_tensors(cls, i, j, k, coef, dout: int) -> BilinearPlan:
        rows = zip(i.tolist(), j.tolist(), k.tolist(), coef.tolist())
        return cls(tuple((int(a), int(b), int(o), float(c)) for a, b, o, c in rows), int(dout))

    def as_tensor(self) -> torch.Tensor:
        """``[4, nnz]`` float64 rows ``i, j, k, c`` (for :func:`bilinear_tensor_ops`)."""
        return torch.tensor(self.terms, dtype=torch.float64).reshape(-1, 4).t().contiguous()

    def grad_x(self, da: int) -> BilinearPlan:
        """Plan of ``gx = B(g, y)``: terms ``(k, j) -> i``."""
        key = ("x", da)
        if key not in self._derived:
            self._derived[key] = BilinearPlan(tuple((k, j, i, c) for i, j, k, c in self.terms),
                                              da)
        return self._derived[key]

    def grad_y(self, db: int) -> BilinearPlan:
        """Plan of ``gy = B(x, g)``: terms ``(i, k) -> j``."""
        key = ("y", db)
        if key not in self._derived:
            self._derived[key] = BilinearPlan(tuple((i, k, j, c) for i, j, k, c in self.terms),
                                              db)
        return self._derived[key]


def _contract(x: torch.Tensor, y: torch.Tensor, plan: BilinearPlan) -> torch.Tensor:
    x, y = x.contiguous(), y.contiguous()
    out = x.new_zeros((plan.dout, *torch.broadcast_shapes(x.shape[1:], y.shape[1:])))
    for i, j, k, c in plan.terms:
        out[k].addcmul_(x[i], y[j], value=c)
    return out


class _SparseBilinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y, plan):
        ctx.save_for_backward(x, y)
        ctx.plan = plan
        return _contract(x, y, plan)

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        plan = ctx.plan
        gx = gy = None
        if ctx.needs_input_grad[0]:  # rows broadcast against y's are summed back
            gx = sparse_bilinear(g, y, plan.grad_x(x.shape[0])).sum_to_size(x.shape)
        if ctx.needs_input_grad[1]:
            gy = sparse_bilinear(x, g, plan.grad_y(y.shape[0])).sum_to_size(y.shape)
        return gx, gy, None


def sparse_bilinear(x: torch.Tensor, y: torch.Tensor, plan: BilinearPlan) -> torch.Tensor:
    """``out[k] = sum over plan terms (i, j, k, c) of c * x[i] * y[j]`` (rows of ``[D, N, C]``
    tensors; any trailing shapes that broadcast, e.g. ``x [D, N, 1]`` against
    ``y [D', N, C]``), differentiable to any order."""
    return _SparseBilinearFn.apply(x, y, plan)


def bilinear_tensor_ops(x: torch.Tensor, y: torch.Tensor, terms: torch.Tensor,
                        dout: int) -> torch.Tensor:
    """The same contraction with gather / multiply / scatter tensor ops (TorchScript, and
    the reference in the tests); ``terms`` from :meth:`BilinearPlan.as_tensor`."""
    i, j, k = terms[0].long(), terms[1].long(), terms[2].long()
    prod = x.index_select(0, i) * y.index_select(0, j)  # [nnz, ...]
    prod = prod * terms[3].to(prod.dtype).view([-1] + [1] * (prod.dim() - 1))
    return prod.new_zeros([dout] + list(prod.shape[1:])).index_add_(0, k, prod)
