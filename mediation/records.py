"""What the CDR parsers produce: a `UsageEvent` per good line, a `RejectedLine` per bad one.

Both are plain slotted dataclasses, not pydantic models: a parser builds one per line at 100k+
lines/s, and a frozen or validated object costs several times as much to build. The parsers
validate every field before they build an event, so an event is always well-formed.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

SourceFormat = Literal["asterisk", "freeswitch", "pgw"]
UsageKind = Literal["voice", "sms", "data"]
Disposition = Literal["ANSWERED", "NO_ANSWER", "BUSY", "FAILED", "CONGESTION"]

DISPOSITIONS: frozenset[str] = frozenset({"ANSWERED", "NO_ANSWER", "BUSY", "FAILED", "CONGESTION"})

# Reason codes of RejectedLine. Stable strings: the rejected store and reports group by them.
NOT_UTF8 = "not_utf8"
MALFORMED_CSV = "malformed_csv"  # quoting the csv module cannot read, e.g. an unterminated quote
WRONG_COLUMN_COUNT = "wrong_column_count"
MISSING_ID = "missing_id"  # the dedup key (or a part of it) is empty
INVALID_ID = "invalid_id"  # the dedup key is present but unusable (too long, not a number where one is required)
INVALID_TIMESTAMP = "invalid_timestamp"
INVALID_DURATION = "invalid_duration"
INVALID_MSISDN = "invalid_msisdn"  # the served subscriber is not an E.164 number
UNKNOWN_DISPOSITION = "unknown_disposition"
INVALID_VOLUME = "invalid_volume"
INVALID_RATING_GROUP = "invalid_rating_group"
INVALID_PLMN = "invalid_plmn"

REASON_CODES: frozenset[str] = frozenset({
    NOT_UTF8, MALFORMED_CSV, WRONG_COLUMN_COUNT, MISSING_ID, INVALID_ID, INVALID_TIMESTAMP, INVALID_DURATION,
    INVALID_MSISDN, UNKNOWN_DISPOSITION, INVALID_VOLUME, INVALID_RATING_GROUP, INVALID_PLMN,
})


@dataclass(slots=True)
class UsageEvent:
    """One usage record read from a CDR line, normalised but not yet de-duplicated, guided or rated.

    - `record_id`: the source's dedup key (see docs/cdr-formats.md); unique per switch, not
      across switches, so the importer should namespace it by source.
    - `msisdn`, `destination`: E.164 digits without "+"; `destination` is None when the dialled
      number is not an E.164 number (an extension, a short code, empty).
    - `start`: aware datetime in UTC.
    - `duration_s`, `billsec_s`: whole seconds; for data both are the record's duration.
    - `bytes_up`, `bytes_down`, `rating_group`: data only (0, 0, None for voice).
    - `roaming_mcc`: the visited network's MCC when the subscriber was served outside the home
      network (data only), else None.
    """

    source_format: SourceFormat
    source_file: str
    line_no: int
    record_id: str
    kind: UsageKind
    msisdn: str
    start: datetime
    duration_s: int
    billsec_s: int
    disposition: Disposition
    destination: str | None
    bytes_up: int
    bytes_down: int
    rating_group: int | None
    roaming_mcc: str | None

    @property
    def quantity(self) -> int:
        """The amount to rate in base units: billable seconds for voice, octets for data,
        messages for sms (one per record)."""
        if self.kind == "data":
            return self.bytes_up + self.bytes_down
        if self.kind == "sms":
            return 1
        return self.billsec_s


@dataclass(slots=True)
class RejectedLine:
    """A line that could not be turned into a UsageEvent, kept whole so nothing is lost.

    `raw` is the line without its line terminator, decoded as UTF-8 with errors="backslashreplace":
    a byte that is not UTF-8 shows as `\\xNN`, so the original bytes can be recovered (except
    where the line already contained a literal backslash-x sequence)."""

    source_format: SourceFormat
    source_file: str
    line_no: int
    raw: str
    reason_code: str
    reason: str
