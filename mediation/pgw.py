"""PGW data records (3GPP TS 32.298 PGW-CDR fields) as CSV with a header line -> UsageEvent / RejectedLine.

A PGW-CDR is ASN.1; o2c reads a CSV export of it, one line per listOfServiceData container:
a record with three containers (three rating groups) is three lines that repeat the record's
fields, each with its own ratingGroup and volumes. The dedup key is therefore
chargingID + nodeID + recordSequenceNumber + ratingGroup.

Columns are found by their header names (case-insensitive, any order, unknown columns ignored):
- required: servedMSISDN, chargingID, nodeID, recordSequenceNumber, recordOpeningTime, duration,
  ratingGroup, datavolumeFBCUplink, datavolumeFBCDownlink
- optional: servingNodePLMN, userLocationInformation (roaming); servedIMSI is allowed but not read.
A header without the required columns is not a line problem but a file problem: HeaderError.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import NamedTuple

from mediation.csvlines import Row, read_rows, reject
from mediation.fields import MAX_ID_LENGTH, MAX_OCTETS, MAX_SECONDS, count_problem, parse_count
from mediation.numbers import check_country_code, normalise_number
from mediation.records import (
    INVALID_DURATION,
    INVALID_ID,
    INVALID_MSISDN,
    INVALID_PLMN,
    INVALID_RATING_GROUP,
    INVALID_TIMESTAMP,
    INVALID_VOLUME,
    MISSING_ID,
    WRONG_COLUMN_COUNT,
    RejectedLine,
    UsageEvent,
)
from mediation.timestamps import UTC, SwitchClock

FORMAT = "pgw"
REQUIRED_COLUMNS = ("servedMSISDN", "chargingID", "nodeID", "recordSequenceNumber", "recordOpeningTime", "duration",
                    "ratingGroup", "datavolumeFBCUplink", "datavolumeFBCDownlink")
OPTIONAL_COLUMNS = ("servingNodePLMN", "userLocationInformation")
MAX_UINT32 = 2**32 - 1  # chargingID and ratingGroup are 32-bit unsigned in TS 32.298 / 32.299


class HeaderError(ValueError):
    """The file's header line does not describe a PGW data-record CSV."""


class Layout(NamedTuple):
    columns: dict[str, int]  # name as spelled in REQUIRED/OPTIONAL_COLUMNS -> position
    width: int  # fields per line: every line has as many as the header


def read_header(header: Sequence[str]) -> Layout:
    """Where each column o2c reads is. Raises HeaderError."""
    positions: dict[str, int] = {}
    for index, name in enumerate(header):
        key = name.strip().lower()
        if key in positions:
            raise HeaderError(f"column {name.strip()!r} appears twice in the header")
        positions[key] = index
    missing = [name for name in REQUIRED_COLUMNS if name.lower() not in positions]
    if missing:
        raise HeaderError(f"header lacks required column(s) {', '.join(missing)}; found {', '.join(h.strip() for h in header)}")
    columns = {name: positions[name.lower()] for name in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if name.lower() in positions}
    return Layout(columns, len(header))


def opening_time(text: str, clock: SwitchClock) -> datetime:
    """recordOpeningTime -> aware UTC. Accepted spellings:
    - the TS 32.298 TimeStamp as text, YYMMDDhhmmss+hhmm (e.g. 240301100000+0100; years 2000-2099)
    - ISO 8601 with an offset or Z, with "T" or a space (e.g. 2024-03-01T10:00:00+01:00)
    - YYYY-MM-DD HH:MM:SS without an offset, read in the parser's time zone."""
    if len(text) == 19:
        return clock.to_utc(text)
    if len(text) == 17 and text[12] in "+-" and text[:12].isdigit() and text[13:].isdigit() and text.isascii():
        iso = f"20{text[0:2]}-{text[2:4]}-{text[4:6]} {text[6:8]}:{text[8:10]}:{text[10:12]}{text[12:15]}:{text[15:17]}"
    elif len(text) > 19 and text[4::3][:5] in ("-- ::", "--T::"):
        iso = text
    else:
        raise ValueError(f"{text!r} is not a timestamp o2c reads (YYMMDDhhmmss+hhmm, ISO 8601 with offset, or YYYY-MM-DD HH:MM:SS)")
    try:
        parsed = datetime.fromisoformat(iso)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid date and time ({exc})") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset (only the form YYYY-MM-DD HH:MM:SS may leave it out)")
    return parsed.astimezone(UTC)


def visited_mcc(text: str, *, compact_allowed: bool) -> str | None:
    """The MCC of "MCC-MNC[-...]" (or "MCCMNC" digits when compact_allowed); None when empty."""
    if not text:
        return None
    if "-" in text:
        mcc, mnc = text.split("-", 2)[:2]
        if len(mcc) == 3 and mcc.isdigit() and mcc.isascii() and len(mnc) in (2, 3) and mnc.isdigit() and mnc.isascii():
            return mcc
    elif compact_allowed and len(text) in (5, 6) and text.isdigit() and text.isascii():
        return text[:3]
    raise ValueError(f"{text!r} is not MCC-MNC")


def parse(lines: Iterable[bytes], *, source_file: str, timezone: str = "UTC", country_code: str = "49", home_mcc: str = "262",
          first_line_no: int = 1, header: Sequence[str] | None = None) -> Iterator[UsageEvent | RejectedLine]:
    """Stream the events and rejections of `lines` (raw lines as read from a file opened in binary
    mode), in line order. The first non-blank line is the header unless `header` is given (to
    parse a later piece of a file: pass the header's fields and the piece's `first_line_no`).
    `timezone` only applies to recordOpeningTime values without an offset. `home_mcc` is the home
    network's MCC: a subscriber served under another MCC is roaming.
    A bad argument raises ValueError here; a bad header raises HeaderError when it is read."""
    check_country_code(country_code)
    if not (len(home_mcc) == 3 and home_mcc.isdigit() and home_mcc.isascii()):
        raise ValueError(f"home MCC must be 3 digits, got {home_mcc!r}")
    layout = read_header(header) if header is not None else None
    clock = SwitchClock(timezone)
    rows = read_rows(lines, source_format=FORMAT, source_file=source_file, first_line_no=first_line_no)
    return _stream(rows, layout, _Settings(source_file, clock, country_code, home_mcc))


class _Settings:
    __slots__ = ("source_file", "clock", "country_code", "home_mcc")

    def __init__(self, source_file: str, clock: SwitchClock, country_code: str, home_mcc: str) -> None:
        self.source_file, self.clock, self.country_code, self.home_mcc = source_file, clock, country_code, home_mcc


def _stream(rows: Iterator[Row | RejectedLine], layout: Layout | None, settings: _Settings) -> Iterator[UsageEvent | RejectedLine]:
    if layout is None:
        first = next(rows, None)
        if first is None:
            return  # an empty file: nothing to read, nothing lost
        if isinstance(first, RejectedLine):  # not UTF-8 or not CSV
            raise HeaderError(f"header line {first.line_no} is unreadable: {first.reason}")
        layout = read_header(first[2])
    columns, width = layout
    for row in rows:
        if row.__class__ is RejectedLine:
            yield row  # type: ignore[misc]
            continue
        line_no, raw, fields = row  # type: ignore[misc]
        if len(fields) != width:
            # Another count than the header's means a column shifted (an unquoted comma, a cut line):
            # reading it by position would bill the wrong figures.
            yield reject(FORMAT, settings.source_file, line_no, raw, WRONG_COLUMN_COUNT,
                         f"expected {width} columns as in the header, found {len(fields)}")
            continue
        yield _event(line_no, raw, fields, columns, settings)


def _event(line_no: int, raw: bytes, fields: list[str], columns: dict[str, int], settings: _Settings) -> UsageEvent | RejectedLine:
    def rejected(code: str, reason: str) -> RejectedLine:
        return reject(FORMAT, settings.source_file, line_no, raw, code, reason)

    charging_id, node_id, sequence = fields[columns["chargingID"]], fields[columns["nodeID"]], fields[columns["recordSequenceNumber"]]
    if not charging_id:
        return rejected(MISSING_ID, "chargingID is empty; it is part of the dedup key")
    if not node_id.strip():
        return rejected(MISSING_ID, "nodeID is empty; it is part of the dedup key")
    charging = parse_count(charging_id, MAX_UINT32)
    if charging is None:
        return rejected(INVALID_ID, f"chargingID {charging_id!r} is not a 32-bit unsigned number")
    # recordSequenceNumber is only present in partial records (TS 32.298); a complete record has none.
    sequence_no = parse_count(sequence, MAX_UINT32) if sequence else None
    if sequence and sequence_no is None:
        return rejected(INVALID_ID, f"recordSequenceNumber {sequence!r} is not a whole number")
    rating_text = fields[columns["ratingGroup"]]
    rating_group = parse_count(rating_text, MAX_UINT32)
    if rating_group is None:
        return rejected(INVALID_RATING_GROUP, count_problem("ratingGroup", rating_text, MAX_UINT32))
    # Numbers are re-rendered so "007" and "7" are one key; nodeID is kept exactly as written.
    record_id = f"{charging}:{node_id}:{'' if sequence_no is None else sequence_no}:{rating_group}"
    if len(record_id) > MAX_ID_LENGTH:
        return rejected(INVALID_ID, f"dedup key chargingID:nodeID:recordSequenceNumber:ratingGroup is longer than {MAX_ID_LENGTH} characters")

    served = fields[columns["servedMSISDN"]]
    msisdn = normalise_number(served, settings.country_code)
    if msisdn is None:
        why = "is empty (o2c guides data usage by MSISDN, not IMSI)" if not served else f"{served!r} is not an E.164 number"
        return rejected(INVALID_MSISDN, f"servedMSISDN {why}")
    opening = fields[columns["recordOpeningTime"]]
    try:
        start = opening_time(opening, settings.clock)
    except ValueError as exc:
        return rejected(INVALID_TIMESTAMP, f"recordOpeningTime: {exc}")
    duration_text = fields[columns["duration"]]
    duration = parse_count(duration_text, MAX_SECONDS)
    if duration is None:
        return rejected(INVALID_DURATION, count_problem("duration", duration_text, MAX_SECONDS))
    volumes = []
    for name in ("datavolumeFBCUplink", "datavolumeFBCDownlink"):
        text = fields[columns[name]]
        volume = parse_count(text, MAX_OCTETS)
        if volume is None:
            return rejected(INVALID_VOLUME, count_problem(name, text, MAX_OCTETS))
        volumes.append(volume)
    try:
        mcc = _serving_mcc(fields, columns)
    except ValueError as exc:
        return rejected(INVALID_PLMN, str(exc))
    roaming_mcc = mcc if mcc is not None and mcc != settings.home_mcc else None
    return UsageEvent(FORMAT, settings.source_file, line_no, record_id, "data", msisdn, start, duration, duration,
                      "ANSWERED", None, volumes[0], volumes[1], rating_group, roaming_mcc)


def _serving_mcc(fields: list[str], columns: dict[str, int]) -> str | None:
    """The serving network's MCC: servingNodePLMN if given, else the ULI's, else None (home)."""
    if "servingNodePLMN" in columns and (plmn := fields[columns["servingNodePLMN"]].strip()):
        try:
            return visited_mcc(plmn, compact_allowed=True)
        except ValueError as exc:
            raise ValueError(f"servingNodePLMN {exc}") from None
    if "userLocationInformation" in columns and (uli := fields[columns["userLocationInformation"]].strip()):
        try:
            return visited_mcc(uli, compact_allowed=False)
        except ValueError as exc:
            raise ValueError(f"userLocationInformation {exc}") from None
    return None
