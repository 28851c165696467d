"""`o2c verify-invoices`: checks that no issued invoice or credit note was changed, removed or slipped in.

It walks the whole document chain in issue order and recomputes every document's SHA-256 over its
canonical content (activities.invoice_issuer.canonical_content): each document must hash to its stored
`content_hash`, name its predecessor's hash as `previous_hash`, and sit at the next chain position;
the chain must end where its head (`document_chain`) says. Then every number series (INV-2026,
CN-2026, ...) must be gapless from 1 up to its counter. Exit status 0 when all holds, 1 when anything
breaks (the first break is named), 2 when the database cannot be read.

Read-only: it never migrates or writes."""
from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

NUMBER = re.compile(r"^(?P<series>[A-Z]+-\d{4})-(?P<seq>\d{6,})$")


@dataclass
class Break:
    chain_seq: int | None
    number: str | None
    problem: str

    def __str__(self) -> str:
        where = f"#{self.chain_seq}" if self.chain_seq is not None else "-"
        return f"{where} {self.number or '(no number)'}: {self.problem}"


@dataclass
class VerifyReport:
    documents: int = 0  # chained documents checked
    unchained: int = 0  # issued before the chain existed (migration 0006)
    series: dict[str, int] = field(default_factory=dict)  # series -> numbers checked
    breaks: list[Break] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaks

    def lines(self) -> list[str]:
        out = [f"documents in the chain: {self.documents}" + (f" (+{self.unchained} issued before the chain, not hash-checked)" if self.unchained else "")]
        for series, count in sorted(self.series.items()):
            out.append(f"series {series}: {count} numbers")
        out += [f"warning: {w}" for w in self.warnings]
        if self.ok:
            out.append("OK: every hash matches, the chain is unbroken and every series is gapless")
        else:
            out.append(f"BROKEN: {len(self.breaks)} problem(s); first: {self.breaks[0]}")
            out += [f"  {b}" for b in self.breaks]
        return out


def verify_documents(session: Any) -> VerifyReport:
    from sqlmodel import col, select

    from activities.invoice_issuer import CHAIN_ID, document_hash
    from persistence.tables import DocumentChain, Invoice, InvoiceSequence

    report = VerifyReport()
    head = session.get(DocumentChain, CHAIN_ID)
    expected_seq, previous_hash = 1, None
    chain_breaks: list[Break] = []
    statement = select(Invoice).where(col(Invoice.chain_seq).is_not(None)).order_by(col(Invoice.chain_seq)).execution_options(yield_per=200)
    for doc in session.exec(statement):
        report.documents += 1
        if doc.chain_seq != expected_seq:
            missing = f"#{expected_seq}" if doc.chain_seq == expected_seq + 1 else f"#{expected_seq}..#{doc.chain_seq - 1}"
            chain_breaks.append(Break(doc.chain_seq, doc.number, f"chain position {missing} is missing (deleted document?)"))
        elif doc.previous_hash != previous_hash:
            chain_breaks.append(Break(doc.chain_seq, doc.number, "previous_hash does not match the preceding document's hash"))
        if doc.content_hash is None or document_hash(doc) != doc.content_hash:
            chain_breaks.append(Break(doc.chain_seq, doc.number, "content does not match its hash (changed after issue)"))
        if doc.number is None:
            chain_breaks.append(Break(doc.chain_seq, doc.number, "a chained document has lost its number"))
        expected_seq, previous_hash = doc.chain_seq + 1, doc.content_hash
        session.expunge(doc)
    last_seq = expected_seq - 1
    head_seq = head.last_seq if head is not None else 0
    if head is None:
        chain_breaks.append(Break(None, None, "the chain head (document_chain) is missing"))
    elif head_seq != last_seq:
        problem = (f"the chain head says {head_seq} documents but the chain ends at #{last_seq}: "
                   + ("the last document(s) are missing" if head_seq > last_seq else "the head was rolled back"))
        chain_breaks.append(Break(last_seq + 1 if head_seq > last_seq else last_seq, None, problem))
    elif head.last_hash != previous_hash:
        chain_breaks.append(Break(last_seq, None, "the chain head's hash does not match the last document"))
    report.breaks.extend(sorted(chain_breaks, key=lambda b: (b.chain_seq is None, b.chain_seq or 0)))

    # Numbers: gapless per series, from 1 up to the series' counter.
    # A series is one o2c numbers (it has a counter in invoice_sequence); other numbers are only reported.
    numbers: dict[str, list[int]] = defaultdict(list)
    chained_series: set[str] = set()
    counters = {row.series: row.last_value for row in session.exec(select(InvoiceSequence))}
    numbered = session.exec(select(Invoice.number, Invoice.chain_seq, Invoice.content_hash).where(col(Invoice.number).is_not(None))).all()
    for number, chain_seq, content_hash in numbered:
        if chain_seq is None:
            report.unchained += 1
            if content_hash is not None:
                report.breaks.append(Break(None, number, "has a hash but no chain position (taken out of the chain?)"))
        match = NUMBER.match(number)
        if match is None or (match["series"] not in counters and chain_seq is None):
            report.warnings.append(f"{number} is not in a number series o2c keeps")
            continue
        numbers[match["series"]].append(int(match["seq"]))
        if chain_seq is not None:
            chained_series.add(match["series"])
    for series in sorted(chained_series - set(counters)):
        report.breaks.append(Break(None, f"{series}-{min(numbers[series]):06d}", f"number series {series} has no counter (invoice_sequence row removed?)"))
    for series in sorted(set(numbers) | set(counters)):
        taken = sorted(numbers.get(series, []))
        report.series[series] = len(taken)
        top = max(counters.get(series, 0), taken[-1] if taken else 0)
        missing = sorted(set(range(1, top + 1)) - set(taken))
        if missing:
            shown = ", ".join(f"{series}-{n:06d}" for n in missing[:10]) + (" ..." if len(missing) > 10 else "")
            report.breaks.append(Break(None, f"{series}-{missing[0]:06d}", f"number series {series} has a gap: {shown} missing"))
    return report


def register(subparsers: Any) -> None:
    verify = subparsers.add_parser("verify-invoices", help="check the tamper-evident chain of issued invoices and credit notes, and gapless numbers")
    verify.add_argument("--database-url", help="the database to check (default: O2C_DATABASE_URL)")
    verify.set_defaults(func=_verify)


def _verify(args: argparse.Namespace) -> None:
    sys.exit(run(args.database_url))


def run(database_url: str | None = None, out=None) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from config.settings import get_settings
    from persistence.db import session_scope

    out = out or sys.stdout
    url = database_url or get_settings().database_url
    try:
        with session_scope(url) as session:
            report = verify_documents(session)
    except SQLAlchemyError as exc:
        print(f"o2c verify-invoices: cannot read the documents: {exc}", file=out)
        return 2
    for line in report.lines():
        print(line, file=out)
    return 0 if report.ok else 1
