"""Every record kind: valid rows pass; each kind of invalid row fails naming kind, row and field."""
from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from schemas import KINDS, SchemaError, get_kind, table_from_rows, validate


def msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


VALID_ROWS = {
    "raw_page": {"id": "r1", "url": "https://example.com/a", "raw": b"<html></html>", "source": "crawl.warc.gz",
                 "warc_date": dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc), "http_status": 200,
                 "content_type": "text/html", "http_headers": [{"name": "Content-Type", "value": "text/html"}]},
    "document": {"id": "d1", "text": "Hello world.", "url": "https://example.com/a", "lang": "en", "lang_score": 0.9,
                 "raw_id": "r1"},
    "sft": {"id": "s1", "messages": [msg("user", "Hi"), msg("assistant", "Hello!")], "system": "Be brief."},
    "preference": {"id": "p1", "prompt": [msg("user", "Hi")], "chosen": "Hello!", "rejected": "Go away.",
                   "chosen_score": 1.0, "rejected_score": -1.0, "margin": 2.0, "judge": "rm-v1"},
    "ranked_preference": {"id": "k1", "prompt": [msg("user", "Hi")], "responses": ["Hello!", "Hi.", "Go away."],
                          "scores": [1.0, 0.5, -1.0], "judge": "annotators"},
    "prompt": {"id": "q1", "prompt": [msg("user", "Tell me a joke.")]},
    "scored_sample": {"id": "x1", "prompt_id": "q1", "prompt": [msg("user", "Hi")], "response": "Hello",
                      "sample_index": 0, "score": 0.5, "finish_reason": "stop"},
}


def test_every_kind_has_a_valid_example_and_documented_fields():
    assert set(VALID_ROWS) == set(KINDS)
    for name, kind in KINDS.items():
        for f in kind.required + kind.optional:
            assert f.metadata and f.metadata.get(b"doc"), f"{name}.{f.name} has no doc"


@pytest.mark.parametrize("kind", sorted(VALID_ROWS))
def test_valid_rows_pass_and_carry_kind_metadata(kind):
    table = table_from_rows([VALID_ROWS[kind]], kind)
    assert table.num_rows == 1
    assert table.schema.metadata[b"raymill.kind"] == kind.encode()
    assert table.schema.metadata[b"raymill.version"] == str(get_kind(kind).version).encode()
    # validating again is idempotent
    assert validate(table, kind).equals(table)


@pytest.mark.parametrize("kind", sorted(VALID_ROWS))
def test_missing_required_column_names_field(kind):
    required = get_kind(kind).required[-1].name
    row = {k: v for k, v in VALID_ROWS[kind].items() if k != required}
    with pytest.raises(SchemaError) as err:
        table_from_rows([row], kind)
    assert err.value.field == required and err.value.kind == kind
    assert required in str(err.value) and kind in str(err.value)


@pytest.mark.parametrize("kind", sorted(VALID_ROWS))
def test_null_in_required_field_names_row(kind):
    good = VALID_ROWS[kind]
    bad = dict(good, id=f"{good['id']}-bad")
    field = get_kind(kind).required[-1].name
    bad[field] = None
    with pytest.raises(SchemaError) as err:
        table_from_rows([good, bad], kind)
    assert err.value.row == 1 and err.value.field == field
    assert "row 1" in str(err.value) and f"{good['id']}-bad" in str(err.value)


@pytest.mark.parametrize("kind", sorted(VALID_ROWS))
def test_wrong_type_is_refused_not_cast(kind):
    table = table_from_rows([VALID_ROWS[kind]], kind)
    idx = table.column_names.index("id")
    wrong = table.set_column(idx, "id", pa.array([123], pa.int64()))
    with pytest.raises(SchemaError) as err:
        validate(wrong, kind)
    assert err.value.field == "id" and "int64" in str(err.value)


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown record kind 'nope'"):
        validate(pa.table({"id": ["a"]}), "nope")


@pytest.mark.parametrize("kind,field", [("sft", "messages"), ("preference", "prompt"), ("prompt", "prompt")])
def test_unknown_role_and_empty_conversation(kind, field):
    rows = [VALID_ROWS[kind], dict(VALID_ROWS[kind], id="bad", **{field: [msg("wizard", "hi")]})]
    with pytest.raises(SchemaError) as err:
        table_from_rows(rows, kind)
    assert err.value.field == f"{field}.role" and err.value.row == 1 and "wizard" in str(err.value)
    with pytest.raises(SchemaError, match="has no turns") as err:
        table_from_rows([dict(VALID_ROWS[kind], **{field: []})], kind)
    assert err.value.row == 0


def test_message_content_must_not_be_null():
    row = dict(VALID_ROWS["sft"], messages=[{"role": "user", "content": None}])
    with pytest.raises(SchemaError) as err:
        table_from_rows([row], "sft")
    assert err.value.field == "messages.content"


def test_large_string_and_missing_nullable_struct_child_are_accepted_losslessly():
    table = pa.table({
        "id": pa.array(["s1"], pa.large_string()),
        "messages": pa.array([[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]]),
    })
    out = validate(table, "sft")
    assert out.schema.field("id").type == pa.string()
    assert out.column("messages").to_pylist()[0][1] == {"role": "assistant", "content": "b", "tool_calls": None}


def test_struct_with_unexpected_child_is_refused():
    table = pa.table({"id": ["s1"], "messages": pa.array([[{"role": "user", "content": "a", "mood": "x"}]])})
    with pytest.raises(SchemaError, match="unexpected struct fields"):
        validate(table, "sft")


def test_document_keeps_extra_label_columns():
    table = table_from_rows([dict(VALID_ROWS["document"], gopher_word_count=2)], "document")
    assert table.column("gopher_word_count").to_pylist() == [2]


def test_value_that_cannot_be_read_names_row():
    rows = [VALID_ROWS["document"], dict(VALID_ROWS["document"], id="d2", lang_score="high")]
    with pytest.raises(SchemaError) as err:
        table_from_rows(rows, "document")
    assert err.value.row == 1 and err.value.field == "lang_score"
