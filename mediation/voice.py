"""The checks every switch voice CDR needs, whatever its column layout (Asterisk, FreeSWITCH).

A format module picks its columns out of the CSV row and maps its disposition; `VoiceEvents`
validates the rest and builds the UsageEvent, or the RejectedLine with the first problem found.
"""
from __future__ import annotations

from dataclasses import dataclass

from mediation.csvlines import reject
from mediation.fields import MAX_SECONDS, count_problem, id_problem, parse_count
from mediation.numbers import check_country_code, normalise_number
from mediation.records import (
    INVALID_DURATION,
    INVALID_MSISDN,
    INVALID_TIMESTAMP,
    UNKNOWN_DISPOSITION,
    RejectedLine,
    SourceFormat,
    UsageEvent,
)
from mediation.timestamps import SwitchClock


@dataclass(frozen=True, slots=True)
class VoiceColumns:
    """The format's own column names, so a rejection reason names the column a person will look for."""

    record_id: str
    caller: str
    start: str
    answer: str
    end: str
    duration: str
    billsec: str
    disposition: str


class VoiceEvents:
    __slots__ = ("source_format", "source_file", "clock", "country_code", "columns")

    def __init__(self, source_format: SourceFormat, source_file: str, columns: VoiceColumns, *, timezone: str, country_code: str) -> None:
        check_country_code(country_code)
        self.source_format: SourceFormat = source_format
        self.source_file = source_file
        self.clock = SwitchClock(timezone)
        self.country_code = country_code
        self.columns = columns

    def build(self, line_no: int, raw: bytes, record_id: str, caller: str, callee: str, start: str, answer: str, end: str,
              duration: str, billsec: str, disposition: str | None, disposition_text: str) -> UsageEvent | RejectedLine:
        names = self.columns
        problem = id_problem(names.record_id, record_id)
        if problem is not None:
            return self._reject(line_no, raw, *problem)
        msisdn = normalise_number(caller, self.country_code)
        if msisdn is None:
            return self._reject(line_no, raw, INVALID_MSISDN, f"{names.caller} {caller!r} is not an E.164 number (country code {self.country_code})")
        clock = self.clock
        try:
            start_utc = clock.to_utc(start)
        except ValueError as exc:
            return self._reject(line_no, raw, INVALID_TIMESTAMP, f"{names.start}: {exc}")
        # answer and end are not used, but a record whose timestamps do not parse is not trusted.
        try:
            if answer:  # empty when the call was never answered
                clock.check(answer)
        except ValueError as exc:
            return self._reject(line_no, raw, INVALID_TIMESTAMP, f"{names.answer}: {exc}")
        try:
            clock.check(end)
        except ValueError as exc:
            return self._reject(line_no, raw, INVALID_TIMESTAMP, f"{names.end}: {exc}")
        duration_s = parse_count(duration, MAX_SECONDS)
        if duration_s is None:
            return self._reject(line_no, raw, INVALID_DURATION, count_problem(names.duration, duration, MAX_SECONDS))
        billsec_s = parse_count(billsec, MAX_SECONDS)
        if billsec_s is None:
            return self._reject(line_no, raw, INVALID_DURATION, count_problem(names.billsec, billsec, MAX_SECONDS))
        if billsec_s > duration_s:
            # billsec counts from answer and duration from start, so billsec <= duration; billing the
            # larger figure of an inconsistent record would overcharge.
            return self._reject(line_no, raw, INVALID_DURATION, f"{names.billsec} {billsec_s} is larger than {names.duration} {duration_s}")
        if disposition is None:
            return self._reject(line_no, raw, UNKNOWN_DISPOSITION, f"{names.disposition} {disposition_text!r} is not a known call outcome")
        return UsageEvent(self.source_format, self.source_file, line_no, record_id, "voice", msisdn, start_utc, duration_s, billsec_s,
                          disposition, normalise_number(callee, self.country_code), 0, 0, None, None)  # type: ignore[arg-type]

    def _reject(self, line_no: int, raw: bytes, code: str, reason: str) -> RejectedLine:
        return reject(self.source_format, self.source_file, line_no, raw, code, reason)

