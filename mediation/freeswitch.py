"""FreeSWITCH mod_cdr_csv lines (no header line) -> UsageEvent / RejectedLine.

Columns of the standard template, every field double-quoted:
caller_id_name, caller_id_number, destination_number, context, start_stamp, answer_stamp,
end_stamp, duration, billsec, hangup_cause, uuid, bleg_uuid, accountcode
and, in the `example` template that cdr_csv.conf.xml ships as its default-template, two more:
read_codec, write_codec. o2c takes 13 or 15 columns and reads the first 13 the same way.

The served subscriber is `caller_id_number` (o2c bills originating calls). Configure
mod_cdr_csv with legs="a" (its default): a B-leg record repeats the call under another uuid and
the default template has nothing to tell the two apart, so it would be charged twice.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

from mediation.csvlines import Row, read_rows, reject
from mediation.records import WRONG_COLUMN_COUNT, RejectedLine, UsageEvent
from mediation.voice import VoiceColumns, VoiceEvents

FORMAT = "freeswitch"
COLUMNS = ("caller_id_name", "caller_id_number", "destination_number", "context", "start_stamp", "answer_stamp",
           "end_stamp", "duration", "billsec", "hangup_cause", "uuid", "bleg_uuid", "accountcode", "read_codec", "write_codec")
COLUMN_COUNTS = (13, 15)  # the standard fields; the same plus read_codec, write_codec
CALLER, CALLEE, START, ANSWER, END, DURATION, BILLSEC, HANGUP_CAUSE, UUID = (
    COLUMNS.index(name) for name in ("caller_id_number", "destination_number", "start_stamp", "answer_stamp", "end_stamp",
                                     "duration", "billsec", "hangup_cause", "uuid"))

# Q.850 cause names of calls that were not answered -> o2c dispositions. Any other well-formed
# cause of an unanswered call is FAILED (there are about a hundred: UNALLOCATED_NUMBER,
# CALL_REJECTED, NORMAL_TEMPORARY_FAILURE, ...).
UNANSWERED_CAUSES = {
    "USER_BUSY": "BUSY",
    "NO_ANSWER": "NO_ANSWER",
    "NO_USER_RESPONSE": "NO_ANSWER",
    "ORIGINATOR_CANCEL": "NO_ANSWER",  # the caller hung up while it rang
    "ALLOTTED_TIMEOUT": "NO_ANSWER",  # the dialplan's ring timeout ran out
    "NORMAL_CLEARING": "NO_ANSWER",  # cleared normally, but never answered
    "NORMAL_CIRCUIT_CONGESTION": "CONGESTION",
    "SWITCH_CONGESTION": "CONGESTION",
}
_CAUSE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")

_NAMES = VoiceColumns(record_id="uuid", caller="caller_id_number", start="start_stamp", answer="answer_stamp",
                      end="end_stamp", duration="duration", billsec="billsec", disposition="hangup_cause")


def disposition(hangup_cause: str, answer_stamp: str, billsec: str) -> str | None:
    """A call is ANSWERED when it has an answer time or billable seconds, whatever its hangup cause:
    an answered call that ended on MEDIA_TIMEOUT or RECOVERY_ON_TIMER_EXPIRE was still talked on,
    and NORMAL_CLEARING alone does not prove an answer. Otherwise the cause decides; None when the
    cause is empty or not a cause name at all (a shifted column)."""
    if answer_stamp or billsec.lstrip("0"):
        return "ANSWERED"
    mapped = UNANSWERED_CAUSES.get(hangup_cause)
    if mapped is not None:
        return mapped
    if hangup_cause and _CAUSE_CHARS.issuperset(hangup_cause):
        return "FAILED"
    return None


def parse(lines: Iterable[bytes], *, source_file: str, timezone: str = "UTC", country_code: str = "49",
          first_line_no: int = 1) -> Iterator[UsageEvent | RejectedLine]:
    """Stream the events and rejections of `lines` (raw lines as read from a file opened in binary
    mode), in line order. `timezone` is the zone of the FreeSWITCH host (its *_stamp fields are
    local time); `first_line_no` is the number of the first line given.
    A bad `timezone` or `country_code` raises ValueError here, before any line is read."""
    events = VoiceEvents(FORMAT, source_file, _NAMES, timezone=timezone, country_code=country_code)
    return _stream(read_rows(lines, source_format=FORMAT, source_file=source_file, first_line_no=first_line_no), events)


def _stream(rows: Iterator[Row | RejectedLine], events: VoiceEvents) -> Iterator[UsageEvent | RejectedLine]:
    build, source_file = events.build, events.source_file
    for row in rows:
        if row.__class__ is RejectedLine:
            yield row  # type: ignore[misc]
            continue
        line_no, raw, fields = row  # type: ignore[misc]
        if len(fields) not in COLUMN_COUNTS:
            yield reject(FORMAT, source_file, line_no, raw, WRONG_COLUMN_COUNT,
                         f"expected 13 columns (15 with read_codec, write_codec), found {len(fields)}")
            continue
        cause, billsec = fields[HANGUP_CAUSE], fields[BILLSEC]
        yield build(line_no, raw, fields[UUID], fields[CALLER], fields[CALLEE], fields[START], fields[ANSWER], fields[END],
                    fields[DURATION], billsec, disposition(cause, fields[ANSWER], billsec), cause)
