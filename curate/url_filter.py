"""URL filter: blocklisted domains, banned keywords and regex rules drop rows; every row
gets a `domain` label and a `url_score` in [0, 1].

Config keys (YAML under `url_filter:`; all optional):

    blocklist_files: [path, ...]   one domain per line, '#' comments, UT1 format; a listed
                                   domain blocks its subdomains too. Default: the small
                                   built-in list `curate/data/blocklist.txt` ("builtin"
                                   names it explicitly; [] disables blocklisting).
    blocked_domains: [domain, ...] extra domains, same matching.
    banned_keywords: [str, ...]    substrings of the lower-cased URL (host + path + query).
    regex_rules: {name: pattern}   Python regexes searched in the URL.
    good_domains: [domain, ...]    known-good sites: url_score 1.0 (subdomains included).
    drop: true                     false = label only (url_block_reason column, no drops).

Drop reasons: `url_blocklist:<listed domain>`, `url_keyword:<keyword>`,
`url_regex:<rule name>`. Rows without a URL (documents from JSONL) are never dropped
here and get url_score null.

url_score is a cheap prior on "this URL is a content page on a normal site", not a
quality verdict: it starts at 1 and loses points for signals common on spam, session
and listing URLs (deep paths, many query parameters, digit noise, very long URLs,
raw-IP hosts, TLDs dominated by throwaway registrations, non-http schemes).
"""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pyarrow as pa

from curate.stage import Stage, mark_drops, set_column
from schemas.options import from_mapping

BUILTIN_BLOCKLIST = Path(__file__).with_name("data") / "blocklist.txt"

# TLDs whose registrations are dominated by throwaway and spam sites in public abuse
# reports (e.g. Spamhaus' "most abused TLDs"); a mild penalty, never a block.
SUSPICIOUS_TLDS = frozenset({"xyz", "top", "club", "online", "site", "icu", "buzz", "click", "loan", "work",
                             "gq", "tk", "ml", "cf", "ga", "win", "bid", "stream", "download", "rest", "cam"})
# Two-label public suffixes common enough to matter for the `domain` label when the
# `tld` package (public suffix list) is not importable.
_SECOND_LEVEL = frozenset({"co", "com", "net", "org", "gov", "edu", "ac", "or", "ne", "go"})

_blocklist_cache: dict[tuple[str, float], frozenset[str]] = {}


def load_blocklist(path: str | Path) -> frozenset[str]:
    """Domains of a UT1-style list; cached per process (file path + mtime) because the
    real UT1 lists hold millions of lines and every batch must not reload them."""
    path = Path(path)
    try:
        key = (str(path.resolve()), path.stat().st_mtime)
    except OSError as exc:
        raise FileNotFoundError(f"url_filter: blocklist file {path} cannot be read: {exc.strerror or exc}") from exc
    cached = _blocklist_cache.get(key)
    if cached is None:
        domains = set()
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                line = line.split("#", 1)[0].strip().lower().rstrip(".")
                if line:
                    domains.add(line[4:] if line.startswith("www.") else line)
        cached = frozenset(domains)
        _blocklist_cache[key] = cached
    return cached


def host_of(url: str) -> str:
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return ""
    return host.lower().rstrip(".")


def registered_domain(host: str) -> str:
    """example.co.uk for a.b.example.co.uk; the public suffix list via `tld` when present."""
    if not host:
        return ""
    if _is_ip(host):
        return host
    try:
        from tld import get_fld

        fld = get_fld(host, fix_protocol=True, fail_silently=True)
        if fld:
            return fld
    except ImportError:
        pass
    labels = host.split(".")
    if len(labels) >= 3 and labels[-2] in _SECOND_LEVEL and len(labels[-1]) == 2:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def _suffixes(host: str):
    """a.b.c -> a.b.c, b.c, c: a listed domain matches itself and its subdomains."""
    labels = host.split(".")
    for i in range(len(labels)):
        yield ".".join(labels[i:])


def url_score(url: str, good_domains: frozenset[str] = frozenset()) -> float:
    """Heuristic prior in [0, 1]; see the module docstring."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        return 0.0
    if not host:
        return 0.0
    if good_domains and any(s in good_domains for s in _suffixes(host)):
        return 1.0
    score = 1.0
    if parts.scheme not in ("http", "https"):
        score -= 0.5
    if _is_ip(host):
        score -= 0.4
    tld = host.rsplit(".", 1)[-1]
    if tld in SUSPICIOUS_TLDS:
        score -= 0.3
    if host.count(".") >= 4 or host.count("-") >= 3:
        score -= 0.15  # machine-generated hostnames
    segments = [s for s in parts.path.split("/") if s]
    score -= 0.08 * max(0, len(segments) - 4)
    params = parse_qsl(parts.query, keep_blank_values=True)
    score -= min(0.3, 0.06 * len(params))
    if any(k.lower() in ("sid", "sessionid", "phpsessid", "jsessionid", "utm_source", "ref", "affid") for k, _ in params):
        score -= 0.1
    path = parts.path
    if path:
        digits = sum(c.isdigit() for c in path)
        if digits / len(path) > 0.3:
            score -= 0.15
    if len(url) > 150:
        score -= 0.1
    return round(min(1.0, max(0.0, score)), 4)


@dataclass
class UrlFilterConfig:
    """The `url_filter:` section (keys documented in the module docstring)."""

    blocklist_files: list[str] = field(default_factory=lambda: ["builtin"])
    blocked_domains: list[str] = field(default_factory=list)
    banned_keywords: list[str] = field(default_factory=list)
    regex_rules: dict[str, str] = field(default_factory=dict)
    good_domains: list[str] = field(default_factory=list)
    drop: bool = True


class UrlFilterStage(Stage):
    """Blocklist / keyword / regex drops plus `domain` and `url_score` labels."""

    name = "url_filter"

    def __init__(self, config: "UrlFilterConfig | dict | None" = None):
        if not isinstance(config, UrlFilterConfig):
            config = from_mapping(UrlFilterConfig, config, "url_filter")
        self.blocklist_files = [str(BUILTIN_BLOCKLIST) if f == "builtin" else os.fspath(f)
                                for f in config.blocklist_files or []]
        for f in self.blocklist_files:  # fail at construction, naming the file, not inside a worker
            load_blocklist(f)
        self.extra_domains = frozenset(d.lower().strip().removeprefix("www.") for d in config.blocked_domains or [])
        self.keywords = [k.lower() for k in config.banned_keywords or [] if k]
        self.regex_rules = {}
        for rule_name, pattern in (config.regex_rules or {}).items():
            try:
                self.regex_rules[str(rule_name)] = re.compile(pattern, re.IGNORECASE)
            except re.error as exc:
                raise ValueError(f"url_filter config: regex_rules.{rule_name}: invalid pattern {pattern!r}: {exc}") from None
        self.good_domains = frozenset(d.lower().strip() for d in config.good_domains or [])
        self.drop = bool(config.drop)

    def _blocked(self) -> frozenset[str]:
        domains = set(self.extra_domains)
        for f in self.blocklist_files:
            domains |= load_blocklist(f)
        return frozenset(domains)

    def block_reason(self, url: str | None, blocked: frozenset[str]) -> str | None:
        if not url:
            return None
        host = host_of(url)
        if host.startswith("www."):
            host = host[4:]
        for suffix in _suffixes(host):
            if suffix in blocked:
                return f"url_blocklist:{suffix}"
        lowered = url.lower()
        for kw in self.keywords:
            if kw in lowered:
                return f"url_keyword:{kw}"
        for rule_name, rx in self.regex_rules.items():
            if rx.search(url):
                return f"url_regex:{rule_name}"
        return None

    def process(self, table: pa.Table) -> pa.Table:
        urls = table.column("url").to_pylist() if "url" in table.column_names else [None] * table.num_rows
        blocked = self._blocked()
        reasons = [self.block_reason(u, blocked) for u in urls]
        domains = [registered_domain(host_of(u)) if u else None for u in urls]
        scores = [url_score(u, self.good_domains) if u else None for u in urls]
        table = set_column(table, "domain", pa.array(domains, pa.string()))
        table = set_column(table, "url_score", pa.array(scores, pa.float64()))
        if self.drop:
            return mark_drops(table, [r is not None for r in reasons], reasons, self.name)
        return set_column(table, "url_block_reason", pa.array(reasons, pa.string()))
