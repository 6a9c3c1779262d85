"""Dedup on Ray Data: every global step is a sort shuffle; nothing is collected in one process.

Plan (arrows are maps over blocks; [sort k] is a shuffle that puts all rows of a key in one block):
  documents -> light rows (keys, rank, shingle hashes)                  materialised once
  light -> (bucket, id) [sort bucket] -> edges + repeated-id reports
  band edges + shingles [sort a] -> + shingles [sort b] -> true-Jaccard check
  edges -> union-find per block -> large-star [sort u] / small-star [sort b] rounds -> stars
  stars + light [sort node] -> members [sort root] -> survivor decisions
  documents + decisions [sort id] -> labels and drops

Ray Data's joins and hash group-bys start aggregator actors per operation, which costs
seconds each; the sort shuffle runs as plain tasks, so this module sets it on its own
copy of the data context and builds joins as sorted co-groups (see blocks.py).
"""
from __future__ import annotations

import logging
import math

import pyarrow as pa
import pyarrow.compute as pc

from curate.dedup import blocks
from curate.dedup.candidates import BAND, DUP_ID, EXACT
from curate.dedup.components import NOT_STAR, both_directions, contract
from curate.dedup.config import DedupConfig
from curate.dedup.features import LIGHT_SCHEMA, bucket_rows, light_rows
from curate.dedup.survivor import (DECISION_SCHEMA, LABEL_COLUMNS, LABEL_FIELDS, duplicate_id_error, finalize,
                                   is_dropped, pass_through)
from curate.stage import DROP_REASON, DROP_STAGE

log = logging.getLogger(__name__)
_OLD = "_old_"  # prefix of label columns already on the input, restored on rows dropped earlier
_SIDE = "_side"  # in the final co-group: 0 = document row, 1 = decision row
_DECISION_COLUMNS = DECISION_SCHEMA.names[1:]
_BLOCK_BYTES = 128 << 20  # automatic shuffle_blocks: about this much data per block


# --- batch functions (module level so Ray pickles them by reference) ---------------------------

def _light_batch(table: pa.Table, config: DedupConfig) -> pa.Table:
    active = table.filter(pc.invert(is_dropped(table)))
    return light_rows(active, config) if active.num_rows else LIGHT_SCHEMA.empty_table()


def _keep_kind(table: pa.Table, kinds: tuple[str, ...]) -> pa.Table:
    return table.filter(pc.is_in(table.column("kind"), value_set=pa.array(kinds, pa.string())))


def _keep_tag(table: pa.Table, tag: int) -> pa.Table:
    return table.filter(pc.equal(table.column("tag"), pa.scalar(tag, pa.int8())))


def _star_labels(table: pa.Table) -> pa.Table:
    """Final large-star rows -> (node, root): leaves from edges, roots from centre rows."""
    edges = _keep_tag(table, 0)
    centres = _keep_tag(table, 1)
    return pa.table({
        "node": pa.concat_arrays([edges.column("b").combine_chunks(), centres.column("a").combine_chunks()]),
        "root": pa.concat_arrays([edges.column("a").combine_chunks(), centres.column("a").combine_chunks()]),
    })


def _stash_old_labels(table: pa.Table) -> pa.Table:
    return table.rename_columns([_OLD + c if c in LABEL_COLUMNS else c for c in table.column_names])


def _row_side(table: pa.Table) -> pa.Table:
    n = table.num_rows
    for f in DECISION_SCHEMA:
        if f.name != "id":
            table = table.append_column(f.name, pa.nulls(n, f.type))
    return table.append_column(_SIDE, pa.array([0] * n, pa.int8()))


def _decision_side(table: pa.Table, doc_columns: list[str]) -> pa.Table:
    # Document columns as all-null arrays of type null: they promote to any type in the
    # sort's concatenation, so this needs no knowledge of the documents' column types.
    n = table.num_rows
    columns = {name: table.column(name) if name in table.column_names else pa.nulls(n) for name in doc_columns}
    for f in DECISION_SCHEMA:
        columns[f.name] = table.column(f.name)
    columns[_SIDE] = pa.array([1] * n, pa.int8())
    return pa.table(columns)


def _final_block(block: pa.Table, config: DedupConfig, columns: list[str]) -> pa.Table:
    """Sorted co-group of documents and decisions -> labeled documents in the output schema."""
    is_decision = pc.fill_null(pc.equal(block.column(_SIDE), pa.scalar(1, pa.int8())), False)
    decisions = block.filter(is_decision)
    rows = block.filter(pc.invert(is_decision)).drop_columns([_SIDE, *_DECISION_COLUMNS])
    where = {doc_id: i for i, doc_id in enumerate(decisions.column("id").to_pylist())}
    index = pa.array([where.get(d) for d in rows.column("id").to_pylist()], pa.int64())
    for name in _DECISION_COLUMNS:
        rows = rows.append_column(name, decisions.column(name).take(index))
    dropped = is_dropped(rows)
    old = [c for c in rows.column_names if c.startswith(_OLD)]
    active = finalize(rows.filter(pc.invert(dropped)).drop_columns(old), config)
    done = rows.filter(dropped).drop_columns(list(_DECISION_COLUMNS))
    done = pass_through(done.rename_columns([c[len(_OLD):] if c in old else c for c in done.column_names]))
    out = pa.concat_tables([_conform(active, columns), _conform(done, columns)], promote_options="permissive")
    return _conform(out, columns)


_OWN_FIELDS = (pa.field(DROP_REASON, pa.string()), pa.field(DROP_STAGE, pa.string()), *LABEL_FIELDS)


def output_columns(input_names: list[str]) -> list[str]:
    """Input columns in order, then drop_reason/drop_stage and the dedup labels where missing."""
    return list(input_names) + [f.name for f in _OWN_FIELDS if f.name not in input_names]


def _conform(table: pa.Table, names: list[str]) -> pa.Table:
    """Columns in output order; the columns dedup owns get their fixed types (others stay as read)."""
    table = table.select(names)
    for f in _OWN_FIELDS:
        table = table.set_column(names.index(f.name), f.name, table.column(f.name).cast(f.type))
    return table


_SUMMARY_IDS = 6  # repeated ids a summary row carries per block (the error names at most five)


def _kind_summary(table: pa.Table) -> pa.Table:
    """Per block of candidates: one (kind, id) row per repeated id (a few) and one per band pair kind.

    Far smaller than the candidates themselves; the driver reads all of it back at once.
    """
    kinds = table.column("kind")
    repeated = table.filter(pc.equal(kinds, DUP_ID)).column("a").to_pylist()[:_SUMMARY_IDS]
    rows = [(DUP_ID, i) for i in repeated]
    if pc.any(pc.equal(kinds, BAND)).as_py():
        rows.append((BAND, None))
    return pa.table({"kind": pa.array([k for k, _ in rows], pa.string()),
                     "id": pa.array([i for _, i in rows], pa.string())})


def _schema_names(docs) -> list[str]:
    """Column names of a materialised dataset, from its block metadata."""
    schema = docs.schema(fetch_if_missing=False)
    if schema is None:  # not recorded with the blocks: read it from the first one (no re-run)
        schema = docs.schema()
    return list(schema.names) if schema is not None else []


def _unstashed(names: list[str]) -> list[str]:
    """The input's own column names back from the stashed copy's (see _stash_old_labels)."""
    return [n[len(_OLD):] if n.startswith(_OLD) and n[len(_OLD):] in LABEL_COLUMNS else n for n in names]


# --- the driver ------------------------------------------------------------------------------

def _map(ds, fn, **kwargs):
    return ds.map_batches(fn, batch_format="pyarrow", fn_kwargs=kwargs or None, zero_copy_batch=True)


def _grouped(ds, key: str, fn, parts: int, **kwargs):
    """Sort by `key`, then run `fn` on whole blocks: each key's rows arrive together, in one block.

    The input is first cut or merged (no shuffle) into `parts` blocks: the sort makes as
    many output blocks as it gets and parts x parts pieces in between, and unions add up.
    """
    return ds.repartition(parts).sort(key).map_batches(fn, batch_format="pyarrow", batch_size=None,
                                                        fn_kwargs=kwargs or None)


def shuffle_parts(config: DedupConfig, docs) -> int:
    """Blocks per shuffle: configured, else max(cluster CPUs, documents' size / ~128 MiB).

    The light rows' shingle hashes take about as many bytes as the text, hence the 2x.
    """
    if config.shuffle_blocks is not None:
        return config.shuffle_blocks
    import ray

    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    return max(cpus, math.ceil(2 * (docs.size_bytes() or 0) / _BLOCK_BYTES))


def connected_components(edges, max_rounds: int, parts: int):
    """(a, b) edges -> (node, root) for every node; root = smallest id of the component."""
    current = edges.map_batches(contract, batch_format="pyarrow", batch_size=None)
    for round_no in range(1, max_rounds + 1):
        large = _grouped(_map(current, both_directions), "u", blocks.large_star_block, parts).materialize()
        if not _map(large, _keep_tag, tag=NOT_STAR).take(1):  # the input was one star per component
            log.info("dedup: components converged after %d round(s)", round_no)
            return _map(large, _star_labels)
        current = _grouped(_map(large, blocks.keep_edges), "b", blocks.small_star_block, parts).materialize()
    raise RuntimeError(f"dedup: connected components did not converge in {max_rounds} rounds "
                       "(raise max_rounds)")


def _verify(found, light, threshold: float, parts: int):
    shingles = _map(light.select_columns(["id", "_shingles"]), blocks.shingle_side)
    band = _map(_map(found, _keep_kind, kinds=(BAND,)), blocks.edge_side)
    with_a = _grouped(band.union(shingles), "_k", blocks.attach_a_block, parts)
    return _grouped(with_a.union(shingles), "_k", blocks.verify_b_block, parts, threshold=threshold)


def deduplicate(ds, config: DedupConfig | dict | None = None):
    """Label duplicate clusters and mark duplicates dropped; every input row comes out once.

    Rows with drop_reason already set pass through (null dedup labels) and take no part.
    Raises ValueError naming ids that occur more than once among the active rows.
    """
    from ray.data.context import ShuffleStrategy

    config = DedupConfig.from_any(config)
    # Materialised: the documents are read twice (features, final co-group). The copy has its
    # own DataContext, so choosing the shuffle here leaves the caller's datasets alone.
    # The output columns come from this copy's schema (block metadata, no execution): asking
    # the lazy input `ds.schema()` would run the whole upstream pipeline once more on a
    # `limit(1)` plan (reader, extraction, model actor pools) just to learn its columns.
    docs = _map(ds, _stash_old_labels).materialize()
    docs.context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    doc_columns = _schema_names(docs)
    columns = output_columns(_unstashed(doc_columns))
    parts = shuffle_parts(config, docs)
    log.info("dedup: %d block(s) per shuffle", parts)
    if docs.num_blocks() > parts:
        # Many small blocks (curate's batch-sized ones): fewer tasks and larger MinHash batches
        # from here on. Lazy, not materialised: it fuses into the two reads of `docs` below
        # instead of costing an execution of its own.
        docs = docs.repartition(parts)
    light = _map(docs, _light_batch, config=config).materialize()

    decisions = None
    if light.count():  # materialised: the count is block metadata
        found = _grouped(_map(light, bucket_rows), "bucket", blocks.bucket_block, parts,
                         max_pairs_size=config.max_bucket_pairs).materialize()
        # One small pass for both questions about the candidates: repeated ids, band pairs.
        summary = _map(found, _kind_summary).take_all()
        repeated = [r["id"] for r in summary if r["kind"] == DUP_ID]
        if repeated:
            raise duplicate_id_error(repeated)
        edges = _map(found, _keep_kind, kinds=(EXACT,) if config.verify else (EXACT, BAND))
        if config.verify and any(r["kind"] == BAND for r in summary):
            edges = edges.union(_verify(found, light, config.threshold, parts))
        edges = edges.select_columns(["a", "b"]).materialize()
        if edges.count():
            labels = connected_components(edges, config.max_rounds, parts)
            members = _grouped(_map(labels, blocks.label_side).union(_map(light, blocks.light_side)),
                               "_k", blocks.member_block, parts)
            decisions = _grouped(members, "root", blocks.decision_block, parts).materialize()

    if decisions is None:
        return _map(docs, _final_block_direct, config=config, columns=columns)
    both = _map(docs, _row_side).union(_map(decisions, _decision_side, doc_columns=doc_columns))
    return _grouped(both, "id", _final_block, parts, config=config, columns=columns)


def _final_block_direct(table: pa.Table, config: DedupConfig, columns: list[str]) -> pa.Table:
    """No duplicates anywhere: every active row is a singleton."""
    n = table.num_rows
    table = table.append_column(_SIDE, pa.nulls(n, pa.int8()))
    for f in DECISION_SCHEMA:
        if f.name != "id":
            table = table.append_column(f.name, pa.nulls(n, f.type))
    return _final_block(table, config, columns)
