"""Termination for arrears with the billing-account workflow running (the whole worker of worker.py): the episode
terminates the lines at the kuendigung level (day 70 of consumer-de) and the account's workflow issues the final
bill it was asked for, up to the termination. Real durations under time skipping, the OSS simulator over HTTP."""
from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from tests.support.billing import BERLIN, DECLINING_CARD, advance_to, eventually, first_invoice, invoices, open_account, pin_clock, products, start_billing


async def test_termination_for_arrears_ends_the_lines_and_the_account_issues_the_final_bill(running_worker, make_settings, db_url, oss_http, ts_env):
    start = await pin_clock(ts_env, 12, 1)
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-l"] * 2, activated_at=start, bill_cycle_day=15, payment_method=DECLINING_CARD)
    async with running_worker(settings) as client:
        await start_billing(client, settings.task_queue, account)
        first = await first_invoice(ts_env, db_url, account, start.year)
        await advance_to(ts_env, first.due_at + timedelta(days=71))
        final = await eventually(lambda: [i for i in invoices(db_url, account.account_id) if i.kind == "on_demand"], timeout_s=30)

    lines = products(db_url, account.account_id)
    terminated_at = {p.termination_date for p in lines}
    assert {p.status for p in lines} == {"terminated"} and len(terminated_at) == 1
    (terminated,) = terminated_at
    assert first.due_at + timedelta(days=70) <= terminated < first.due_at + timedelta(days=70, hours=1)
    for product in lines:
        assert (await oss_http.get(f"/sim/services/{product.msisdn}")).json()["state"] == "terminated"
    # The final bill: one, issued right after the termination, with its number. The monthly fees were billed in
    # advance: proration stops at the termination, so the final bill credits each line's unused days from then on.
    assert len(final) == 1 and final[0].number.startswith("INV-")
    assert terminated <= final[0].issued_at < terminated + timedelta(hours=1)
    local_day = terminated.astimezone(BERLIN).date()
    recurring = [line for line in final[0].lines if line["kind"] == "recurring"]
    assert sorted(line["product_id"] for line in recurring) == sorted(p.id for p in lines)
    for line in recurring:
        assert Decimal(line["net_amount"]) < 0 and "not used" in line["description"]
        assert date.fromisoformat(line["period_start"]) == local_day
