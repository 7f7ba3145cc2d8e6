"""Bridge to mace-torch: map product-basis weights onto :class:`FusionProduct`, swap products.

mace-torch's ``SymmetricContraction`` computes, per output irrep, node n (element e) and
channel c::

    B[n, c, m] = sum_nu sum_q W_nu[e, q, c] sum_{i_1..i_nu} U_nu[m, i_1..i_nu, q] x_{i_1}..x_{i_nu}

with ``x = node_feats[n, c]``. Only the symmetric part of each ``U_nu[..., q]`` matters (all
leaves carry the same x), i.e. its coefficients on the degree-nu monomials. We map weights in
that coefficient space: for each (output irrep, nu) group, ``W_ours = T @ W_mace`` with
``T = pinv(coef_ours^T) coef_mace^T``. That is exact whenever our paths span mace's (always: the
independent basis spans the full chain-path space, checked by the residual). When our full
basis has mace's exact path tensors (the default, non-cuequivariance ``U``), T is the identity
and weights are copied.
"""

from __future__ import annotations

import fusion._mace_first  # noqa: F401  (mace before e3nn)

# isort: split

import torch
from e3nn import o3
from torch import nn

from fusion.blocks.product import FusionProduct
from fusion.diagrams.symmetric import symmetric_coefficients

__all__ = [
    "mace_group_weights",
    "mace_u_coefficients",
    "map_mace_weights",
    "fusion_from_mace",
    "replace_products",
]


def _contractions(module: nn.Module):
    """The ``SymmetricContraction`` of a product block (or the contraction itself)."""
    return getattr(module, "symmetric_contractions", module)


def mace_u_coefficients(contraction: nn.Module, nu: int, D: int, dim: int) -> torch.Tensor:
    """Symmetric coefficients of mace's ``U_matrix_nu``: ``[Q, 2l+1, n_monomials(D, nu)]``."""
    U = dict(contraction.named_buffers())[f"U_matrix_{nu}"].to(torch.float64)
    Q = U.shape[-1]
    U = U.reshape(dim, *([D] * nu), Q)  # mace squeezes the m axis of scalar outputs
    return torch.stack([symmetric_coefficients(U[..., q]) for q in range(Q)])


def mace_group_weights(contraction: nn.Module, nu: int) -> torch.Tensor:
    """mace's weights for order ``nu`` of one ``Contraction``: ``[E, Q, C]``."""
    if nu == contraction.correlation:
        return contraction.weights_max
    return contraction.weights[contraction.correlation - 1 - nu]  # stored nu = corr-1, ..., 1


@torch.no_grad()
def map_mace_weights(
    fusion: FusionProduct, mace_module: nn.Module, rtol: float = 1e-9
) -> FusionProduct:
    """Copy a mace ``EquivariantProductBasisBlock``'s (or ``SymmetricContraction``'s) weights
    into ``fusion`` (any basis, ``weights="path"``) so both compute the same function.

    The product block's linear is copied too. Raises if mace's span is not inside ours.
    """
    if fusion.weights_kind != "path":
        raise ValueError("mace weights map onto weights='path' only (vertex weights are products)")
    sc = _contractions(mace_module)
    sb = fusion.symmetric_basis
    if len(sc.contractions) != len(sb.irreps_out):
        raise ValueError(
            f"mace has {len(sc.contractions)} output irreps, FusionProduct {len(sb.irreps_out)}"
        )
    W = torch.zeros_like(fusion.weight, dtype=torch.float64)  # [E, P, C]
    for g, (p0, p1) in zip(sb.groups, fusion.group_slices):
        contraction = sc.contractions[g.i_out]
        if contraction.correlation != sb.correlation:
            raise ValueError(
                f"mace correlation {contraction.correlation} != FusionProduct {sb.correlation}"
            )
        Wm = mace_group_weights(contraction, g.nu).to(torch.float64)  # [E, Q, C]
        cm = mace_u_coefficients(contraction, g.nu, sb.D, g.ir_out.dim)  # [Q, m, k]
        co = g.coefficients  # [P, m, k]
        if Wm.shape[1] == 0 or cm.abs().max() == 0:
            continue
        if co.shape[0] == 0:  # no path of ours: mace's paths must vanish here as well
            if cm.abs().max() > 1e-9:
                raise ValueError(
                    f"mace has non-zero symmetric paths for {g.ir_out}, nu={g.nu} where this "
                    f"basis has none (max coefficient {cm.abs().max():.2e}); use basis='full'"
                )
            continue
        A = co.reshape(co.shape[0], -1).T  # [m*k, P]
        B = cm.reshape(cm.shape[0], -1).T  # [m*k, Q]
        T = torch.linalg.lstsq(A, B, driver="gelsd").solution  # [P, Q]
        resid = (A @ T - B).norm() / B.norm()
        if resid > rtol:
            raise ValueError(
                f"mace's paths for {g.ir_out}, nu={g.nu} are not in the span of this basis "
                f"(relative residual {resid:.2e}); use basis='full' or no lmax_internal"
            )
        if co.shape == cm.shape and torch.allclose(co, cm, atol=1e-12):
            T = torch.eye(co.shape[0], dtype=torch.float64)  # same paths: plain copy
        W[:, p0:p1] = torch.einsum("pq,eqc->epc", T, Wm)
    fusion.weight.copy_(W.to(fusion.weight.dtype))
    if hasattr(mace_module, "linear"):
        fusion.linear.load_state_dict(mace_module.linear.state_dict())
    return fusion


def _block_settings(block: nn.Module) -> dict:
    """Constructor arguments of a FusionProduct matching a mace product block."""
    sc = _contractions(block)
    c0 = sc.contractions[0]
    return {
        "node_feats_irreps": o3.Irreps(sc.irreps_in),
        "target_irreps": o3.Irreps(sc.irreps_out),
        "correlation": int(c0.correlation),
        "use_sc": bool(getattr(block, "use_sc", True)),
        "num_elements": int(c0.weights_max.shape[0]),
        "use_agnostic_product": bool(getattr(block, "use_agnostic_product", False)),
    }


def fusion_from_mace(block: nn.Module, map_weights: bool = True, **fusion_kwargs) -> FusionProduct:
    """A FusionProduct with the irreps of a mace product block (weights mapped if asked)."""
    kw = _block_settings(block)
    if kw["use_agnostic_product"]:
        kw["num_elements"] = 1
    kw.update(fusion_kwargs)
    ref = next(block.parameters())
    fp = FusionProduct(**kw).to(dtype=ref.dtype, device=ref.device)
    if map_weights:
        map_mace_weights(fp, block)
    return fp


def replace_products(mace_model: nn.Module, map_weights: bool = False, **fusion_kwargs):
    """Swap every ``mace_model.products[i]`` for a FusionProduct of matching irreps, in place.

    ``fusion_kwargs`` go to :class:`FusionProduct` (``basis``, ``weights``, ...).
    ``map_weights=True`` copies mace's weights (same function; needs ``weights="path"``);
    otherwise the new products are freshly initialised. Returns the model.
    """
    if not hasattr(mace_model, "products"):
        raise TypeError(f"{type(mace_model).__name__} has no `products` (not a mace-torch MACE)")
    for i, block in enumerate(mace_model.products):
        mace_model.products[i] = fusion_from_mace(block, map_weights=map_weights, **fusion_kwargs)
    return mace_model
