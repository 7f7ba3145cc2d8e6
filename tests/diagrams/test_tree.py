"""Tree shapes: parsing, numbering, rendering, errors."""

import pytest

from fusion.diagrams.tree import Tree, left_comb


def test_parse_string_and_tuples_agree():
    t = Tree("((h, A), A)")
    assert t == Tree((("h", "A"), "A"))
    assert str(t) == "((h, A), A)"
    assert t.leaves == ("h", "A", "A")
    # leaves 0..m-1, vertices post-order (children before parents), root last
    assert t.children == ((0, 1), (3, 2))
    assert t.root == 4 and list(t.vertices) == [3, 4]
    assert t.to_nested() == (("h", "A"), "A")


@pytest.mark.parametrize(
    "spec, m",
    [
        ("h", 1),
        ("(a, b)", 2),
        ("((a, b), c)", 3),
        ("(a, (b, c))", 3),
        ("((a,b),(c,d))", 4),
        ("(((a, b), c), (d, e))", 5),
    ],
)
def test_shapes(spec, m):
    t = Tree(spec)
    assert t.num_leaves == m and t.num_nodes == 2 * m - 1
    for v in t.vertices:  # bottom-up order is valid
        assert all(c < v for c in t.vertex_children(v))
    assert sorted(t.subtree_leaves(t.root)) == list(range(m))
    assert Tree(str(t)) == t


def test_left_comb():
    assert left_comb(["h", "A", "A", "A"]) == Tree("(((h, A), A), A)")


def test_render_with_labels():
    text = Tree("((h, A), A)").render({0: "0e", 1: "1o", 2: "1o", 3: "1o", 4: "0e"})
    assert text.splitlines() == [
        "((h, A), A)",
        "vertex v1 (root)  0e",
        "+-- vertex v0  1o",
        "|   +-- leaf 0 'h'  0e",
        "|   +-- leaf 1 'A'  1o",
        "+-- leaf 2 'A'  1o",
    ]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("(a, b, c)", "binary"),
        ("((a, b), c", "expected ',' or ')'"),
        ("(a, 1b)", "unexpected '1'"),
        ("(a, b) c", "trailing text"),
        ("", "expected a leaf name"),
        ((("a", "b", "c"), "d"), "binary"),
        (("a", 3), "expected a leaf name or a pair"),
    ],
)
def test_bad_trees(spec, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Tree(spec)
