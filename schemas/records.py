"""Arrow schemas of every record kind raymill reads and writes.

Each kind is a `RecordKind`: a name, a version, the required fields and the
optional (label) fields, each field documented in its Arrow metadata so the
documentation travels with every Parquet file written.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa


def doc_field(name: str, type_: pa.DataType, doc: str, nullable: bool = False) -> pa.Field:
    """A field whose documentation is stored in its Arrow metadata."""
    return pa.field(name, type_, nullable=nullable, metadata={"doc": doc})


MESSAGE_ROLES = ("user", "assistant", "tool")

MESSAGE_TYPE = pa.struct(
    [
        pa.field("role", pa.string(), nullable=False),
        pa.field("content", pa.string(), nullable=False),
        # JSON list of {"name", "arguments"} on assistant turns that call tools.
        pa.field("tool_calls", pa.string(), nullable=True),
    ]
)
MESSAGES_TYPE = pa.list_(pa.field("item", MESSAGE_TYPE, nullable=False))
HEADER_TYPE = pa.list_(
    pa.field("item", pa.struct([pa.field("name", pa.string()), pa.field("value", pa.string())]))
)
TIMESTAMP = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class RecordKind:
    name: str
    version: int
    required: tuple[pa.Field, ...]
    optional: tuple[pa.Field, ...] = ()
    # Document-like kinds carry stage labels as extra typed columns.
    allow_extra_columns: bool = True
    description: str = ""
    enums: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def schema(self) -> pa.Schema:
        """The full schema: required then optional fields, with kind and version metadata."""
        return pa.schema(
            list(self.required) + list(self.optional),
            metadata={"raymill.kind": self.name, "raymill.version": str(self.version)},
        )

    def field(self, name: str) -> pa.Field | None:
        for f in self.required + self.optional:
            if f.name == name:
                return f
        return None


RAW_PAGE = RecordKind(
    name="raw_page",
    version=1,
    description="One fetched web page as it came off the crawl, before any processing.",
    required=(
        doc_field("id", pa.string(), "Stable id of the raw record (WARC-Record-ID, or a hash of source+offset)."),
        doc_field("url", pa.string(), "Target URI of the fetch."),
        doc_field("raw", pa.binary(), "HTTP payload bytes as fetched (possibly truncated at the size cap)."),
        doc_field("source", pa.string(), "File or URI the record was read from."),
    ),
    optional=(
        doc_field("warc_record_id", pa.string(), "WARC-Record-ID of the response record.", True),
        doc_field("warc_date", TIMESTAMP, "Fetch time (WARC-Date), UTC.", True),
        doc_field("http_status", pa.int32(), "HTTP status code of the response.", True),
        doc_field("content_type", pa.string(), "MIME type from the Content-Type header, lower-cased, without parameters.", True),
        doc_field("charset", pa.string(), "Charset declared in the Content-Type header, if any.", True),
        doc_field("http_headers", HEADER_TYPE, "HTTP response headers in order.", True),
        doc_field("source_offset", pa.int64(), "Byte offset of the record in its source file.", True),
        doc_field("raw_truncated", pa.bool_(), "True when `raw` was cut at the size cap.", True),
    ),
)

DOCUMENT = RecordKind(
    name="document",
    version=1,
    description="Extracted text of one document with its labels; labels are extra typed columns.",
    required=(
        doc_field("id", pa.string(), "Unique document id."),
        doc_field("text", pa.string(), "Main text (after extraction, cleaning and masking)."),
    ),
    optional=(
        doc_field("url", pa.string(), "Source URL.", True),
        doc_field("source", pa.string(), "File the document came from.", True),
        doc_field("raw_id", pa.string(), "Lineage: id of the raw_page record it was extracted from.", True),
        doc_field("fetch_time", TIMESTAMP, "Fetch time of the raw record, UTC.", True),
        doc_field("lang", pa.string(), "Top language (ISO 639 code from fastText lid.176).", True),
        doc_field("lang_score", pa.float64(), "Probability of the top language.", True),
        doc_field("drop_reason", pa.string(), "In dropped outputs only: name of the first rule that dropped the row.", True),
        doc_field("drop_stage", pa.string(), "In dropped outputs only: stage that dropped the row.", True),
    ),
)

SFT_CONVERSATION = RecordKind(
    name="sft",
    version=1,
    description="One supervised fine-tuning conversation.",
    required=(
        doc_field("id", pa.string(), "Unique conversation id."),
        doc_field("messages", MESSAGES_TYPE, "Turns in order: user / assistant / tool; the system prompt lives in `system`."),
    ),
    optional=(
        doc_field("system", pa.string(), "System prompt.", True),
        doc_field("tools", pa.string(), "JSON list of tool (function) specifications available to the assistant.", True),
        doc_field("source", pa.string(), "Where the conversation came from (dataset name, generator).", True),
    ),
)

PREFERENCE_PAIR = RecordKind(
    name="preference",
    version=1,
    description="A prompt with a preferred (chosen) and a dispreferred (rejected) assistant response.",
    required=(
        doc_field("id", pa.string(), "Unique pair id."),
        doc_field("prompt", MESSAGES_TYPE, "Conversation up to the response; the last turn is the user's."),
        doc_field("chosen", pa.string(), "Preferred assistant response."),
        doc_field("rejected", pa.string(), "Dispreferred assistant response."),
    ),
    optional=(
        doc_field("system", pa.string(), "System prompt.", True),
        doc_field("chosen_score", pa.float64(), "Score of the chosen response (reward model or judge).", True),
        doc_field("rejected_score", pa.float64(), "Score of the rejected response.", True),
        doc_field("margin", pa.float64(), "chosen_score - rejected_score.", True),
        doc_field("judge", pa.string(), "Identity of the reward model or judge that ranked the pair.", True),
        doc_field("source", pa.string(), "Where the pair came from.", True),
    ),
)

RANKED_PREFERENCE = RecordKind(
    name="ranked_preference",
    version=1,
    description="A prompt with K >= 2 assistant responses ranked best first (InstructGPT-style ranking data).",
    required=(
        doc_field("id", pa.string(), "Unique list id."),
        doc_field("prompt", MESSAGES_TYPE, "Conversation up to the responses; the last turn is the user's."),
        doc_field("responses", pa.list_(pa.field("item", pa.string(), nullable=False)),
                  "Assistant responses, best first; at least two."),
    ),
    optional=(
        doc_field("system", pa.string(), "System prompt.", True),
        doc_field("scores", pa.list_(pa.field("item", pa.float64(), nullable=False)),
                  "One score per response, non-increasing (the ranking's source numbers).", True),
        doc_field("judge", pa.string(), "Who ranked the responses (annotators, reward model, judge).", True),
        doc_field("source", pa.string(), "Where the list came from.", True),
    ),
)

PROMPT = RecordKind(
    name="prompt",
    version=1,
    description="A prompt for rollouts (sampling, PPO, preference building).",
    required=(
        doc_field("id", pa.string(), "Unique prompt id."),
        doc_field("prompt", MESSAGES_TYPE, "Conversation to continue; the last turn is the user's."),
    ),
    optional=(
        doc_field("system", pa.string(), "System prompt.", True),
        doc_field("source", pa.string(), "Where the prompt came from.", True),
    ),
)

SCORED_SAMPLE = RecordKind(
    name="scored_sample",
    version=1,
    description="One sampled response to a prompt, with its score.",
    required=(
        doc_field("id", pa.string(), "Unique sample id."),
        doc_field("prompt_id", pa.string(), "Id of the prompt record."),
        doc_field("prompt", MESSAGES_TYPE, "The prompt conversation."),
        doc_field("response", pa.string(), "Sampled assistant response."),
        doc_field("sample_index", pa.int32(), "Index of this sample among the N drawn for the prompt."),
    ),
    optional=(
        doc_field("system", pa.string(), "System prompt.", True),
        doc_field("score", pa.float64(), "Reward-model or judge score.", True),
        doc_field("scorer", pa.string(), "Identity of the scorer.", True),
        doc_field("policy", pa.string(), "Identity of the model that generated the response.", True),
        doc_field("finish_reason", pa.string(), "Why generation stopped: stop / length / error.", True),
        doc_field("prompt_tokens", pa.int64(), "Prompt length in tokens.", True),
        doc_field("completion_tokens", pa.int64(), "Response length in tokens.", True),
    ),
)

KINDS: dict[str, RecordKind] = {
    k.name: k for k in (RAW_PAGE, DOCUMENT, SFT_CONVERSATION, PREFERENCE_PAIR, RANKED_PREFERENCE, PROMPT,
                        SCORED_SAMPLE)
}


def get_kind(name: str) -> RecordKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown record kind {name!r}; known kinds: {sorted(KINDS)}") from None
