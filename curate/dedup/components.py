"""Connected components of the duplicate graph.

Nodes are document ids (strings); every component is named by its smallest id. The
pure union-find is the reference and the per-partition pre-contraction; the
large-star / small-star steps (Kiveris et al., "Connected Components in MapReduce
and Beyond", 2014) are the distributed rounds: each is one group-by over edges, and
alternating them turns any graph into one star per component in O(log^2 n) rounds.
"""
from __future__ import annotations

import pyarrow as pa

PAIR_SCHEMA = pa.schema([("a", pa.string()), ("b", pa.string())])
# Large-star output rows: tag 0 = edge (a < b), 1 = a is a star centre, 2 = the input was no star forest.
STAR_SCHEMA = pa.schema([("a", pa.string()), ("b", pa.string()), ("tag", pa.int8())])
EDGE, CENTRE, NOT_STAR = 0, 1, 2


class UnionFind:
    """Union by smallest id, so each root is its component's minimum."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        parent = self.parent
        root = parent.setdefault(x, x)
        while root != parent[root]:
            root = parent[root]
        while x != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    def union(self, x: str, y: str) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            lo, hi = (rx, ry) if rx < ry else (ry, rx)
            self.parent[hi] = lo

    def roots(self) -> dict[str, str]:
        return {x: self.find(x) for x in list(self.parent)}


def components(edges: list[tuple[str, str]]) -> dict[str, str]:
    """node -> smallest id of its component, for every node of `edges`."""
    uf = UnionFind()
    for a, b in edges:
        uf.union(a, b)
    return uf.roots()


def pairs_table(pairs: list[tuple[str, str]]) -> pa.Table:
    if not pairs:
        return PAIR_SCHEMA.empty_table()
    a, b = zip(*pairs)
    return pa.table({"a": list(a), "b": list(b)}, schema=PAIR_SCHEMA)


def contract(edges: pa.Table) -> pa.Table:
    """One partition's edges replaced by stars to their local minimum: same components, fewer rounds."""
    roots = components(list(zip(edges.column("a").to_pylist(), edges.column("b").to_pylist())))
    return pairs_table(sorted((root, node) for node, root in roots.items() if node != root))


def both_directions(edges: pa.Table) -> pa.Table:
    """(a, b) edges as (u, v) rows in both directions: the input of large-star."""
    a, b = edges.column("a"), edges.column("b")
    return pa.table({"u": pa.concat_arrays([a.combine_chunks(), b.combine_chunks()]),
                     "v": pa.concat_arrays([b.combine_chunks(), a.combine_chunks()])})


def large_star(u: str, neighbours: list[str]) -> list[tuple[str, str | None, int]]:
    """Link every larger neighbour of u to the smallest node of u's neighbourhood.

    Also reports whether u's neighbourhood already fits a star forest (at most one
    smaller neighbour, and not both smaller and larger ones): when no node reports
    otherwise, the input is final and this step changed nothing.
    """
    nbrs = set(neighbours)
    smaller = sum(v < u for v in nbrs)
    larger = len(nbrs) - smaller
    m = min(min(nbrs), u)
    out: list[tuple[str, str | None, int]] = [(m, v, EDGE) for v in sorted(nbrs) if v > u]
    if m == u and larger:
        out.append((u, None, CENTRE))
    if smaller > 1 or (smaller and larger):
        out.append((u, None, NOT_STAR))
    return out


def small_star(hi: str, smaller_neighbours: list[str]) -> list[tuple[str, str]]:
    """Link hi and its smaller neighbours to the smallest of them."""
    nbrs = set(smaller_neighbours)
    m = min(nbrs)
    return [(m, v) for v in sorted(nbrs | {hi}) if v != m]
