"""Main-text extraction: raw_page rows -> document rows, with trafilatura.

Config keys (YAML under `extract:`; all optional):

    favor_precision: true   trafilatura's precision mode (measured on ../shared/data/web,
                            90 pages, token F1 vs articleBody: precision 0.973 at ~68
                            pages/s; precision+fast 0.962 at ~117 pages/s; default
                            settings 0.964; favor_recall 0.963).
    fast: false             skip trafilatura's fallback extractors (readability/jusText):
                            ~1.7x faster for ~0.01 F1 on shared/data/web, but web_zh loses
                            9 of its 63 kept pages (the fallbacks rescue layout-table pages).
    fast: auto              fast mode except on CJK pages (Han/kana/Hangul in the decoded
                            HTML), which keep the full cascade: web 0.962 F1 at fast speed,
                            web_zh as with false (bench_curate_throughput.py --only levers).
    include_comments: false reader comments are not article text.
    include_tables: true
    max_bytes: 5242880      pages larger than this, or cut by the reader's size cap
                            (raw_truncated), are dropped as `too_large` (see below).
    timeout_s: 10.0         per-document wall-clock limit -> `extract_timeout`; 0 disables.
    min_chars: 1            shorter extractions count as `extraction_empty`.
    unwrap_layout_tables: true  when trafilatura prints the article as a cell of a layout
                            table ("| nav | article | nav |", a cell of 150+ characters), or
                            finds nothing, extract again with the layout tables turned into
                            <div>s, and take that if it keeps >= 80% of the longest cell's text
                            (bench/bench_curate_zh.py: web_zh extracted char F1 0.850 -> 0.883,
                            kept pages 17 -> 46 of 69; shared/data/web unchanged).
    prune_tags: [script, style, noscript, svg, iframe]  removed from the parsed page
                            before trafilatura walks it (never article text): +14% pages per
                            CPU-second with the fallbacks, +7% in fast mode, the same token F1
                            on shared/data/web (bench_curate_throughput.py --only levers).

Drop reasons (stage `extract`): `empty_body`, `binary_content`, `too_large`,
`extract_timeout`, `extraction_error`, `extraction_empty`.

Why drop, not truncate, oversized pages: a page cut mid-HTML yields a partial
article with its tail missing, which is worse training text than none; the drop is
counted, and 5 MB is far above real article pages (Common Crawl itself cuts at 1 MiB).

Charset: bytes that are valid UTF-8 are read as UTF-8 whatever the page declares
(non-ASCII text in a legacy 8-bit charset is almost never valid UTF-8, while pages
that declare latin-1 and serve UTF-8 are common); otherwise the HTTP header charset,
then the <meta> charset, if the bytes decode in it; then a declared multi-byte CJK charset
(GB2312, Big5, Shift_JIS ...) read with replacement when it errs on at most 1 in 200 non-ASCII
bytes and less than UTF-8 does (a stray byte must not turn a GB2312 page into mojibake); then UTF-8 with replacement
characters when at most 1 byte in 200 is invalid (legacy-charset text has far more);
then charset_normalizer's guess (Western code pages read as windows-1252; a non-CJK,
non-Western guess yields to a CJK multi-byte code that decodes as cleanly as above); finally
UTF-8 with replacement. The charset used is the `charset_used` label
("utf-8-replace" when invalid bytes became U+FFFD).

Output: the document kind (id, text, url, source, raw_id, fetch_time) plus the
labels earlier stages added; the bulky `raw` and `http_headers` columns are removed
from every row, dropped or not.
"""
from __future__ import annotations

import codecs
import ctypes
import itertools
import logging
import os
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa

from schemas.options import from_mapping
from curate.stage import DROP_REASON, DROP_STAGE, Stage, active_mask, check_strings
from schemas.records import DOCUMENT

# Columns of raw_page that do not travel into documents: payload and headers are
# bulky, warc_record_id duplicates raw_id and warc_date becomes fetch_time.
_RAW_ONLY = ("raw", "http_headers", "warc_record_id", "warc_date")

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_.:-]+)""", re.IGNORECASE)
# WHATWG encoding aliases that matter in practice: browsers read these labels as the superset.
_CHARSET_ALIASES = {"iso-8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252", "us-ascii": "cp1252",
                    "ascii": "cp1252", "iso8859-1": "cp1252", "gb2312": "gb18030", "gbk": "gb18030",
                    "shift_jis": "cp932", "sjis": "cp932", "x-sjis": "cp932", "euc-kr": "cp949",
                    "ks_c_5601-1987": "cp949", "windows-874": "cp874", "tis-620": "cp874"}
_BINARY_MAGIC = (b"%PDF", b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"PK\x03\x04", b"\x1f\x8b", b"RIFF",
                 b"\x00\x00\x01\x00", b"OggS", b"ID3", b"\x7fELF", b"MZ", b"wOFF", b"wOF2", b"\xd0\xcf\x11\xe0")
_WESTERN_SINGLE_BYTE = frozenset({"cp1250", "cp1252", "cp1254", "cp1257", "cp1258", "iso8859-1", "iso8859-2", "iso8859-3",
                                  "iso8859-4", "iso8859-9", "iso8859-10", "iso8859-13", "iso8859-14", "iso8859-15",
                                  "iso8859-16", "mac-roman", "mac-latin2", "cp437", "cp850"})
_CONTROL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 12, 13))


FAST_AUTO = "auto"
# Elements that never hold article text, removed from the parsed page before trafilatura
# walks it: its tree copies and XPath pruning then run on a smaller tree (bench levers,
# shared/data/web: +14% pages per CPU-second with the fallbacks, +7% in fast mode, the
# same token F1; nav/aside/footer/form would cost 0.02 F1, so they stay).
DEFAULT_PRUNE_TAGS = ("script", "style", "noscript", "svg", "iframe")


@dataclass
class ExtractConfig:
    favor_precision: bool = True
    fast: bool | str = FAST_AUTO  # True, False or "auto" (fast except on CJK pages)
    include_comments: bool = False
    include_tables: bool = True
    max_bytes: int = 5 * 1024 * 1024
    timeout_s: float = 10.0
    min_chars: int = 1
    unwrap_layout_tables: bool = True
    prune_tags: list[str] = field(default_factory=lambda: list(DEFAULT_PRUNE_TAGS))

    @classmethod
    def from_dict(cls, cfg: dict | None) -> "ExtractConfig":
        return from_mapping(cls, cfg, "extract")

    def __post_init__(self) -> None:
        if self.fast not in (True, False, FAST_AUTO):
            raise ValueError(f"extract.fast: expected true, false or {FAST_AUTO!r}, got {self.fast!r}")
        check_strings("extract.prune_tags", self.prune_tags, non_empty=True)


# Han, kana, Hangul: pages written in these keep trafilatura's full cascade under fast=auto.
_CJK_CHARS = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
# CJK characters in the decoded HTML from which a page counts as CJK: a Latin page may hold
# a few (a name, a language menu); an article in Chinese holds hundreds.
CJK_PAGE_MIN_CHARS = 50


# Every Han, kana and Hangul character above is three bytes in UTF-8, led by a byte in
# 0xE3-0xED; bytes.translate deletes all other bytes in one C pass.
_NOT_CJK_LEAD_BYTES = bytes(b for b in range(256) if not 0xE3 <= b <= 0xED)


def is_cjk_page(html: str) -> bool:
    """True when the page's text is Chinese, Japanese or Korean (counted in the decoded HTML:
    markup is ASCII, so the count is the text's)."""
    # Upper bound first: fewer possible lead bytes than the threshold settles a Latin page
    # ~7x faster than the regex scan of its whole HTML (~0.6 ms for a 180 KB page).
    lead_bytes = html.encode("utf-8", "surrogatepass").translate(None, _NOT_CJK_LEAD_BYTES)
    if len(lead_bytes) < CJK_PAGE_MIN_CHARS:
        return False
    count = 0
    for _ in _CJK_CHARS.finditer(html):
        count += 1
        if count >= CJK_PAGE_MIN_CHARS:
            return True
    return False


# ---------------------------------------------------------------- bytes -> str

def normalize_charset(name: str | None) -> str | None:
    if not name:
        return None
    name = name.strip().strip("'\"").lower()
    name = _CHARSET_ALIASES.get(name, name)
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def meta_charset(raw: bytes) -> str | None:
    match = _META_CHARSET.search(raw[:4096])
    return match.group(1).decode("ascii", "replace") if match else None


def decode_html(raw: bytes, declared: str | None = None) -> tuple[str, str]:
    """(text, charset used); never raises. See the module docstring for the order."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16", errors="replace"), "utf-16"
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    for candidate in (declared, meta_charset(raw)):
        charset = normalize_charset(candidate)
        if charset and charset != "utf-8":
            try:
                return raw.decode(charset), charset
            except UnicodeDecodeError:
                continue
    text = raw.decode("utf-8", errors="replace")
    utf8_errors = text.count("\ufffd")
    # A declared multi-byte charset (GB2312, Shift_JIS, Big5 ...) that fails on a few stray
    # bytes is still the page's charset: a mostly-markup GB2312 page has few non-ASCII bytes,
    # so the UTF-8 test below would accept it and garble every Chinese character.
    declared_cjk = _lenient_cjk_decode(raw, (declared, meta_charset(raw)), utf8_errors)
    if declared_cjk is not None:
        return declared_cjk
    # A few stray bytes in an otherwise UTF-8 page (a bad paste, a cut multi-byte
    # character): keep UTF-8 and mark them, rather than re-reading the page as a legacy
    # charset, which would garble every non-ASCII character.
    if utf8_errors * 200 <= len(raw):
        return text, "utf-8-replace"
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(raw[:65536]).best()
        charset = normalize_charset(best.encoding) if best is not None else None
        if charset in _WESTERN_SINGLE_BYTE:
            # Detectors cannot tell the Latin code pages apart on short text and guess
            # e.g. cp1257 for French; browsers read all of them as windows-1252 (WHATWG).
            charset = "cp1252"
        elif charset not in _CJK_MULTI_BYTE:
            # An undeclared GBK page with a stray byte was guessed as Kazakh ptcp154
            # (web_zh 6dc2d508). Cyrillic/Greek/... text read as a CJK double-byte code
            # fails on every odd-length word; real CJK text fails almost never.
            guessed_cjk = _lenient_cjk_decode(raw, _CJK_MULTI_BYTE, utf8_errors)
            if guessed_cjk is not None:
                return guessed_cjk
        if charset and charset != "utf-8":
            return raw.decode(charset, errors="replace"), charset
    except Exception:  # noqa: BLE001 - guessing is best-effort; the fallback below always works
        pass
    return text, "utf-8-replace"


# Legacy multi-byte codes of Chinese, Japanese and Korean pages (codecs' canonical names).
_CJK_MULTI_BYTE = ("gb18030", "big5", "cp932", "cp949", "euc_jp", "shift_jis", "euc_kr", "big5hkscs")
# Replacement characters allowed per non-ASCII byte when a multi-byte code is read leniently:
# real pages with a cut character or two stay far below it, text in another code far above.
_CJK_MAX_ERROR_SHARE = 0.005


def _lenient_cjk_decode(raw: bytes, candidates, utf8_errors: int) -> tuple[str, str] | None:
    """Read `raw` in the first multi-byte CJK charset among `candidates` whose replacement
    characters are fewer than UTF-8's and few per non-ASCII byte; None when none fits."""
    non_ascii = len(raw) - len(raw.translate(None, bytes(range(128))))
    for candidate in candidates:
        charset = normalize_charset(candidate)
        if charset not in _CJK_MULTI_BYTE:
            continue
        text = raw.decode(charset, errors="replace")
        errors = text.count("\ufffd")
        if errors < utf8_errors and errors <= _CJK_MAX_ERROR_SHARE * non_ascii:
            return text, f"{charset}-replace"
    return None


def looks_binary(raw: bytes) -> bool:
    """File magic of common binary formats, NUL bytes, or >10% control bytes in the head."""
    head = raw[:8192]
    if head.lstrip().startswith(_BINARY_MAGIC) or head.startswith(_BINARY_MAGIC):
        return True
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return False
    if b"\x00" in head:
        return True
    controls = len(head) - len(head.translate(None, _CONTROL_BYTES))
    return bool(head) and controls / len(head) > 0.10


# ---------------------------------------------------------------- time limit

class ExtractTimeout(Exception):
    """Raised inside the extracting thread when its time limit passes."""


class _Watchdog:
    """One daemon thread per process that raises ExtractTimeout in threads past their deadline.

    The exception is injected with PyThreadState_SetAsyncExc rather than SIGALRM:
    signals only reach the main thread, while Ray may run our batch function in a
    worker thread (threaded actors, map_batches concurrency). A shared thread instead
    of a threading.Timer per page keeps the guard at a few microseconds per document
    (a Timer costs ~170 us to start). The exception lands at the next Python bytecode,
    so a single long C call (one lxml parse) finishes first; the input size cap bounds that.
    """

    def __init__(self):
        self.cond = threading.Condition()
        self.deadlines: dict[int, tuple[float, int]] = {}  # thread id -> (deadline, token)
        self.tokens = itertools.count(1)
        self.thread: threading.Thread | None = None
        self.pid = None
        # When the watchdog thread will next look at the deadlines (monotonic seconds).
        self.wake_at = 0.0

    def arm(self, seconds: float) -> tuple[int, int]:
        tid = threading.get_ident()
        with self.cond:
            if self.thread is None or not self.thread.is_alive() or self.pid != os.getpid():
                # (Re)start after fork: Ray workers may fork from a process that had one.
                self.pid = os.getpid()
                self.thread = threading.Thread(target=self._run, name="raymill-extract-watchdog", daemon=True)
                self.thread.start()
            token = next(self.tokens)
            deadline = time.monotonic() + seconds
            self.deadlines[tid] = (deadline, token)
            # Wake the watchdog only if it would sleep past this deadline. Notifying on every
            # page handed the GIL to the watchdog thread and back each time (~1 ms a page,
            # ~10% of a fast-mode extraction); with one limit for all pages it wakes at the
            # previous page's deadline anyway and then sees this one.
            if deadline < self.wake_at:
                self.cond.notify()
        return tid, token

    def disarm(self, tid: int, token: int) -> None:
        with self.cond:
            if self.deadlines.get(tid, (0, None))[1] == token:
                del self.deadlines[tid]

    def _run(self) -> None:
        with self.cond:
            while True:
                now = time.monotonic()
                for tid, (deadline, _) in list(self.deadlines.items()):
                    if deadline <= now:
                        del self.deadlines[tid]
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid), ctypes.py_object(ExtractTimeout))
                self.wake_at = min((d for d, _ in self.deadlines.values()), default=now + 60)
                self.cond.wait(timeout=max(self.wake_at - now, 0.001))


_WATCHDOG = _Watchdog()


def run_with_time_limit(fn, seconds: float):
    """Run fn() in the calling thread; raise ExtractTimeout in it after `seconds`."""
    if not seconds or seconds <= 0:
        return fn()
    tid, token = _WATCHDOG.arm(seconds)
    try:
        return fn()
    finally:
        # Disarmed under the watchdog's lock, so it cannot fire into code after this
        # call. (If it fired in the instant after fn returned, ExtractTimeout surfaces
        # here, which still reports a page that ran to its limit.)
        _WATCHDOG.disarm(tid, token)


# ---------------------------------------------------------------- layout tables

# Old portals and forums (most of shared/data/web_zh) lay the page out with nested tables:
# trafilatura then prints the article as one cell of a "| nav | article | nav |" row, its
# paragraphs run together and every line ends in "|". A cell this long is prose, not data.
LAYOUT_CELL_CHARS = 150
_TABLE_PARTS = frozenset({"table", "tbody", "thead", "tfoot", "tr", "td", "th", "caption"})
_CELL_BLOCKS = frozenset({"p", "div", "table", "ul", "ol", "blockquote", "pre", "h1", "h2", "h3", "h4", "h5", "h6"})
# Share of the longest cell's characters the unwrapped extraction must keep to be taken.
_UNWRAPPED_MIN_RECALL = 0.8


def layout_table_cells(text: str) -> list[str]:
    """Cells of trafilatura's text-rendered table rows that hold LAYOUT_CELL_CHARS or more."""
    cells = []
    for line in text.split("\n"):
        row = line.strip()
        if len(row) > LAYOUT_CELL_CHARS and row.startswith("|") and row.endswith("|"):
            cells.extend(c.strip() for c in row.strip("|").split(" | ") if len(c.strip()) >= LAYOUT_CELL_CHARS)
    return cells


def split_layout_rows(text: str) -> str:
    """Rows that hold a prose cell become one line per non-empty cell: the article keeps
    lines that end where its sentences end. Rows of short cells (menus) stay as they are."""
    out = []
    for line in text.split("\n"):
        if layout_table_cells(line):
            out.extend(cell.strip() for cell in line.strip().strip("|").split(" | ") if cell.strip())
        else:
            out.append(line)
    return "\n".join(out)


def _is_layout_table(table) -> bool:
    """A table used for page layout: a cell holds a nested table, a block element or prose."""
    for cell in table.iter("td", "th"):
        if any(isinstance(child.tag, str) and child.tag in _CELL_BLOCKS for child in cell.iterchildren()):
            return True
        if len(cell.text_content().strip()) >= LAYOUT_CELL_CHARS:
            return True
    return False


def pruned_tree(html, tags: list[str]):
    """The page parsed as trafilatura parses it (its own loader), without the `tags` elements;
    a tree given is pruned in place. The text itself when it does not parse (trafilatura
    then reports the failure as it would have)."""
    from lxml import etree
    from trafilatura.utils import load_html

    tree = load_html(html) if isinstance(html, str) else html
    if tree is None:
        return html
    etree.strip_elements(tree, *tags, with_tail=False)  # the tail is text after the element: kept
    return tree


def unwrap_layout_tables(html: str):
    """The page as an lxml tree with its layout tables' parts renamed to <div> (data tables,
    with short cells, stay tables); None when the page does not parse."""
    import lxml.html

    try:
        tree = lxml.html.fromstring(html)
    except (ValueError, TypeError, lxml.etree.ParserError):
        return None
    layout = {t for t in tree.iter("table") if _is_layout_table(t)}
    # Decide every element before renaming any (a renamed table no longer owns its rows).
    # Only a layout table's own parts change: a nested data table keeps its structure.
    to_rename = [element for element in tree.iter(*_TABLE_PARTS)
                 if (element if element.tag == "table" else next(element.iterancestors("table"), None)) in layout]
    for element in to_rename:
        element.tag = "div"
    return tree


def char_recall(part: str, whole: str) -> float:
    """Share of `part`'s non-space characters (as a bag) found in `whole`."""
    wanted = Counter(ch for ch in part if not ch.isspace())
    found = Counter(ch for ch in whole if not ch.isspace())
    total = sum(wanted.values())
    return sum((wanted & found).values()) / total if total else 1.0


# ---------------------------------------------------------------- the stage

class ExtractStage(Stage):
    """raw_page rows -> document rows; see the module docstring for config and reasons."""

    name = "extract"

    def __init__(self, config: dict | ExtractConfig | None = None):
        self.config = config if isinstance(config, ExtractConfig) else ExtractConfig.from_dict(config)
        # trafilatura logs a WARNING/ERROR per odd page; we count those pages as drops instead.
        logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
        logging.getLogger("htmldate").setLevel(logging.CRITICAL)

    def extract_one(self, raw: bytes, url: str | None, declared_charset: str | None, truncated: bool) -> tuple[str, str | None, str | None]:
        """(text, drop reason or None, charset used) for one page."""
        cfg = self.config
        if truncated or len(raw) > cfg.max_bytes:
            return "", "too_large", None
        if not raw.strip():
            return "", "empty_body", None
        if looks_binary(raw):
            return "", "binary_content", None
        html, charset = decode_html(raw, declared_charset)
        fast = cfg.fast is True or (cfg.fast == FAST_AUTO and not is_cjk_page(html))
        try:
            text = run_with_time_limit(lambda: self._trafilatura(html, url, fast), cfg.timeout_s)
        except ExtractTimeout:
            return "", "extract_timeout", charset
        except (RecursionError, MemoryError, Exception):  # noqa: BLE001 - one page's failure is a drop, not a crash
            return "", "extraction_error", charset
        text = (text or "").strip()
        if len(text) < max(1, cfg.min_chars):
            return "", "extraction_empty", charset
        return text, None, charset

    def _trafilatura(self, html: str, url: str | None, fast: bool = False) -> str | None:
        text = self._trafilatura_once(html, url, fast)
        if not self.config.unwrap_layout_tables:
            return text
        long_cells = layout_table_cells(text or "")
        if text and not long_cells:
            return text
        # The article sat in a layout table (or nothing was found): extract again with the
        # layout tables turned into plain blocks, so paragraphs keep their breaks and the
        # navigation cells stop riding along in the same "| ... |" row. (Parsed by lxml
        # here, which also rescues some pages trafilatura's own parse found empty.)
        unwrapped = unwrap_layout_tables(html)
        second = self._trafilatura_once(unwrapped, url, fast) if unwrapped is not None else None
        if not text:
            return second
        # Without tables trafilatura sometimes settles on another block (a menu, a footer):
        # take the second result only if it still holds the longest cell's text (the
        # article; the other long cells are often related links it rightly leaves out).
        if second and char_recall(max(long_cells, key=len), second) >= _UNWRAPPED_MIN_RECALL:
            return second
        return split_layout_rows(text)

    def _trafilatura_once(self, html, url: str | None, fast: bool = False) -> str | None:
        """`html` is the page's text or an lxml tree of it (ours: pruned in place)."""
        import trafilatura

        cfg = self.config
        if cfg.prune_tags:
            html = pruned_tree(html, cfg.prune_tags)
        return trafilatura.extract(html, url=url or None, favor_precision=cfg.favor_precision, fast=fast,
                                   include_comments=cfg.include_comments, include_tables=cfg.include_tables,
                                   output_format="txt", with_metadata=False, deduplicate=False)

    def __call__(self, table: pa.Table) -> pa.Table:
        # Every row (dropped ones too) must lose its `raw` column, so this stage works on
        # the whole table instead of letting the base class split active/done rows.
        return self.process(table)

    def process(self, table: pa.Table) -> pa.Table:
        if "raw" not in table.column_names:
            return table  # documents from JSONL/Parquet: nothing to extract
        n = table.num_rows
        active = active_mask(table).to_pylist() if n else []
        raws = table.column("raw").to_pylist()
        urls = table.column("url").to_pylist() if "url" in table.column_names else [None] * n
        charsets = table.column("charset").to_pylist() if "charset" in table.column_names else [None] * n
        truncated = table.column("raw_truncated").to_pylist() if "raw_truncated" in table.column_names else [False] * n
        texts, reasons, used = [], [], []
        for i in range(n):
            if not active[i]:
                texts.append("")
                reasons.append(None)
                used.append(None)
                continue
            text, reason, charset = self.extract_one(raws[i] or b"", urls[i], charsets[i], bool(truncated[i]))
            texts.append(text)
            reasons.append(reason)
            used.append(charset)
        return self._to_documents(table, texts, reasons, used, active)

    def _to_documents(self, table: pa.Table, texts, reasons, used, active) -> pa.Table:
        n = table.num_rows
        old_reason = table.column(DROP_REASON).to_pylist() if DROP_REASON in table.column_names else [None] * n
        old_stage = table.column(DROP_STAGE).to_pylist() if DROP_STAGE in table.column_names else [None] * n
        new_reason = [r if a and r else o for r, o, a in zip(reasons, old_reason, active)]
        new_stage = [self.name if a and r else s for r, s, a in zip(reasons, old_stage, active)]
        fetch = table.column("warc_date") if "warc_date" in table.column_names else pa.nulls(n, DOCUMENT.field("fetch_time").type)
        ids = table.column("id")
        front = {
            "id": ids,
            "text": pa.array(texts, pa.string()),
            "url": table.column("url") if "url" in table.column_names else pa.nulls(n, pa.string()),
            "source": table.column("source") if "source" in table.column_names else pa.nulls(n, pa.string()),
            "raw_id": ids,
            "fetch_time": fetch,
        }
        skip = set(front) | set(_RAW_ONLY) | {DROP_REASON, DROP_STAGE}
        columns = dict(front)
        for name in table.column_names:
            if name not in skip:
                columns[name] = table.column(name)
        columns["charset_used"] = pa.array(used, pa.string())
        columns[DROP_REASON] = pa.array(new_reason, pa.string())
        columns[DROP_STAGE] = pa.array(new_stage, pa.string())
        return pa.table(columns)
