"""FusionProduct: equivariance, kernel vs dense paths, custom backward, counts, TorchScript."""

import fusion._mace_first  # noqa: F401  (mace before e3nn)

# isort: split

import pytest
import torch
from e3nn import o3
from e3nn.util import jit

from fusion.blocks.product import FusionProduct, fold_kernel, kernel_plan, symmetric_product
from fusion.diagrams.symmetric import KernelLayout, SymmetricBasis, path_tensor, single_thread

F64 = torch.float64
IRS = "0e+1o+2e+3o"


def _irreps(C: int, irs: str) -> str:
    return "+".join(f"{C}x{ir}" for ir in irs.split("+"))


def _inputs(N: int, C: int, E: int, out_dim: int, seed: int = 0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, 16, generator=g, dtype=dtype)
    elem = torch.randint(0, E, (N,), generator=g)
    attrs = torch.nn.functional.one_hot(elem, E).to(dtype)
    sc = torch.randn(N, out_dim, generator=g, dtype=dtype)
    return x, sc, attrs


@pytest.mark.parametrize(
    "basis,weights,corr,outs",
    [
        ("independent", "path", 3, "0e+1o+2e"),
        ("full", "path", 2, "0e+1o"),
        ("independent", "vertex", 3, "0e+1o+3o"),
    ],
)
def test_o3_equivariance(basis, weights, corr, outs):
    torch.manual_seed(0)
    C, E = 3, 2
    fp = FusionProduct(
        _irreps(C, IRS), _irreps(C, outs), corr, num_elements=E, basis=basis, weights=weights
    ).to(F64)
    x, sc, attrs = _inputs(11, C, E, fp.irreps_out.dim)
    for parity in (0.0, 1.0):  # rotation, rotation x inversion
        angles = o3.rand_angles(dtype=F64)
        D_in = o3.Irreps(IRS).D_from_angles(*angles, k=torch.tensor(parity, dtype=F64))
        D_out = fp.irreps_out.D_from_angles(*angles, k=torch.tensor(parity, dtype=F64))
        lhs = fp(x @ D_in.T, sc @ D_out.T, attrs)
        rhs = fp(x, sc, attrs) @ D_out.T
        assert (lhs - rhs).abs().max() < 1e-10


def _dense_reference(x, elem, W, sb):
    """B[n, c, m] = sum_p W[e(n), p, c] * path_p(x[n, c]) from dense coupling tensors."""
    M = sum(ir.dim for ir in sb.irreps_out)
    out = torch.zeros(x.shape[0], x.shape[1], M, dtype=x.dtype)
    m0s = [0]
    for ir in sb.irreps_out:
        m0s.append(m0s[-1] + ir.dim)
    p0 = 0
    for g in sb.groups:
        for j, p in enumerate(g.paths):
            T = path_tensor(p, sb.irs)
            letters = "ijkl"[: g.nu]
            expr = "m" + letters + "," + ",".join("nc" + a for a in letters) + "->ncm"
            val = torch.einsum(expr, T, *([x] * g.nu))
            out[:, :, m0s[g.i_out] : m0s[g.i_out + 1]] += W[elem, p0 + j, :][:, :, None] * val
        p0 += len(g.paths)
    return out


@pytest.mark.parametrize("corr,outs", [(1, "0e+1o"), (2, "0e+2e"), (3, "0e+1o+2e")])
def test_kernel_matches_dense_paths(corr, outs):
    sb = SymmetricBasis(IRS, outs, corr)
    lay = KernelLayout(sb)
    plan = kernel_plan(lay)
    U = lay.fold()
    E, C, N = 3, 4, 29
    g = torch.Generator().manual_seed(1)
    W = torch.randn(E, sb.num_paths, C, generator=g, dtype=F64)
    x = torch.randn(N, C, 16, generator=g, dtype=F64)
    elem = torch.randint(0, E, (N,), generator=g)
    ref = _dense_reference(x, elem, W, sb)
    perm = torch.argsort(elem, stable=True)
    counts = torch.bincount(elem, minlength=E).tolist()
    A = x[perm].permute(1, 2, 0).contiguous()
    Ks = fold_kernel(W, U, plan["classes"])
    for fast, cc, nc in [(True, 3, 5), (True, 0, 0), (False, 0, 7)]:
        out = torch.empty_like(ref)
        out[perm] = symmetric_product(A, Ks, counts, plan, cc, nc, fast=fast).permute(2, 0, 1)
        torch.testing.assert_close(out, ref, atol=1e-11, rtol=1e-11)


def _small_problem(corr=3, outs="0e+1o", C=3, N=13, E=2, seed=0):
    sb = SymmetricBasis(IRS, outs, corr)
    lay = KernelLayout(sb)
    plan = kernel_plan(lay)
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(E, sb.num_paths, C, generator=g, dtype=F64)
    Ks = [k.clone().requires_grad_() for k in fold_kernel(W, lay.fold(), plan["classes"])]
    A = torch.randn(C, 16, N, generator=g, dtype=F64, requires_grad=True)
    counts = [N // 2, N - N // 2]
    return A, Ks, counts, plan


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny problems: intra-op threads only wait for each other on a busy machine."""
    with single_thread():
        yield


def test_gradcheck_custom_function():
    A, Ks, counts, plan = _small_problem(N=5, C=1)

    def f(A, *Ks):  # chunks of 1 channel x 3 nodes: exercises the tiling
        return symmetric_product(A, list(Ks), counts, plan, 1, 3, fast=True)

    Kd = [k.detach() for k in Ks]  # full Jacobian w.r.t. the features
    assert torch.autograd.gradcheck(
        lambda A: symmetric_product(A, Kd, counts, plan, 1, 3, fast=True), (A,), eps=1e-6, atol=1e-7
    )
    # fast_mode: random projections of the Jacobian (the kernels have ~10^4 entries)
    assert torch.autograd.gradcheck(f, (A, *Ks), eps=1e-6, atol=1e-7, fast_mode=True)
    assert torch.autograd.gradgradcheck(f, (A, *Ks), eps=1e-6, atol=1e-6, fast_mode=True)


@pytest.mark.parametrize("corr", [2, 3])  # 2: one class, rows are [1, x] (no gather)
def test_custom_backward_equals_autograd_reference(corr):
    A, Ks, counts, plan = _small_problem(corr=corr, outs="0e+1o+2e", C=5, N=41, E=2, seed=3)
    assert plan["rows_identity"] == (corr == 2)
    G = torch.randn(5, plan["M"], 41, dtype=F64)
    import fusion.blocks.product as product

    for save_h in (True, False):  # kept or recomputed H; tiles forced onto one thread or not
        old = product.SAVE_H_MAX_BYTES, product.CPU_TILE_THREADS
        product.SAVE_H_MAX_BYTES = old[0] if save_h else 0
        product.CPU_TILE_THREADS = 0 if save_h else 1
        n_threads = torch.get_num_threads()
        torch.set_num_threads(2)
        try:
            out = symmetric_product(A, Ks, counts, plan, 2, 9, fast=True)
            assert torch.get_num_threads() == 2
        finally:
            product.SAVE_H_MAX_BYTES, product.CPU_TILE_THREADS = old
            torch.set_num_threads(n_threads)
        ref = symmetric_product(A, Ks, counts, plan, 0, 0, fast=False)
        torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-12)
        got = torch.autograd.grad(out, (A, *Ks), G)
        want = torch.autograd.grad(ref, (A, *Ks), G)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-11)


def test_double_backward_module():
    """Forces-in-training pattern: grad with create_graph, then backward to the weights."""
    torch.manual_seed(0)
    C, E = 2, 2
    fp = FusionProduct(_irreps(C, IRS), _irreps(C, "0e+1o"), 3, num_elements=E).to(F64)
    ref = FusionProduct(_irreps(C, IRS), _irreps(C, "0e+1o"), 3, num_elements=E, fast=False)
    ref = ref.to(F64)
    ref.load_state_dict(fp.state_dict())
    x, _, attrs = _inputs(9, C, E, fp.irreps_out.dim, seed=2)
    grads = []
    for mod in (fp, ref):
        xx = x.clone().requires_grad_()
        energy = mod(xx, None, attrs)[:, :C].pow(2).sum()
        (f,) = torch.autograd.grad(energy, xx, create_graph=True)
        loss = f.pow(2).sum()
        grads.append(torch.autograd.grad(loss, [mod.weight, *mod.linear.parameters()]))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_second_order_pass_gives_the_same_numbers():
    """Inside second_order_pass (what the models enter when training on forces) the module
    runs its differentiable-ops kernel from the start: same outputs, forces and second
    derivatives as the fast kernel's fallback."""
    from fusion.blocks.product import second_order_pass

    torch.manual_seed(0)
    C, E = 2, 2
    fp = FusionProduct(_irreps(C, IRS), _irreps(C, "0e+1o"), 3, num_elements=E).to(F64)
    x, _, attrs = _inputs(9, C, E, fp.irreps_out.dim, seed=2)
    results = []
    for enabled in (False, True):
        xx = x.clone().requires_grad_()
        with second_order_pass(enabled):
            out = fp(xx, None, attrs)
        (f,) = torch.autograd.grad(out[:, :C].pow(2).sum(), xx, create_graph=True)
        results.append((out.detach(), f.detach(),
                        torch.autograd.grad(f.pow(2).sum(), [fp.weight])[0]))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_gradcheck_module_float64():
    torch.manual_seed(0)
    C, E = 2, 2
    fp = FusionProduct(_irreps(C, IRS), _irreps(C, "0e+1o"), 3, num_elements=E, weights="vertex")
    fp = fp.to(F64)
    x, sc, attrs = _inputs(5, C, E, fp.irreps_out.dim)
    x.requires_grad_()

    def f(x, root, inner):
        params = {"vertex_root": root, "vertex_inner": inner}
        return torch.func.functional_call(fp, params, (x, sc, attrs))

    root = fp.vertex_root.detach().clone().requires_grad_()
    inner = fp.vertex_inner.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(f, (x, root, inner), eps=1e-6, atol=1e-7, fast_mode=True)


def test_parameter_counts_against_mace():
    """64 channels, lmax 3, correlation 3, outputs 0e+1o, 3 elements (DESIGN.md: 16,512)."""
    from mace.modules.symmetric_contraction import SymmetricContraction

    C, E = 64, 3
    mace_sc = SymmetricContraction(
        o3.Irreps(_irreps(C, IRS)), o3.Irreps(_irreps(C, "0e+1o")), correlation=3, num_elements=E
    )
    n_mace = sum(p.numel() for p in mace_sc.parameters() if p.requires_grad)
    counts = {}
    for basis, weights in [("full", "path"), ("independent", "path"), ("independent", "vertex")]:
        fp = FusionProduct(
            _irreps(C, IRS), _irreps(C, "0e+1o"), 3, num_elements=E, basis=basis, weights=weights
        )
        n_lin = sum(p.numel() for p in fp.linear.parameters())
        counts[basis, weights] = sum(p.numel() for p in fp.parameters() if p.requires_grad) - n_lin
    print(f"\nproduct-basis weights: mace {n_mace}, fusion {counts}")
    assert n_mace == 16512
    assert counts["full", "path"] == n_mace
    assert counts["independent", "path"] == E * C * (1 + 4 + 8 + 1 + 3 + 12) == 5568
    assert counts["independent", "path"] / n_mace <= 1 / 3 + 0.005
    assert counts["independent", "vertex"] < n_mace


def test_agnostic_product_ignores_species_and_empty_input():
    """One weight set for every species: the output does not depend on node_attrs at all
    (other one-hots, or none that fits the element count), and equals the per-species block
    whose species all carry that weight set."""
    C = 2
    fp = FusionProduct(
        _irreps(C, IRS), _irreps(C, "0e+1o"), 3, num_elements=4, use_agnostic_product=True
    ).to(F64)
    assert fp.weight.shape[0] == 1
    x, sc, attrs = _inputs(6, C, 4, fp.irreps_out.dim)
    out = fp(x, sc, attrs)
    assert out.shape == (6, 4 * C)
    shuffled = attrs[torch.tensor([3, 5, 0, 1, 4, 2])]
    assert not torch.equal(shuffled, attrs)
    torch.testing.assert_close(fp(x, sc, shuffled), out, atol=0, rtol=0)
    torch.testing.assert_close(fp(x, sc, torch.zeros(6, 1, dtype=F64)), out, atol=0, rtol=0)
    per_species = FusionProduct(_irreps(C, IRS), _irreps(C, "0e+1o"), 3, num_elements=4).to(F64)
    with torch.no_grad():
        per_species.weight.copy_(fp.weight.expand(4, -1, -1))
        per_species.linear.load_state_dict(fp.linear.state_dict())
    torch.testing.assert_close(per_species(x, sc, attrs), out, atol=1e-12, rtol=1e-12)
    with torch.no_grad():  # a second species' weights now differ: that block is not agnostic
        per_species.weight[1] += 1.0
    assert (per_species(x, sc, attrs) - out).abs().max() > 1e-3
    assert fp(x[:0], sc[:0], attrs[:0]).shape == (0, 4 * C)


def test_bad_irreps_are_named():
    with pytest.raises(ValueError, match="one multiplicity"):
        FusionProduct("4x0e+2x1o", "4x0e", 2, num_elements=1)
    with pytest.raises(ValueError, match="channel count"):
        FusionProduct("4x0e+4x1o", "2x0e", 2, num_elements=1)


def test_torchscript_and_compile():
    """e3nn's jit.compile (TorchScript, as mace deploys models) and torch.compile on CPU."""
    torch.manual_seed(0)
    C, E = 3, 2
    fp = FusionProduct(_irreps(C, IRS), _irreps(C, "0e+1o"), 3, num_elements=E).to(F64)
    x, sc, attrs = _inputs(10, C, E, fp.irreps_out.dim)
    ref = fp(x, sc, attrs)
    scripted = jit.compile(fp, in_place=False)
    torch.testing.assert_close(scripted(x, sc, attrs), ref, atol=1e-12, rtol=1e-12)
    compiled = torch.compile(fp, backend="aot_eager")
    xx = x.clone().requires_grad_()
    out = compiled(xx, sc, attrs)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-12)
    (g,) = torch.autograd.grad(out.sum(), xx)
    xr = x.clone().requires_grad_()
    (g_ref,) = torch.autograd.grad(fp(xr, sc, attrs).sum(), xr)
    torch.testing.assert_close(g, g_ref, atol=1e-12, rtol=1e-12)


def test_float32_matches_float64():
    torch.manual_seed(0)
    C, E = 4, 3
    fp = FusionProduct(_irreps(C, IRS), _irreps(C, "0e+1o+2e"), 3, num_elements=E)
    x, sc, attrs = _inputs(20, C, E, fp.irreps_out.dim, dtype=torch.float32)
    out32 = fp(x, sc, attrs)
    out64 = fp.to(F64)(x.double(), sc.double(), attrs.double())
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), out64, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"correlation": 0}, "correlation must be an integer >= 1, got 0"),
        ({"num_elements": 0}, "num_elements must be >= 1, got 0"),
    ],
)
def test_impossible_settings_are_named(kwargs, message):
    args = {"node_feats_irreps": "4x0e+4x1o", "target_irreps": "4x0e+4x1o", "correlation": 2,
            "num_elements": 2, **kwargs}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        FusionProduct(**args)


@pytest.mark.parametrize(
    ("inputs", "outputs", "corr", "zero"),
    [
        ("0e+1o", "0e+3o", 2, ["3o"]),  # no chain path reaches 3o
        ("0e+1o", "0e+1e", 2, ["1e"]),  # 1o x 1o -> 1e is antisymmetric: zero on x (x) x
        ("0e+1o", "0o+1o", 3, ["0o"]),  # x . (x cross x) = 0
    ],
)
def test_unreachable_outputs_are_zero_and_reported(inputs, outputs, corr, zero):
    """mace-torch builds these (its output there is zero too); so do we, with no weights for
    the unreachable outputs, a warning naming them and exact zeros there."""
    C, E = 3, 2
    with pytest.warns(UserWarning, match=rf"output irrep\(s\) {zero[0]} cannot be reached"):
        fp = FusionProduct(_irreps(C, inputs), _irreps(C, outputs), corr, num_elements=E)
    fp = fp.to(F64)
    assert fp.unreachable_outputs == zero
    counts = fp.symmetric_basis.counts()
    assert all(n == 0 for n in counts[zero[0]].values())
    assert sum(n for per_nu in counts.values() for n in per_nu.values()) == fp.weight.shape[1]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(9, C, o3.Irreps(inputs).dim, generator=g, dtype=F64)
    attrs = torch.eye(E, dtype=F64)[torch.randint(0, E, (9,), generator=g)]
    out = fp.product_basis(x, attrs)
    for (_, ir), sl in zip(fp.irreps_out, fp.irreps_out.slices()):
        block = out[:, sl]
        if str(ir) in zero:
            assert torch.equal(block, torch.zeros_like(block))
        else:
            assert block.abs().max() > 1e-3


def test_wrong_input_shapes_are_named():
    block = FusionProduct("4x0e+4x1o", "4x0e+4x1o", correlation=2, num_elements=2)
    one_hot = torch.eye(2)[[0, 1, 0, 1, 0]]
    with pytest.raises(ValueError, match=r"node_feats must have shape \[N, 4, 4\].*\[5, 4, 9\]"):
        block(torch.randn(5, 4, 9), None, one_hot)
    with pytest.raises(ValueError, match=r"one-hot of shape \[N=5, 2 elements\], got \[5, 3\]"):
        block(torch.randn(5, 4, 4), None, torch.ones(5, 3))
    assert block(torch.randn(5, 4, 4), None, one_hot).shape == (5, 16)
