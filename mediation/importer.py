"""Importing one CDR file into o2c, exactly once: parse, window-check, de-duplicate, guide, rate.

`import_file(db_url, path, catalog=..., profiles=...)`:
1. Hashes the file. Its SHA-256 is the key of its `imported_file` row: bytes that were imported
   once (status done) are not imported again, whatever the file is called ("already_imported").
2. Streams the parser (mediation.detect): each line becomes exactly one outcome, counted in the
   FileReport: accepted (rated and stored, TMF635 status `rated`), duplicate, not_charged, or
   rejected (kept in rejected_usage with its source line and a reason).
3. Commits batches of at most `batch_size` lines, each in one transaction together with the file's
   progress (`last_line_no` and the counts), so an import cut off mid-file (crash, kill, database
   outage) resumes after the last committed line: no line is stored, rejected or counted twice.
   The batches go through mediation.bulk: tuples instead of ParsedUsage and ORM objects, COPY on
   PostgreSQL, and the next batch parsed and rated while the previous one is written.

Per line:
- a line the parser rejects -> rejected_usage with the parser's reason code (rejected_parse);
- a call that was not answered (NO ANSWER, BUSY, FAILED, CONGESTION) -> not_charged. It is not
  usage: nothing was consumed, so it is neither stored nor rejected, only counted (mediation
  filters these out; storing them as 0-unit records would double the usage table for nothing);
- an event older than `max_age_days` or more than 5 minutes in the future -> rejected_usage,
  reason `out_of_window` (rejected_window), unless its record id is stored already (duplicate);
- anything else is ingested by the rules of services.usage_ingest.ingest (mediation.bulk applies
  them in bulk; `usage_in` is the same mapping for one event, used when a line is recycled):
  duplicate by record id, guided to the product holding the MSISDN at the event time (else
  `unknown_subscriber` or `outside_subscription`, rejected_rating), rated with the offering's
  tariff (a voice call without an E.164 called number is rejected `missing_destination` when the
  tariff prices destinations differently; a visited network's MCC becomes its country), then
  stored with status `rated` and the rating detail (tariff and version, band, zone, parts).

Record ids are namespaced by source, "<source>:<key>" (source defaults to the format name):
switch keys are only unique per switch (an Asterisk uniqueid is epoch.sequence). Give each
switch its own source name.

Problems with the file as a whole (format not detected, bad PGW header, I/O error) make the report
"failed" and the row status failed with the error; lines committed before the problem stay. Database
errors and ImportConflict are not the file's fault: they propagate, and a later run resumes.
"""
from __future__ import annotations

import csv
import hashlib
import logging
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import chain, islice
from typing import Any, Literal

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import select

from config.tariff_loader import cached_tariff_book
from domain.billing_profile import BillingProfile
from domain.catalog import Catalog
from domain.tariff import TariffBook
from mediation import bulk
from mediation.bulk import COUNT_FIELDS, ENGINE_DISPOSITION, OUT_OF_WINDOW, Counts, ImportConflict, Item
from mediation.csvlines import BOM
from mediation.detect import PARSERS, SAMPLE_LINES, UnknownFormat, detect_format
from mediation.mcc import country_of_mcc
from mediation.numbers import check_country_code
from mediation.pgw import HeaderError
from mediation.records import RejectedLine, UsageEvent
from mediation.timestamps import SwitchClock
from persistence.db import session_scope
from persistence.tables import ImportedFile
from services.query import utcnow
from services.usage_ingest import UsageIn

log = logging.getLogger(__name__)

DEFAULT_MAX_AGE_DAYS = 90
# Switch clocks drift a little; a record further ahead than this is a wrong clock or time zone.
MAX_FUTURE = timedelta(minutes=5)
# Lines per transaction (at most: mediation.bulk starts and ends a file with smaller batches). Each
# batch locks and writes the allowance counters of the subscribers it touches (often most of them)
# and runs the spending-limit check of their accounts, so small batches cost more per line. Two
# batches are in memory at a time (~150 MB each at 100,000 lines), whatever the file's size.
DEFAULT_BATCH_SIZE = 100_000
MAX_BATCH_SIZE = 200_000
# Source names become part of every record id, so keep them short and unambiguous.
_SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HASH_CHUNK = 1 << 20
_COUNT_FIELDS = COUNT_FIELDS

FileStatus = Literal["done", "already_imported", "failed"]
__all__ = ["OUT_OF_WINDOW", "Counts", "FileReport", "ImportConflict", "UsageWindow", "check_import_options", "import_file", "usage_in"]


class _FileProblem(Exception):
    """The file itself cannot be imported (as opposed to a database problem)."""


@dataclass(kw_only=True)
class FileReport(Counts):
    """The outcome of one import_file call. Counts are what this call did: zero for
    "already_imported"; for a resumed file, only the lines after the resume point."""

    path: str
    status: FileStatus
    format: str | None = None
    sha256: str | None = None
    error: str | None = None

    def summary(self) -> str:
        """One line for people: what happened to the file and its lines."""
        name = os.path.basename(self.path)
        if self.status == "already_imported":
            return f"{name}: already imported (sha256 {self.sha256}), nothing to do"
        if self.status == "failed" and self.lines == 0:
            return f"{name}: FAILED: {self.error}"
        text = (f"{name}: {self.format or 'empty'}, {self.lines} lines: {self.accepted} accepted, {self.duplicates} duplicates, "
                f"{self.not_charged} not charged (unanswered), {self.rejected} rejected ({self.rejected_parse} unreadable, "
                f"{self.rejected_window} out of window, {self.rejected_rating} not guided or rated)")
        return f"{text}; FAILED after that: {self.error}" if self.status == "failed" else text


@dataclass(frozen=True)
class UsageWindow:
    """The event times o2c accepts from files: not older than max_age_days, not in the future
    (beyond MAX_FUTURE). Older usage belongs to billing periods that are closed."""

    now: datetime
    max_age_days: int

    def problem(self, event_time: datetime) -> str | None:
        if event_time < self.now - timedelta(days=self.max_age_days):
            return f"event time {event_time.isoformat()} is more than {self.max_age_days} days before the import ({self.now.isoformat()})"
        if event_time > self.now + MAX_FUTURE:
            return f"event time {event_time.isoformat()} is in the future (import at {self.now.isoformat()}); check the switch clock and --timezone"
        return None

    def bounds(self) -> tuple[datetime, datetime]:
        """(oldest, newest) event time accepted: `problem` is None exactly inside, bounds included."""
        return self.now - timedelta(days=self.max_age_days), self.now + MAX_FUTURE


@dataclass(frozen=True)
class _Context:
    """Everything a batch needs besides its lines."""

    sha256: str
    file_name: str
    format: str
    source: str
    timezone: str
    country_code: str
    catalog: Catalog
    profiles: dict[str, BillingProfile]
    window: UsageWindow
    header: list[str] | None = None  # a PGW file's header fields: its lines cannot be read again without them

    def payload(self, line_no: int, raw: str | None) -> dict[str, Any]:
        """What rejected_usage keeps of a line: the line itself and all it takes to read it again
        the same way (for recycling after a fix)."""
        payload = {"format": self.format, "source": self.source, "sourceFile": self.file_name, "fileSha256": self.sha256,
                   "lineNo": line_no, "raw": raw, "timezone": self.timezone, "countryCode": self.country_code}
        if self.header is not None:
            payload["header"] = self.header
        return payload


def import_file(db_url: str, path: str | os.PathLike[str], *, catalog: Catalog, profiles: dict[str, BillingProfile],
                fmt: str | None = None, source: str | None = None, timezone: str = "UTC", country_code: str = "49",
                batch_size: int = DEFAULT_BATCH_SIZE, max_age_days: int = DEFAULT_MAX_AGE_DAYS,
                now: datetime | None = None, tariffs: TariffBook | None = None) -> FileReport:
    """Import one CDR file exactly once; see the module docstring. `fmt` names the format (else it
    is detected), `source` the record-id namespace (else the format name), `timezone` the zone the
    switch writes local times in, `tariffs` the tariff book (default catalog/tariffs.yaml). Bad
    arguments raise ValueError before the file is touched."""
    check_import_options(fmt=fmt, source=source, timezone=timezone, country_code=country_code, batch_size=batch_size, max_age_days=max_age_days)
    path = os.fspath(path)
    now = now or utcnow()
    report = FileReport(path=path, status="done")
    try:
        sha256, size = file_digest(path)
    except OSError as exc:
        return _failed(report, f"cannot read the file: {exc}")
    report.sha256 = sha256

    claim = _claim(db_url, sha256, os.path.basename(path), size, now)
    if claim is None:
        report.status = "already_imported"
        log.info("%s", report.summary())
        return report
    try:
        fmt, source = _resume_settings(claim, fmt, source, timezone, country_code)
        with _open_cdrs(path, fmt, timezone=timezone, country_code=country_code) as (detected, header, items, tap):
            report.format = detected
            if detected is None or tap is None:
                _forget(db_url, sha256)
            else:
                context = _Context(sha256, os.path.basename(path), detected, source or detected, timezone, country_code,
                                   catalog, profiles, UsageWindow(now, max_age_days), header)
                bulk.import_items(db_url, context, items, claim.last_line_no, batch_size, now, report, catalog=catalog,
                                  profiles=profiles, book=tariffs if tariffs is not None else cached_tariff_book(),
                                  remaining_lines=tap.remaining_lines)
    except _FileProblem as exc:
        _mark_failed(db_url, sha256, str(exc), now)
        return _failed(report, str(exc))
    log.info("%s", report.summary())
    return report


def check_import_options(*, fmt: str | None = None, source: str | None = None, timezone: str = "UTC", country_code: str = "49",
                         batch_size: int = DEFAULT_BATCH_SIZE, max_age_days: int = DEFAULT_MAX_AGE_DAYS) -> None:
    """Raise ValueError (UnknownFormat for a format) for options import_file cannot work with."""
    if fmt is not None and fmt not in PARSERS:
        raise UnknownFormat(f"unknown CDR format {fmt!r}; choose one of {', '.join(PARSERS)}")
    if source is not None and not _SOURCE_NAME.fullmatch(source):
        raise ValueError(f"source name {source!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    SwitchClock(timezone)  # raises ValueError for an unknown zone
    check_country_code(country_code)
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch size must be between 1 and {MAX_BATCH_SIZE:,}, got {batch_size}")
    if max_age_days < 1:
        raise ValueError(f"max age must be at least 1 day, got {max_age_days}")


def _failed(report: FileReport, error: str) -> FileReport:
    report.status = "failed"
    report.error = error
    log.warning("%s", report.summary())
    return report


def file_digest(path: str) -> tuple[str, int]:
    """SHA-256 (hex) and size of the file's bytes."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


# --- reading the file ----------------------------------------------------------------------------


class _LineTap:
    """Hands the file's raw lines to the parser and remembers the latest one.

    The parsers keep the raw line only for lines they reject, but a line they accept may still be
    rejected later (unknown subscriber, out of window) and must be kept whole too. The parsers
    yield each item as soon as its line is read, without reading ahead, so when an event arrives
    the tap holds its line (as bytes: it is decoded only if the event is rejected)."""

    __slots__ = ("_lines", "line_no", "last", "bytes_read", "size")

    def __init__(self, lines: Iterable[bytes], size: int) -> None:
        self._lines = lines
        self.line_no = 0
        self.last = b""
        self.bytes_read = 0
        self.size = size

    def __iter__(self) -> Iterator[bytes]:
        for raw in self._lines:
            self.line_no += 1
            self.bytes_read += len(raw)
            self.last = raw
            yield raw

    def remaining_lines(self) -> int | None:
        """About how many lines are left, from the bytes left and the mean line length so far."""
        if not self.bytes_read:
            return None
        return round((self.size - self.bytes_read) * self.line_no / self.bytes_read)


@contextmanager
def _open_cdrs(path: str, fmt: str | None, **options: str) -> Iterator[tuple[str | None, list[str] | None, Iterator[Item], _LineTap | None]]:
    """`with _open_cdrs(path, fmt, ...) as (format, header, items, tap)`: the file's items with their
    raw lines, for a PGW file its header's fields (kept with rejected lines, to read them again), and
    the tap that reads the lines (it tells how much of the file is left).

    Mirrors mediation.detect.parse_file (detect from the first lines, then stream the rest) with a
    _LineTap between the file and the parser. `format` is None for an empty or blank file."""
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise _FileProblem(f"cannot read the file: {exc}") from exc
    with handle:
        try:
            head = list(islice(handle, SAMPLE_LINES))
        except OSError as exc:
            raise _FileProblem(f"cannot read the file: {exc}") from exc
        if fmt is None:
            if not any(line.strip() for line in head):
                yield None, None, iter(()), None
                return
            try:
                fmt = detect_format(head)
            except UnknownFormat as exc:
                raise _FileProblem(str(exc)) from exc
        try:
            size = os.fstat(handle.fileno()).st_size
        except OSError as exc:
            raise _FileProblem(f"cannot read the file: {exc}") from exc
        tap = _LineTap(chain(head, handle), size)
        yield fmt, (_pgw_header(head) if fmt == "pgw" else None), _with_source_lines(PARSERS[fmt](tap, source_file=path, **options), tap), tap


def _pgw_header(head: list[bytes]) -> list[str] | None:
    """The fields of the first non-blank line, as mediation.pgw reads its header; None if there is
    none among the first lines (the parser then fails the file or finds no records)."""
    for index, raw in enumerate(head):
        if index == 0 and raw.startswith(BOM):
            raw = raw[3:]
        try:
            fields = next(csv.reader([raw.decode()], strict=True), [])
        except (UnicodeDecodeError, csv.Error):
            return None
        if fields and not (len(fields) == 1 and not fields[0].strip()):
            return fields
    return None


def _with_source_lines(parsed: Iterator[UsageEvent | RejectedLine], tap: _LineTap) -> Iterator[Item]:
    try:
        for item in parsed:
            # The tap's line is the event's (the parsers do not read ahead); a mismatch cannot happen
            # with the parsers as written, and then the record is kept without its line rather than fail.
            yield item, (tap.last if item.__class__ is UsageEvent and item.line_no == tap.line_no else None)
    except HeaderError as exc:
        raise _FileProblem(f"not a PGW data-record file: {exc}") from exc
    except OSError as exc:
        raise _FileProblem(f"cannot read the file: {exc}") from exc


# --- the import log (imported_file) --------------------------------------------------------------


def _claim(db_url: str, sha256: str, file_name: str, size: int, now: datetime) -> ImportedFile | None:
    """The file's row, created or taken back to status processing; None when it is done already.
    Insert-if-absent, so two processes claiming the same new file do not fail; the per-batch
    check in mediation.bulk.lock_progress keeps them from both importing it."""
    with session_scope(db_url) as session:
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        session.execute(insert(ImportedFile.__table__).values(  # type: ignore[attr-defined]
            sha256=sha256, file_name=file_name, status="processing", size_bytes=size, started_at=now,
            **{name: 0 for name in ("last_line_no", *_COUNT_FIELDS)}).on_conflict_do_nothing(index_elements=["sha256"]))
        row = session.exec(select(ImportedFile).where(ImportedFile.sha256 == sha256).with_for_update()
                           .execution_options(populate_existing=True)).one()
        if row.status == "done":
            return None
        if row.status == "failed":  # dropped again, perhaps with the format named this time: try again
            row.status, row.error, row.finished_at = "processing", None, None
            session.add(row)
        return row


def _resume_settings(claim: ImportedFile, fmt: str | None, source: str | None, timezone: str, country_code: str) -> tuple[str | None, str | None]:
    """A file resumed mid-way must be read as before, or its two halves would not match."""
    if claim.last_line_no == 0:
        return fmt, source
    asked = {"format": fmt or claim.format, "source": source or claim.source, "timezone": timezone}
    recorded = {"format": claim.format, "source": claim.source, "timezone": claim.timezone}
    if asked != recorded:
        raise _FileProblem(f"lines 1-{claim.last_line_no} of this file were imported with {recorded}; "
                           f"the rest must be too, but {asked} was asked for")
    return claim.format, claim.source


def _forget(db_url: str, sha256: str) -> None:
    """Drop the row of a file without records. Every empty file has the same hash, and there is
    nothing in it to import twice: remembering it would only make the next empty file look done."""
    with session_scope(db_url) as session:
        row = session.get(ImportedFile, sha256, with_for_update=True)
        if row is not None and row.lines == 0:
            session.delete(row)


def _mark_failed(db_url: str, sha256: str, error: str, now: datetime) -> None:
    with session_scope(db_url) as session:
        row = session.get(ImportedFile, sha256, with_for_update=True)
        if row is not None and row.status == "processing":
            row.status, row.error, row.finished_at = "failed", error[:2000], now
            session.add(row)


# --- what ingestion rates of a CDR event ---------------------------------------------------------


def usage_in(record_id: str, event: UsageEvent) -> UsageIn:
    """What ingestion rates of a CDR event (also for recycling a CDR line read again).

    A visited network's MCC becomes its country; an MCC not in mediation.mcc is passed on as
    "MCC <mcc>", which no tariff zone matches, so the record is rejected with that reason rather
    than rated as at home."""
    roaming = None
    if event.roaming_mcc is not None:
        roaming = country_of_mcc(event.roaming_mcc) or f"MCC {event.roaming_mcc}"
    return UsageIn(record_id=record_id, kind=event.kind, event_time=event.start, msisdn=event.msisdn, quantity=event.quantity,
                   destination=event.destination if event.kind != "data" else None, roaming_country=roaming,
                   disposition=ENGINE_DISPOSITION.get(event.disposition, event.disposition))

