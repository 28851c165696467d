"""Pure rules: where refunded money comes from, and forward-only refund and dispute statuses."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from domain.allocation import OpenItem, reverse
from domain.payments import advance_dispute_status, advance_refund_status


def item(invoice_id: str, day: int, cents: int) -> OpenItem:
    return OpenItem(invoice_id=invoice_id, due_at=datetime(2026, 3, day, tzinfo=timezone.utc), open_cents=cents)


def test_credit_goes_first_then_the_latest_invoice() -> None:
    r = reverse(1500, 400, [item("old", 1, 1000), item("new", 20, 800)])
    assert r.credit_cents == 400
    assert [(a.invoice_id, a.amount_cents) for a in r.invoices] == [("new", 800), ("old", 300)]
    assert r.total_cents == 1500


def test_a_refund_within_the_credit_reopens_nothing() -> None:
    r = reverse(300, 400, [item("old", 1, 1000)])
    assert (r.credit_cents, r.invoices) == (300, [])


def test_ties_on_the_due_date_go_by_invoice_id_whatever_the_order_read() -> None:
    a = reverse(100, 0, [item("a", 1, 100), item("b", 1, 100)])
    b = reverse(100, 0, [item("b", 1, 100), item("a", 1, 100)])
    assert a == b and a.invoices[0].invoice_id == "b"


@pytest.mark.parametrize("amount", [0, -1, 1401])
def test_nothing_negative_and_never_more_than_is_there(amount: int) -> None:
    with pytest.raises(ValueError):
        reverse(amount, 400, [item("old", 1, 1000)])


def test_refund_status_only_moves_forward() -> None:
    assert advance_refund_status(None, "pending") == "pending"
    assert advance_refund_status("pending", "succeeded") == "succeeded"
    assert advance_refund_status("pending", "failed") == "failed"
    assert advance_refund_status("succeeded", "pending") is None
    assert advance_refund_status("failed", "succeeded") is None  # a failed refund stays failed
    assert advance_refund_status("pending", "pending") is None
    with pytest.raises(ValueError):
        advance_refund_status("pending", "paid")


def test_dispute_status_only_moves_forward() -> None:
    assert advance_dispute_status(None, "needs_response") == "needs_response"
    assert advance_dispute_status("needs_response", "under_review") == "under_review"
    assert advance_dispute_status("under_review", "won") == "won"
    assert advance_dispute_status("won", "needs_response") is None  # a late `created` after `closed`
    assert advance_dispute_status("lost", "won") is None  # closed is closed
    assert advance_dispute_status("under_review", "needs_response") is None
    assert advance_dispute_status("needs_response", "something_new") is None
