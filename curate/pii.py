"""PII masking: e-mail addresses, IPv4/IPv6 addresses and phone numbers become placeholders.

Labels: `pii_email_count`, `pii_ip_count`, `pii_phone_count` (matches masked per document).

Precision over recall where the two conflict, because a false positive corrupts good text:
- IPv4 needs four dotted octets in 0..255 that are not part of a longer dotted number
  and not preceded by "v"/"version" (so "version 1.2.3.4" and "v10.0.0.1" stay).
- IPv6 candidates are checked with `ipaddress` and need a digit, so times such as
  12:30:45 and C++ names such as a::b stay.
- Phone numbers need separators or a leading "+" (plain digit runs are years, ids,
  prices) and 7..15 digits; ISO dates (2024-01-15) and number ranges stay. Chinese
  mobile numbers (1[3-9] + 9 digits) and 0-prefixed landlines (010-12345678,
  03-1234-5678) are recognised without a "+".
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Mapping

import pyarrow as pa

from curate.stage import Stage, check_name, set_column, stage_options

EMAIL_TOKEN, IP_TOKEN, PHONE_TOKEN = "<EMAIL>", "<IP>", "<PHONE>"

# Boundaries are ASCII classes so that an address right after a CJK character is found.
EMAIL = re.compile(r"(?<![A-Za-z0-9_.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}(?![\w-])")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IPV4 = re.compile(rf"(?<![\w.])({_OCTET}(?:\.{_OCTET}){{3}})(?![\w]|\.\d)")
IPV6_CANDIDATE = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])")
_VERSION_BEFORE = re.compile(r"(?:\bv|version|ver\.?|release|build)\s*$", re.I)
PHONE = re.compile(
    r"(?<![A-Za-z0-9_+])(?:"
    r"\+\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{1,4}(?:[\s.-]?\d{2,4}){1,4}"  # +44 20 7946 0958
    r"|\(\d{3}\)\s?\d{3}[\s.-]\d{4}"  # (555) 123-4567
    r"|\d{3}[.-]\d{3}[.-]\d{4}"  # 555-123-4567
    r"|1[3-9]\d{9}"  # Chinese mobile
    r"|0\d{1,3}-\d{2,4}-\d{4}|0\d{2,3}-\d{7,8}"  # 03-1234-5678, 010-12345678
    r")(?![A-Za-z0-9_-]|\.\d)"
)


def _mask_ipv4(text: str) -> tuple[str, int]:
    count = 0

    def repl(m: re.Match) -> str:
        nonlocal count
        if _VERSION_BEFORE.search(text, max(0, m.start() - 12), m.start()):
            return m.group(0)
        count += 1
        return IP_TOKEN

    return IPV4.sub(repl, text), count


def _mask_ipv6(text: str) -> tuple[str, int]:
    count = 0

    def repl(m: re.Match) -> str:
        nonlocal count
        candidate = m.group(0)
        # Real addresses hold a digit; "a::b" / "dead::beef" are far more often code.
        if candidate.count(":") < 2 or not re.search(r"\d", candidate):
            return candidate
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            return candidate
        count += 1
        return IP_TOKEN

    return IPV6_CANDIDATE.sub(repl, text), count


def _mask_phones(text: str) -> tuple[str, int]:
    count = 0

    def repl(m: re.Match) -> str:
        nonlocal count
        digits = sum(ch.isdigit() for ch in m.group(0))
        if not 7 <= digits <= 15:
            return m.group(0)
        count += 1
        return PHONE_TOKEN

    return PHONE.sub(repl, text), count


def mask_pii(text: str) -> tuple[str, int, int, int]:
    """(masked text, e-mails, IP addresses, phone numbers)."""
    emails = ips = phones = 0
    if "@" in text:
        text, emails = EMAIL.subn(EMAIL_TOKEN, text)
    if "." in text:
        text, n = _mask_ipv4(text)
        ips += n
    if "::" in text or text.count(":") >= 7:
        text, n = _mask_ipv6(text)
        ips += n
    text, phones = _mask_phones(text)
    return text, emails, ips, phones


@dataclass
class PiiConfig:
    """The `pii:` section."""

    text_column: str = "text"

    def __post_init__(self) -> None:
        check_name("pii.text_column", self.text_column)


class PiiStage(Stage):
    name = "pii"

    def __init__(self, config: PiiConfig | Mapping[str, Any] | None = None, **options: Any):
        self.config = stage_options(PiiConfig, config, options, self.name)

    def process(self, table: pa.Table) -> pa.Table:
        column = self.config.text_column
        results = [mask_pii(t or "") for t in table.column(column).to_pylist()]
        table = set_column(table, column, pa.array([r[0] for r in results], pa.string()))
        for i, name in enumerate(("pii_email_count", "pii_ip_count", "pii_phone_count"), start=1):
            table = set_column(table, name, pa.array([r[i] for r in results], pa.int64()))
        return table
