"""Raw CDR lines (bytes) to CSV fields, one physical line at a time.

Why line by line: a CDR file is one record per line, and a single broken line (an unterminated
quote, a stray carriage return, bytes that are not UTF-8) must cost that line only. A csv.reader
over the whole file would read an unterminated quote as a field running on into the following
lines and swallow them; here it is reported as one malformed line and the next line starts fresh.

Why one long-lived csv.reader fed by `_OneLine` instead of csv.reader([line]) per line: building a
reader per line costs about a quarter of the parse time; the fed reader keeps the C parser and
still sees exactly one line per record (at the line's end it asks for more input, gets none, and in
strict mode reports an unterminated quote as "unexpected end of data").
"""
from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator

from mediation.records import MALFORMED_CSV, NOT_UTF8, RejectedLine, SourceFormat

BOM = b"\xef\xbb\xbf"

Row = tuple[int, bytes, list[str]]  # (line number, raw line, fields)


class _OneLine:
    """An iterator that hands the csv reader the current line once, then reports end of input."""

    __slots__ = ("line",)

    def __init__(self) -> None:
        self.line: str | None = None

    def __iter__(self) -> _OneLine:
        return self

    def __next__(self) -> str:
        line = self.line
        if line is None:
            raise StopIteration
        self.line = None
        return line


def line_text(raw: bytes) -> str:
    """The line without its terminator, decoded so that no byte is lost."""
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw.decode("utf-8", errors="backslashreplace")


def reject(source_format: SourceFormat, source_file: str, line_no: int, raw: bytes, code: str, reason: str) -> RejectedLine:
    return RejectedLine(source_format, source_file, line_no, line_text(raw), code, reason)


def read_rows(lines: Iterable[bytes], *, source_format: SourceFormat, source_file: str, first_line_no: int = 1) -> Iterator[Row | RejectedLine]:
    """Yield (line_no, raw, fields) for every line that is UTF-8 and valid CSV, a RejectedLine for
    every line that is not, and nothing for blank lines (they carry no record; files often end
    with one). `first_line_no` numbers the first line, so a file can be parsed in pieces."""
    feed = _OneLine()
    reader = csv.reader(feed, strict=True)
    line_no = first_line_no - 1
    for raw in lines:
        line_no += 1
        if line_no == 1 and raw.startswith(BOM):
            raw = raw[3:]  # a UTF-8 byte-order mark left by an editor; not part of the first field
        try:
            feed.line = raw.decode()
        except UnicodeDecodeError as exc:
            yield reject(source_format, source_file, line_no, raw, NOT_UTF8,
                         f"line is not valid UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start}")
            continue
        try:
            fields = next(reader)
        except csv.Error as exc:
            feed.line = None  # the reader may have stopped before taking the line
            yield reject(source_format, source_file, line_no, raw, MALFORMED_CSV, f"line is not valid CSV: {exc}")
            continue
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        yield line_no, raw, fields
