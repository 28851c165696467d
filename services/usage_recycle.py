"""Recycling rejected usage (TMF635 status `recycled`): after a fix (the product was created, the
catalog corrected, the parser taught a new spelling), read a rejected record again and put it
through the same ingestion as new usage.

- Which records: by id (`recycle`), or a whole class at once (`recycle_by_filter`, e.g. every
  `unknown_subscriber` since the product was created).
- How a record is read again: a TMF635 API rejection keeps the Usage JSON as received, so it goes
  through `parse_tmf_usage` again. A CDR-file rejection keeps its raw line and how the file was
  read (format, source, time zone, country code); the line goes through the same mediation parser,
  becomes record "<source>:<key>" as in the importer, and must fall in the importer's window.
- Then services.usage_ingest.ingest: de-duplication, guiding and rating as for new usage.
- The rejected_usage row is never changed. Each attempt is a row in rejected_usage_recycle and the
  record's status is derived from them: `recycled` once an attempt resolved it (accepted; duplicate,
  i.e. the record is stored already; or not_charged, a line now read as an unanswered call),
  otherwise `rejected` with the latest attempt's reason. Nothing is lost either way.
- Recycling a record that is recycled already is a no-op, reported as `already_recycled`.
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import event, func
from sqlmodel import Session, col, exists, select

from domain.billing_profile import BillingProfile
from domain.catalog import Catalog
from mediation.detect import PARSERS
from mediation.importer import DEFAULT_MAX_AGE_DAYS, OUT_OF_WINDOW, UsageWindow, usage_in
from mediation.records import NOT_UTF8, RejectedLine, UsageEvent
from persistence.tables import RejectedUsage, RejectedUsageRecycle, UsageRecord
from services.errors import NotFound
from services.query import utcnow
from services.usage_ingest import MAX_BATCH, IngestReport, ParsedUsage, ingest, parse_tmf_usage

Outcome = Literal["accepted", "duplicate", "not_charged", "rejected"]
ResultStatus = Literal["accepted", "duplicate", "not_charged", "rejected", "already_recycled", "not_found"]
RejectedStatus = Literal["rejected", "recycled"]

# Outcomes after which the record needs nothing more: it is stored, or it is not usage at all.
RESOLVED: frozenset[str] = frozenset({"accepted", "duplicate", "not_charged"})
# A CDR line that cannot be read again the way it was read the first time.
NOT_RECYCLABLE = "not_recyclable"
# Keeps every IN (...) list inside the databases' bind-parameter limits.
_CHUNK = 2_000


@dataclass
class RecycleResult:
    rejected_id: int
    status: ResultStatus
    record_id: str | None = None  # the usage record id, once known
    reason_code: str | None = None  # for rejected: why, this time
    reason: str | None = None

    @property
    def rejected_status(self) -> RejectedStatus | None:
        """The record's status after this call; None for an id that does not exist."""
        if self.status == "not_found":
            return None
        return "rejected" if self.status == "rejected" else "recycled"


@dataclass
class RecycleReport:
    results: list[RecycleResult]
    more: bool = False  # recycle_by_filter: more records matched than it was allowed to take

    def count(self, status: ResultStatus) -> int:
        return sum(1 for r in self.results if r.status == status)


@dataclass
class RejectedUsageView:
    """A rejected record with its recycle attempts (oldest first) and the status they give it."""

    row: RejectedUsage
    attempts: list[RejectedUsageRecycle] = field(default_factory=list)

    @property
    def status(self) -> RejectedStatus:
        return "recycled" if any(a.outcome in RESOLVED for a in self.attempts) else "rejected"

    @property
    def current_reason(self) -> tuple[str, str] | None:
        """(code, text) of why it is rejected now: the latest attempt's, else the original; None once recycled."""
        if self.status == "recycled":
            return None
        for attempt in reversed(self.attempts):
            if attempt.outcome == "rejected" and attempt.new_reason_code:
                return attempt.new_reason_code, attempt.new_reason or ""
        return self.row.reason_code, self.row.reason


# --- recycling -----------------------------------------------------------------------------------


def recycle(session: Session, rejected_ids: Sequence[int], catalog: Catalog, profiles: dict[str, BillingProfile], recycled_by: str,
            now: datetime | None = None, *, max_age_days: int = DEFAULT_MAX_AGE_DAYS) -> RecycleReport:
    """Recycle the given rejected records inside the caller's transaction; results in input order
    (an id given twice is recycled once). `max_age_days` is the CDR window, as in the importer."""
    now = now or utcnow()
    ids = list(dict.fromkeys(rejected_ids))
    rows = _lock_rejected(session, ids)
    resolved = _resolving_attempts(session, set(rows))
    window = UsageWindow(now, max_age_days)

    results: dict[int, RecycleResult] = {}
    to_ingest: list[tuple[int, ParsedUsage]] = []
    for rejected_id in ids:
        row = rows.get(rejected_id)
        if row is None:
            results[rejected_id] = RecycleResult(rejected_id, "not_found")
        elif rejected_id in resolved:
            results[rejected_id] = RecycleResult(rejected_id, "already_recycled", record_id=resolved[rejected_id].usage_record_id)
        else:
            reread = _read_again(session, row, window)
            if isinstance(reread, ParsedUsage):
                to_ingest.append((rejected_id, reread))
            else:
                results[rejected_id] = reread

    if to_ingest:
        report = _ingest_keeping_rejections_out(session, [parsed for _, parsed in to_ingest], catalog, profiles, now)
        for (rejected_id, parsed), outcome in zip(to_ingest, report.results, strict=True):
            record_id = outcome.record.id if outcome.record is not None else parsed.record_id
            results[rejected_id] = RecycleResult(rejected_id, outcome.status, record_id, outcome.reason_code, outcome.reason)

    session.add_all(_attempt(result, now, recycled_by) for result in results.values() if result.status in (*RESOLVED, "rejected"))
    session.flush()
    return RecycleReport([results[rejected_id] for rejected_id in ids])


def recycle_by_filter(session: Session, catalog: Catalog, profiles: dict[str, BillingProfile], recycled_by: str, *, reason_code: str,
                      since: datetime | None = None, now: datetime | None = None, limit: int = MAX_BATCH,
                      max_age_days: int = DEFAULT_MAX_AGE_DAYS) -> RecycleReport:
    """Recycle every record still rejected for `reason_code` (its current reason: the latest
    attempt's, else the original) and received at or after `since`, oldest first, at most `limit`
    of them; `more` says whether others matched."""
    conditions = [func.coalesce(_latest_reason_code(), RejectedUsage.reason_code) == reason_code, ~_is_resolved()]
    if since is not None:
        conditions.append(RejectedUsage.received_at >= since)
    statement = select(RejectedUsage.id).where(*conditions).order_by(col(RejectedUsage.id)).limit(limit + 1)
    ids = [i for i in session.exec(statement) if i is not None]
    report = recycle(session, ids[:limit], catalog, profiles, recycled_by, now, max_age_days=max_age_days)
    report.more = len(ids) > limit
    return report


def _lock_rejected(session: Session, ids: list[int]) -> dict[int, RejectedUsage]:
    """The rows, locked (PostgreSQL; SQLite serialises writers already) in one order for everyone,
    so two staff recycling the same record cannot both ingest it: the second waits, then sees the
    first one's attempt."""
    found: dict[int, RejectedUsage] = {}
    ordered = sorted(ids)
    for start in range(0, len(ordered), _CHUNK):
        statement = (select(RejectedUsage).where(col(RejectedUsage.id).in_(ordered[start:start + _CHUNK]))
                     .order_by(col(RejectedUsage.id)).with_for_update().execution_options(populate_existing=True))
        for row in session.exec(statement):
            assert row.id is not None
            found[row.id] = row
    return found


def _resolving_attempts(session: Session, ids: set[int]) -> dict[int, RejectedUsageRecycle]:
    found: dict[int, RejectedUsageRecycle] = {}
    ordered = sorted(ids)
    for start in range(0, len(ordered), _CHUNK):
        statement = (select(RejectedUsageRecycle)
                     .where(col(RejectedUsageRecycle.rejected_id).in_(ordered[start:start + _CHUNK]),
                            col(RejectedUsageRecycle.outcome).in_(RESOLVED))
                     .order_by(col(RejectedUsageRecycle.id)))
        for attempt in session.exec(statement):
            found.setdefault(attempt.rejected_id, attempt)
    return found


def _is_resolved() -> Any:
    return exists().where(RejectedUsageRecycle.rejected_id == RejectedUsage.id, col(RejectedUsageRecycle.outcome).in_(RESOLVED))


def _latest_reason_code() -> Any:
    return (select(RejectedUsageRecycle.new_reason_code).where(RejectedUsageRecycle.rejected_id == RejectedUsage.id)
            .order_by(col(RejectedUsageRecycle.id).desc()).limit(1).correlate(RejectedUsage).scalar_subquery())


def _attempt(result: RecycleResult, now: datetime, recycled_by: str) -> RejectedUsageRecycle:
    rejected = result.status == "rejected"
    return RejectedUsageRecycle(
        rejected_id=result.rejected_id,
        attempted_at=now,
        outcome=result.status,
        new_reason_code=result.reason_code if rejected else None,
        new_reason=(result.reason or "")[:2000] if rejected else None,
        usage_record_id=None if rejected else result.record_id,
        recycled_by=recycled_by,
    )


def _ingest_keeping_rejections_out(session: Session, parsed: list[ParsedUsage], catalog: Catalog,
                                   profiles: dict[str, BillingProfile], now: datetime) -> IngestReport:
    """ingest, minus the rejected_usage rows it writes for records it rejects: a recycled record is
    rejected already, and its new reason goes into its attempt row. Without this, every failed
    attempt would add another copy of the record to the rejected list."""
    with _new_rejections(session) as written:
        report = ingest(session, parsed, catalog, profiles, now=now)
    for row in written:
        session.delete(row)
    session.flush()
    return report


@contextmanager
def _new_rejections(session: Session) -> Iterator[list[RejectedUsage]]:
    written: list[RejectedUsage] = []

    def collect(flushing: Session, _context: Any, _instances: Any) -> None:
        written.extend(o for o in flushing.new if isinstance(o, RejectedUsage))

    event.listen(session, "before_flush", collect)
    try:
        yield written
    finally:
        event.remove(session, "before_flush", collect)


# --- reading a rejected record again -------------------------------------------------------------


def _read_again(session: Session, row: RejectedUsage, window: UsageWindow) -> ParsedUsage | RecycleResult:
    """What ingest gets for the record, or the attempt's result when it ends before ingest."""
    payload = row.payload
    if row.line_erased_at is not None:
        assert row.id is not None
        return RecycleResult(row.id, "rejected", row.record_id, NOT_RECYCLABLE,
                             "its source line was erased: traffic data is kept six months (services.traffic_retention)")
    if _is_cdr_line(payload):
        return _read_cdr_line_again(session, row, window)
    # A TMF635 API record: the Usage object as received. (A body that was not an object at all
    # was kept as {"value": ...}; it fails again as an invalid record, which is what it is.)
    return parse_tmf_usage(payload)


def _is_cdr_line(payload: Any) -> bool:
    # The shape mediation.importer gives the rejections of CDR files.
    return isinstance(payload, dict) and {"format", "source", "raw", "fileSha256"} <= payload.keys()


def _read_cdr_line_again(session: Session, row: RejectedUsage, window: UsageWindow) -> ParsedUsage | RecycleResult:
    payload = row.payload
    rejected_id = row.id
    assert rejected_id is not None

    def rejected(code: str, reason: str, record_id: str | None = None) -> RecycleResult:
        return RecycleResult(rejected_id, "rejected", record_id or row.record_id, code, reason)

    parser = PARSERS.get(payload["format"])
    if parser is None:
        return rejected(NOT_RECYCLABLE, f"no parser for CDR format {payload['format']!r}")
    if not isinstance(payload["raw"], str):
        return rejected(NOT_RECYCLABLE, "the source line was not kept")
    options: dict[str, Any] = {"source_file": payload.get("sourceFile") or "", "timezone": payload.get("timezone") or "UTC",
                               "country_code": payload.get("countryCode") or "49", "first_line_no": payload.get("lineNo") or 1}
    if payload["format"] == "pgw":
        # PGW columns are found by the file's header, and the importer does not keep it with a line.
        if not payload.get("header"):
            return rejected(NOT_RECYCLABLE, "a PGW line can only be read with its file's header, which was not kept; import the file again under a new name or fix the importer to keep the header")
        options["header"] = payload["header"]
    try:
        items = list(parser([_line_bytes(payload["raw"], row.reason_code)], **options))
    except ValueError as exc:  # a bad time zone or country code, a bad PGW header
        return rejected(NOT_RECYCLABLE, f"cannot read the line as it was read before: {exc}")
    if not items:
        return rejected(NOT_RECYCLABLE, "the source line is blank")

    item = items[0]
    if isinstance(item, RejectedLine):
        return rejected(item.reason_code, item.reason)
    assert isinstance(item, UsageEvent)
    # Mirrors mediation.importer._store (which does not expose its mapping): same record id
    # namespace, same handling of unanswered calls, same window.
    record_id = f"{payload['source']}:{item.record_id}"
    if item.disposition != "ANSWERED":
        return RecycleResult(rejected_id, "not_charged", record_id)
    problem = window.problem(item.start)
    if problem is not None:
        if session.get(UsageRecord, record_id) is not None:
            return RecycleResult(rejected_id, "duplicate", record_id)  # stored meanwhile: charged once already
        return rejected(OUT_OF_WINDOW, problem, record_id)
    return ParsedUsage(record_id, payload, usage=usage_in(record_id, item))


_ESCAPED_BYTE = re.compile(rb"\\x([0-9a-f]{2})")


def _line_bytes(raw: str, reason_code: str) -> bytes:
    """The line's bytes. A line that was not UTF-8 was kept with its odd bytes written as \\xNN
    (mediation.records.RejectedLine); those are turned back into the bytes, so the line is read
    as it was and not as the text of the escapes."""
    encoded = raw.encode("utf-8")
    if reason_code != NOT_UTF8:
        return encoded
    return _ESCAPED_BYTE.sub(lambda match: bytes([int(match[1], 16)]), encoded)


# --- reading -------------------------------------------------------------------------------------


def get_rejected(session: Session, rejected_id: int) -> RejectedUsageView:
    row = session.get(RejectedUsage, rejected_id)
    if row is None:
        raise NotFound("rejectedUsage", str(rejected_id))
    attempts = session.exec(select(RejectedUsageRecycle).where(RejectedUsageRecycle.rejected_id == rejected_id)
                            .order_by(col(RejectedUsageRecycle.id))).all()
    return RejectedUsageView(row, list(attempts))


def statuses(session: Session, rejected_ids: Sequence[int]) -> dict[int, RejectedStatus]:
    """The derived status of each record, with one query per chunk (for a list of rejected records)."""
    resolved = _resolving_attempts(session, set(rejected_ids))
    return {i: "recycled" if i in resolved else "rejected" for i in rejected_ids}
