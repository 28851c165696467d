"""Tamper evidence: every issued invoice and credit note is sealed into one SHA-256 chain in issue order,
and `o2c verify-invoices` finds any document changed, removed or numbered out of series.

Each test uses its own invoice year, so its number series (INV-<year>, CN-<year>) is its own even though
the database is shared with the rest of the session; verification always covers the whole database,
so every test leaves the chain as it found it."""
from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlmodel import select

from activities.invoice_issuer import canonical_content, document_hash
from o2c_cli.main import build_parser
from o2c_cli.verify_invoices import run, verify_documents
from persistence.db import session_scope
from persistence.tables import DocumentChain, Invoice
from tests.billing.support import at, credit, invoice, issue, new_account, numbers, raw_delete, raw_insert, raw_row, raw_update
from tests.billing.chain_worker import issue_many


def verify(db_url: str) -> tuple[int, str]:
    out = io.StringIO()
    code = run(db_url, out=out)
    return code, out.getvalue()


def chained(db_url: str, ids: list[str]) -> list[Invoice]:
    with session_scope(db_url) as session:
        return list(session.exec(select(Invoice).where(Invoice.id.in_(ids)).order_by(Invoice.chain_seq)))


def test_fresh_chain_links_every_document_and_verifies(db_url):
    account = new_account(db_url)
    first = issue(db_url, account, at(2090))
    second = issue(db_url, account, at(2090, 1), "29.99")
    note, _ = credit(db_url, first.id, at(2090, 2), (1, None), reason="Outage on 3 Feb")
    third = issue(db_url, account, at(2090, 3), "1.00")

    docs = chained(db_url, [first.id, second.id, note.id, third.id])
    assert [d.number for d in docs] == ["INV-2090-000001", "INV-2090-000002", "CN-2090-000001", "INV-2090-000003"]
    # One chain in issue order, invoices and credit notes alike, each naming its predecessor's hash.
    assert [d.chain_seq for d in docs] == list(range(docs[0].chain_seq, docs[0].chain_seq + 4))
    for before, after in zip(docs, docs[1:]):
        assert after.previous_hash == before.content_hash
    for doc in docs:
        assert doc.content_hash == hashlib.sha256(canonical_content(doc)).hexdigest() == document_hash(doc)
    # The canonical content covers what the document says, including its PDF and the invoice a credit note corrects.
    body = json.loads(canonical_content(docs[2]))
    assert body["referencedInvoice"] == {"id": first.id, "number": "INV-2090-000001", "issueDate": "2090-02-01"}
    assert (body["grossCents"], body["documentType"], body["reason"]) == (-1189, "creditNote", "Outage on 3 Feb")
    assert body["pdfSha256"] == hashlib.sha256(docs[2].pdf).hexdigest()
    with session_scope(db_url) as session:
        head = session.get(DocumentChain, "documents")
    assert head.last_seq >= docs[-1].chain_seq

    code, out = verify(db_url)
    assert code == 0, out
    assert "OK: every hash matches" in out
    assert "series INV-2090: 3 numbers" in out and "series CN-2090: 1 numbers" in out


def test_an_amount_changed_in_the_database_is_found_and_named(db_url):
    account = new_account(db_url)
    first = issue(db_url, account, at(2091))
    target = issue(db_url, account, at(2091, 1), "50.00")
    issue(db_url, account, at(2091, 2))
    raw_update(db_url, target.id, gross_cents=target.gross_cents - 1000, net_cents=target.net_cents - 1000)
    try:
        code, out = verify(db_url)
        assert code == 1
        assert f"first: #{target.chain_seq} INV-2091-000002: content does not match its hash" in out
        report = _report(db_url)
        assert [b.number for b in report.breaks] == ["INV-2091-000002"]  # only the changed one: the links still hold
    finally:
        raw_update(db_url, target.id, gross_cents=target.gross_cents, net_cents=target.net_cents)
    assert verify(db_url)[0] == 0
    assert first.number == "INV-2091-000001"


def test_a_changed_line_or_a_recomputed_hash_is_found(db_url):
    account = new_account(db_url)
    target = issue(db_url, account, at(2092), "10.00", "5.00")
    follower = issue(db_url, account, at(2092, 1))
    lines = [dict(line) for line in target.lines]
    lines[1]["description"] = "Line 2 (corrected)"
    raw_update(db_url, target.id, lines=lines)
    try:
        assert verify(db_url)[0] == 1
        # Re-sealing the changed document does not help: the next one names the old hash.
        changed = invoice(db_url, target.id)
        raw_update(db_url, target.id, content_hash=document_hash(changed))
        code, out = verify(db_url)
        assert code == 1
        assert f"#{follower.chain_seq} {follower.number}: previous_hash does not match" in out
    finally:
        raw_update(db_url, target.id, lines=target.lines, content_hash=target.content_hash)
    assert verify(db_url)[0] == 0


def test_a_deleted_document_is_found(db_url):
    account = new_account(db_url)
    issue(db_url, account, at(2093))
    middle = issue(db_url, account, at(2093, 1))
    last = issue(db_url, account, at(2093, 2))

    row = raw_delete(db_url, middle.id)
    try:
        code, out = verify(db_url)
        assert code == 1
        assert f"first: #{last.chain_seq} INV-2093-000003: chain position #{middle.chain_seq} is missing" in out
        assert "number series INV-2093 has a gap: INV-2093-000002 missing" in out
    finally:
        raw_insert(db_url, row)
    assert verify(db_url)[0] == 0


def test_the_last_document_deleted_is_found_by_the_chain_head(db_url):
    account = new_account(db_url)
    issue(db_url, account, at(2094))
    last = issue(db_url, account, at(2094, 1))
    row = raw_delete(db_url, last.id)
    try:
        code, out = verify(db_url)
        assert code == 1
        assert "the last document(s) are missing" in out
        assert "INV-2094-000002 missing" in out
    finally:
        raw_insert(db_url, row)
    assert verify(db_url)[0] == 0


def test_concurrent_issuers_on_threads_never_fork_the_chain_or_skip_a_number(db_url):
    accounts = [new_account(db_url) for _ in range(6)]
    start = threading.Barrier(len(accounts))

    def issue_for(index: int) -> list[str]:
        start.wait()
        issued = []
        for k in range(5):
            doc = issue(db_url, accounts[index], at(2095, k, minutes=index))
            issued.append(doc.id)
            if k == 2:  # credit notes interleave with invoices on the same chain
                note, _ = credit(db_url, doc.id, at(2095, k, minutes=30 + index), (1, "1.00"))
                issued.append(note.id)
        return issued

    with ThreadPoolExecutor(len(accounts)) as pool:
        ids = [doc_id for batch in pool.map(issue_for, range(len(accounts))) for doc_id in batch]

    docs = chained(db_url, ids)
    assert len(docs) == len(ids) == 36
    assert numbers(db_url, "INV-2095-") == [f"INV-2095-{n:06d}" for n in range(1, 31)]
    assert numbers(db_url, "CN-2095-") == [f"CN-2095-{n:06d}" for n in range(1, 7)]
    assert len({d.chain_seq for d in docs}) == 36 and len({d.previous_hash for d in docs}) == 36
    code, out = verify(db_url)
    assert code == 0, out


def test_concurrent_issuers_in_separate_processes(db_url):
    accounts = [new_account(db_url) for _ in range(3)]
    context = multiprocessing.get_context("spawn")
    go, results = context.Event(), context.Queue()
    workers = [context.Process(target=issue_many, args=(db_url, account, 2096, index, 8, go, results)) for index, account in enumerate(accounts)]
    for worker in workers:
        worker.start()
    go.set()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(30)
    assert [error for _, _, error in outcomes] == [None] * 3
    ids = [doc_id for _, batch, _ in outcomes for doc_id in batch]
    assert len(ids) == 3 * 8
    assert numbers(db_url, "INV-2096-") == [f"INV-2096-{n:06d}" for n in range(1, 25)]
    docs = chained(db_url, ids)
    assert len({d.chain_seq for d in docs}) == 24
    code, out = verify(db_url)
    assert code == 0, out


def test_cli_command_is_registered_and_exits_non_zero_on_a_break(db_url, capsys):
    args = build_parser().parse_args(["verify-invoices", "--database-url", db_url])
    assert args.command == "verify-invoices"
    account = new_account(db_url)
    doc = issue(db_url, account, at(2097))
    raw_update(db_url, doc.id, currency="USD")
    try:
        try:
            args.func(args)
        except SystemExit as exit_:
            assert exit_.code == 1
        assert f"{doc.number}: content does not match its hash" in capsys.readouterr().out
    finally:
        raw_update(db_url, doc.id, currency="EUR")
    try:
        args.func(args)
    except SystemExit as exit_:
        assert exit_.code == 0


def test_numbers_outside_o2c_series_are_reported_not_broken(db_url):
    # e.g. invoices imported from an earlier system, whose numbers look like a series o2c does not keep
    doc = issue(db_url, new_account(db_url), at(2098))
    row = raw_row(db_url, doc.id)
    foreign = {**row, "id": f"legacy-{doc.id}", "number": "ZZ-2098-000007", "chain_seq": None, "previous_hash": None, "content_hash": None,
               "period_start": row["period_start"] + timedelta(days=1)}
    raw_insert(db_url, foreign)
    try:
        code, out = verify(db_url)
        assert code == 0, out
        assert "warning: ZZ-2098-000007 is not in a number series o2c keeps" in out
    finally:
        raw_delete(db_url, foreign["id"])


def _report(db_url: str):
    with session_scope(db_url) as session:
        return verify_documents(session)
