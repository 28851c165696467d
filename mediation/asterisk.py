"""Asterisk cdr_csv lines (Master.csv, no header line) -> UsageEvent / RejectedLine.

Columns (cdr_csv writes them in this order; see docs/cdr-formats.md for what each one becomes):
accountcode, src, dst, dcontext, clid, channel, dstchannel, lastapp, lastdata, start, answer, end,
duration, billsec, disposition, amaflags, uniqueid, userfield.
`uniqueid` is only written with `loguniqueid=yes` and `userfield` with `loguserfield=yes` in
cdr.conf; o2c needs uniqueid (the dedup key), so it takes 18 columns, or 17 without userfield.

The served subscriber is `src` (the calling party): o2c bills originating calls.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

from mediation.csvlines import Row, read_rows, reject
from mediation.records import WRONG_COLUMN_COUNT, RejectedLine, UsageEvent
from mediation.voice import VoiceColumns, VoiceEvents

FORMAT = "asterisk"
COLUMNS = ("accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp", "lastdata",
           "start", "answer", "end", "duration", "billsec", "disposition", "amaflags", "uniqueid", "userfield")
COLUMN_COUNTS = (18, 17)  # with and without userfield
SRC, DST, START, ANSWER, END, DURATION, BILLSEC, DISPOSITION, UNIQUEID = (
    COLUMNS.index(name) for name in ("src", "dst", "start", "answer", "end", "duration", "billsec", "disposition", "uniqueid"))

# ast_cdr_disp2str() spellings -> o2c's. "NO ANSWER" has a space in Asterisk.
DISPOSITIONS = {"ANSWERED": "ANSWERED", "NO ANSWER": "NO_ANSWER", "BUSY": "BUSY", "FAILED": "FAILED", "CONGESTION": "CONGESTION"}

_NAMES = VoiceColumns(record_id="uniqueid", caller="src", start="start", answer="answer", end="end",
                      duration="duration", billsec="billsec", disposition="disposition")


def parse(lines: Iterable[bytes], *, source_file: str, timezone: str = "UTC", country_code: str = "49",
          first_line_no: int = 1) -> Iterator[UsageEvent | RejectedLine]:
    """Stream the events and rejections of `lines` (raw lines as read from a file opened in binary
    mode), in line order. `timezone` is the zone the switch writes its timestamps in ("UTC" when
    cdr.conf has usegmtime=yes); `first_line_no` is the number of the first line given.
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
                         f"expected 18 columns (17 without userfield), found {len(fields)}")
            continue
        disposition_text = fields[DISPOSITION]
        yield build(line_no, raw, fields[UNIQUEID], fields[SRC], fields[DST], fields[START], fields[ANSWER], fields[END],
                    fields[DURATION], fields[BILLSEC], DISPOSITIONS.get(disposition_text), disposition_text)
