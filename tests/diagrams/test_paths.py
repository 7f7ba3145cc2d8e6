"""Path enumeration: admissibility and counts against independent computations."""

import fusion._mace_first  # noqa: F401  (mace before e3nn)

# isort: split

import numpy as np
import pytest
from e3nn import o3

from fusion.diagrams.paths import FusionDiagram
from fusion.diagrams.tree import Tree

L3 = "0e+1o+2e+3o"


def character_multiplicities(leaf_irreps: list[str], lmax: int) -> dict:
    """Multiplicity of every (l, p) in the tensor product of the leaves, by O(3) characters.

    O(3) = SO(3) x {1, -1}; chi_(l,p)(R) = sin((2l+1)t/2) / sin(t/2), chi_(l,p)(-R) = p chi.
    Weyl integration over the rotation angle t with Gauss–Legendre quadrature.
    """
    x, w = np.polynomial.legendre.leggauss(200)
    t = (x + 1) * np.pi / 2
    w = w * np.pi / 2 * (1 - np.cos(t)) / np.pi  # Haar measure of the class function

    def chi(l):
        return np.sin((2 * l + 1) * t / 2) / np.sin(t / 2)

    prod_proper = np.ones_like(t)
    prod_improper = np.ones_like(t)
    for irreps in leaf_irreps:
        irs = [ir for _, ir in o3.Irreps(irreps)]
        prod_proper = prod_proper * sum(chi(ir.l) for ir in irs)
        prod_improper = prod_improper * sum(ir.p * chi(ir.l) for ir in irs)
    out = {}
    for l in range(lmax + 1):
        for p in (1, -1):
            m = 0.5 * (np.sum(w * prod_proper * chi(l)) + p * np.sum(w * prod_improper * chi(l)))
            out[o3.Irrep(l, p)] = int(round(m))
            assert abs(m - round(m)) < 1e-8
    return out


def irreps_product_counts(tree: Tree, leaf_irreps: list[str], L_int) -> o3.Irreps:
    """Root irreps by iterating e3nn Irreps products along the tree, capping internal l."""

    def product(r1: o3.Irreps, r2: o3.Irreps, cap) -> o3.Irreps:
        items = [
            (m1 * m2, ir)
            for m1, ir1 in r1
            for m2, ir2 in r2
            for ir in ir1 * ir2
            if cap is None or ir.l <= cap
        ]
        return o3.Irreps(items).sort().irreps.simplify()

    def rec(node):
        if tree.is_leaf(node):
            return o3.Irreps(leaf_irreps[node])
        a, b = tree.vertex_children(node)
        return product(rec(a), rec(b), None if node == tree.root else L_int)

    return rec(tree.root)


TREES = ["h", "(a, b)", "((a, b), c)", "(a, (b, c))", "(((a, b), c), d)", "((a, b), (c, d))"]


@pytest.mark.parametrize("spec", TREES)
def test_counts_equal_tensor_product_multiplicities(spec):
    tree = Tree(spec)
    leaves = ["0e+1o+2e", "0e+1o", "1o+2e+3o", "0e+1e"][: tree.num_leaves]
    mult = character_multiplicities(leaves, lmax=3)
    outs = [ir for ir, m in mult.items() if m > 0]
    d = FusionDiagram(tree, leaves, outs, L_int=None)  # no cap
    assert d.counts() == {ir: mult[ir] for ir in outs}
    # the same through e3nn's Irreps products
    prod = irreps_product_counts(tree, leaves, None)
    assert {ir: m for m, ir in prod if ir.l <= 3} == {ir: mult[ir] for ir in outs}


@pytest.mark.parametrize("spec", TREES[2:])
@pytest.mark.parametrize("L_int", [0, 1, 2])
def test_capped_counts(spec, L_int):
    tree = Tree(spec)
    leaves = [L3] * tree.num_leaves
    prod = irreps_product_counts(tree, leaves, L_int)
    outs = [ir for _, ir in prod if ir.l <= 3]
    d = FusionDiagram(tree, leaves, outs, L_int=L_int)
    assert d.counts() == {ir: m for m, ir in prod if ir.l <= 3}


def test_every_path_is_admissible_and_unique():
    tree = Tree("(((a, b), c), d)")
    d = FusionDiagram(tree, L3, "0e+1o+1e+2e", L_int=2)
    assert len(set(d.paths)) == len(d.paths) > 100
    leaf_labels = [ir for _, ir in o3.Irreps(L3)]
    for p in d.paths:
        for k in range(tree.num_leaves):
            assert p[k] in leaf_labels
        for v in tree.vertices:
            a, b = tree.vertex_children(v)
            assert p[v] in list(p[a] * p[b])  # triangle rule and parity
            if v != tree.root:
                assert p[v].l <= 2
        assert p[tree.root] in d.out_labels
    # paths are grouped by output label in irreps_out order
    roots = [p[tree.root] for p in d.paths]
    assert roots == sorted(roots, key=list(d.out_labels).index)


def test_render_marks_labels():
    d = FusionDiagram("((h, A), A)", {"h": "0e", "A": "0e+1o"}, "0e+1o", L_int=1)
    text = d.render()
    assert text.splitlines()[0] == "((h, A), A)  ->  {0e, 1o}   paths: 0e: 2, 1o: 2  (L_int=1)"
    assert "leaf 0 'h'  {0e}" in text
    one = d.render(1)
    assert one.splitlines()[0].startswith("((h, A), A)  path 1: h=0e A=1o A=1o v0=1o v1=0e")


def test_unreachable_output_names_tree_and_reachable_labels():
    with pytest.raises(ValueError) as err:
        FusionDiagram("((h, A), A)", {"h": "0e", "A": "0e+1o"}, "0e+3o", L_int=1)
    msg = str(err.value)
    assert "tree ((h, A), A) cannot produce output irreps 3o" in msg
    assert "L_int=1" in msg and "root can carry {0e, 1o, 1e, 2e}" in msg
    assert "leaf 1 'A'  {0e, 1o}" in msg  # the drawing of what each node reaches


def test_leaf_spec_errors():
    with pytest.raises(ValueError, match=r"missing \['A'\]"):
        FusionDiagram("(h, A)", {"h": "0e"}, "0e")
    with pytest.raises(ValueError, match="2 leaves .* but 3 irreps given"):
        FusionDiagram("(h, A)", ["0e", "0e", "0e"], "0e")
    with pytest.raises(ValueError, match="irreps of leaf 1 'A'.*listed more than once"):
        FusionDiagram("(h, A)", {"h": "0e", "A": "0e+0e"}, "0e")
    with pytest.raises(ValueError, match="irreps_out .*cannot read"):
        FusionDiagram("(h, A)", "0e", "zz")
