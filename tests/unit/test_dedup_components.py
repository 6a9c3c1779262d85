"""The large-star / small-star rounds find the same components as union-find."""
from __future__ import annotations

import random
from collections import defaultdict

import pyarrow as pa
import pytest

from curate.dedup.blocks import runs
from curate.dedup.components import CENTRE, EDGE, NOT_STAR, components, contract, large_star, small_star


def star_rounds(edges: list[tuple[str, str]], max_rounds: int = 50) -> dict[str, str]:
    """The distributed algorithm with Python dicts standing in for the shuffles."""
    current = set(edges)
    for _ in range(max_rounds):
        nbrs = defaultdict(list)
        for a, b in current:
            nbrs[a].append(b)
            nbrs[b].append(a)
        out = [row for u, vs in nbrs.items() for row in large_star(u, vs)]
        if not any(tag == NOT_STAR for _, _, tag in out):
            labels = {b: a for a, b, tag in out if tag == EDGE}
            labels.update({a: a for a, _, tag in out if tag == CENTRE})
            return labels
        smaller = defaultdict(list)
        for a, b, tag in out:
            if tag == EDGE:
                smaller[b].append(a)
        current = {pair for hi, lo in smaller.items() for pair in small_star(hi, lo)}
    raise AssertionError("no convergence")


@pytest.mark.parametrize("seed", range(6))
def test_star_rounds_match_union_find(seed):
    rng = random.Random(seed)
    nodes = [f"n{i:03d}" for i in range(120)]
    edges = set()
    for _ in range(90):
        a, b = sorted(rng.sample(nodes, 2))
        edges.add((a, b))
    # A long path too: the worst case of plain label propagation.
    path = sorted(rng.sample(nodes, 30), key=lambda _: rng.random())
    edges |= {tuple(sorted(p)) for p in zip(path, path[1:])}
    assert star_rounds(sorted(edges)) == components(sorted(edges))


def test_contract_keeps_components():
    edges = [("b", "c"), ("c", "d"), ("a", "d"), ("x", "y")]
    t = contract(pa.table({"a": [e[0] for e in edges], "b": [e[1] for e in edges]}))
    assert components(list(zip(t.column("a").to_pylist(), t.column("b").to_pylist()))) == components(edges)
    assert set(t.column("a").to_pylist()) == {"a", "x"}  # stars to the local minimum


def test_runs():
    assert list(runs(["a", "a", "b", "c", "c", "c"])) == [(0, 2), (2, 3), (3, 6)]
    assert list(runs([])) == []
