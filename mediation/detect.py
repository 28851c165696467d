"""Which CDR format a file is, and streaming a whole file through the right parser.

Detection looks at the first lines only (SAMPLE_LINES), so it costs nothing on a large file:
- a first line that is a header naming PGW fields (chargingID, servedMSISDN, servedIMSI) -> "pgw";
- otherwise each line votes by its shape: 17-18 columns with a timestamp in column 10 and an
  Asterisk disposition in column 15 -> "asterisk"; 13 or 15 columns with a timestamp in column 5
  and a Q.850 cause name in column 10 -> "freeswitch". The format with most votes wins, so a few
  malformed lines at the top do not stop detection (they are rejected line by line later).
No vote, or a tie, raises UnknownFormat: the caller should name the format explicitly.
"""
from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, islice
from types import TracebackType
from typing import IO, Any

from mediation import asterisk, freeswitch, pgw
from mediation.csvlines import BOM
from mediation.records import RejectedLine, UsageEvent
from mediation.timestamps import has_wall_clock_shape

FORMATS = ("asterisk", "freeswitch", "pgw")
SAMPLE_LINES = 20
PGW_HEADER_MARKERS = frozenset({"chargingid", "servedmsisdn", "servedimsi"})
_CAUSE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")

PARSERS: dict[str, Callable[..., Iterator[UsageEvent | RejectedLine]]] = {
    "asterisk": asterisk.parse, "freeswitch": freeswitch.parse, "pgw": pgw.parse}


class UnknownFormat(ValueError):
    """The format could not be detected, or a named format does not exist."""


def detect_format(first_lines: list[bytes]) -> str:
    """"asterisk", "freeswitch" or "pgw" for the first lines of a CDR file; raises UnknownFormat."""
    rows = [fields for fields in (_fields(raw, index == 0) for index, raw in enumerate(first_lines)) if fields]
    if not rows:
        raise UnknownFormat("no CDR lines to detect the format from (the file is empty or blank)")
    if PGW_HEADER_MARKERS & {name.strip().lower() for name in rows[0]}:
        return "pgw"
    votes = {"asterisk": sum(map(_looks_like_asterisk, rows)), "freeswitch": sum(map(_looks_like_freeswitch, rows))}
    best = max(votes, key=votes.__getitem__)
    if votes[best] == 0 or list(votes.values()).count(votes[best]) > 1:
        first = ",".join(rows[0])
        raise UnknownFormat(
            f"cannot tell the CDR format from the first {len(rows)} line(s); the first has {len(rows[0])} columns: "
            f"{first[:120]!r}. o2c reads Asterisk Master.csv (17-18 columns), FreeSWITCH mod_cdr_csv (13 or 15 columns) "
            f"and PGW data-record CSV (a header naming chargingID, servedMSISDN, ...); name the format explicitly "
            f"({', '.join(FORMATS)}) if the file is one of these")
    return best


def _fields(raw: bytes, first: bool) -> list[str]:
    if first and raw.startswith(BOM):
        raw = raw[3:]
    text = raw.decode("utf-8", errors="replace")  # one odd byte in a name must not hide the format
    try:
        fields = next(csv.reader([text]), [])
    except csv.Error:
        return []
    return [] if len(fields) == 1 and not fields[0].strip() else fields


def _looks_like_asterisk(fields: list[str]) -> bool:
    return len(fields) in asterisk.COLUMN_COUNTS and has_wall_clock_shape(fields[asterisk.START]) \
        and fields[asterisk.DISPOSITION] in asterisk.DISPOSITIONS


def _looks_like_freeswitch(fields: list[str]) -> bool:
    cause = fields[freeswitch.HANGUP_CAUSE] if len(fields) in freeswitch.COLUMN_COUNTS else ""
    return bool(cause) and _CAUSE_CHARS.issuperset(cause) and has_wall_clock_shape(fields[freeswitch.START])


class CdrFile:
    """The events and rejections of one CDR file, streamed once, in line order.

    Use as `with parse_file(path) as cdrs: for item in cdrs: ...`; iterating to the end also
    closes the file. `format` is the format read (None for an empty file)."""

    def __init__(self, path: str, fmt: str | None, handle: IO[bytes], events: Iterable[UsageEvent | RejectedLine]) -> None:
        self.path = path
        self.format = fmt
        self._handle = handle
        self._events = events

    def __iter__(self) -> Iterator[UsageEvent | RejectedLine]:
        with self._handle:
            yield from self._events

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> CdrFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def parse_file(path: str | os.PathLike[str], fmt: str | None = None, **options: Any) -> CdrFile:
    """Open `path` in binary, detect its format unless `fmt` names it, and return its stream.

    `options` go to the format's parser: timezone, country_code, and for pgw home_mcc.
    Raises UnknownFormat (format not detected or not known) and ValueError (bad options) at once,
    before anything is read past the sample; pgw.HeaderError comes when iteration reads the header."""
    if fmt is not None and fmt not in PARSERS:
        raise UnknownFormat(f"unknown CDR format {fmt!r}; choose one of {', '.join(FORMATS)}")
    name = os.fspath(path)
    handle = open(name, "rb")
    try:
        head = list(islice(handle, SAMPLE_LINES))
        if fmt is None:
            if not any(line.strip() for line in head):
                return CdrFile(name, None, handle, ())
            fmt = detect_format(head)
        events = PARSERS[fmt](chain(head, handle), source_file=name, **options)
    except BaseException:
        handle.close()
        raise
    return CdrFile(name, fmt, handle, events)
