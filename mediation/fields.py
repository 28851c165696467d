"""Checks on single CSV fields shared by the parsers: counts (seconds, octets) and record ids.

Counts are read with str.isdigit + int instead of a bare int(): int() also takes " 5", "+5",
"5_000" and non-ASCII digits, none of which a switch writes, so accepting them would hide a
shifted or corrupted column.
"""
from __future__ import annotations

from mediation.records import INVALID_ID, MISSING_ID

MAX_ID_LENGTH = 255  # the usage_record primary key, same limit as TMF635 ingestion
MAX_SECONDS = 10**9  # ~31 years: far above any real record, well inside a BIGINT
MAX_OCTETS = 10**15  # a petabyte, the same ceiling as services.usage_ingest.MAX_QUANTITY


def parse_count(text: str, limit: int) -> int | None:
    """A whole number 0..limit written as plain ASCII digits, else None."""
    if text.isdigit() and text.isascii() and len(text) <= 16:
        value = int(text)
        if value <= limit:
            return value
    return None


def count_problem(name: str, text: str, limit: int) -> str:
    """Why parse_count refused `text`, for the rejected store."""
    if not text:
        return f"{name} is empty"
    if text.startswith("-") and text[1:].isdigit():
        return f"{name} {text!r} is negative"
    if text.isdigit() and text.isascii():
        return f"{name} {text!r} is larger than {limit}"
    return f"{name} {text!r} is not a whole number"


def id_problem(name: str, value: str) -> tuple[str, str] | None:
    """(reason code, reason) when `value` cannot serve as a dedup key, else None."""
    if not value.strip():
        return MISSING_ID, f"{name} is empty; it is the dedup key"
    if len(value) > MAX_ID_LENGTH:
        return INVALID_ID, f"{name} is longer than {MAX_ID_LENGTH} characters"
    return None
