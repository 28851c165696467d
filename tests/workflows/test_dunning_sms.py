"""SMS notices: the GSM text and its parts (domain.sms_text), the HTTP gateway client (adapters/notify/sms.py)
against the SMS sink running as a real process (`python -m adapters.notify.sms_sink`), and a dunning level
with an SMS notice end to end (the workflow under time skipping, the real activities on `db_url`)."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
from temporalio.worker import Worker

from adapters.notify.email import NotificationRejected, NotificationUnavailable
from adapters.notify.sms import HttpSmsSender
from domain.dunning_policy import DunningPolicy
from domain.dunning_timeline import DunningInput
from domain.sms_text import gsm_length, gsm_text, sms_parts
from o2c_cli.stack import wait_for_port
from persistence.tables import Notification
from tests.support.billing import advance_to, eventually, events, open_account, pin_clock
from tests.support.dunning import dunning_activities
from tests.support.listener_app import free_port
from tests.workflows.test_dunning_workflow import DECLINING_CARD, add_invoice, days_after, replays, rows
from worker import activities_of
from workflows.dunning import DunningWorkflow

DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def sms_sink() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "adapters.notify.sms_sink", "--port", str(port)])
    try:
        wait_for_port("127.0.0.1", port, 30, "sms-sink", process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def sink_messages(url: str, to: str | None = None) -> list[dict]:
    return httpx.get(f"{url}/messages", params={"to": to} if to else None).json()


# --- the text ---------------------------------------------------------------------------------------------------


def test_sms_text_is_gsm_and_long_texts_are_split_into_parts_of_153():
    assert gsm_text("„Mahnung“ – fällig… 5 €") == '"Mahnung" - fällig... 5 €'
    assert gsm_text("Zahlung ✓ 🙂") == "Zahlung ? ?"  # never a switch to UCS-2
    assert gsm_length("100 €") == 6  # € is in the extension table: two characters
    assert sms_parts("kurz") == ["kurz"]
    assert sms_parts("x" * 160) == ["x" * 160]
    long = " ".join(["Rechnung"] * 50)  # 449 characters
    parts = sms_parts(long)
    assert len(parts) == 3 and all(gsm_length(p) <= 153 for p in parts)
    assert " ".join(parts) == long  # cut at spaces, nothing lost
    euros = sms_parts("€" * 100)  # 200 units: parts of at most 153 units, i.e. 76 euro signs
    assert [len(p) for p in euros] == [76, 24]


# --- the gateway client against the sink process ------------------------------------------------------------------


async def test_the_gateway_client_is_idempotent_and_tells_refusal_from_outage(sms_sink):
    sender = HttpSmsSender(sms_sink)
    to = "+4915112300001"
    first = await sender.send(to=to, text="Ihre Rechnung ist offen.", idempotency_key="k-1")
    again = await sender.send(to=to, text="Ihre Rechnung ist offen.", idempotency_key="k-1")
    assert first == again and [m["text"] for m in sink_messages(sms_sink, to)] == ["Ihre Rechnung ist offen."]

    ids = await sender.send(to=to, text=" ".join(["Mahnung"] * 40), idempotency_key="k-2")  # 319 characters: 3 parts
    stored = [m for m in sink_messages(sms_sink, to) if m["idempotencyKey"].startswith("k-2")]
    assert [m["idempotencyKey"] for m in stored] == ["k-2:part-1/3", "k-2:part-2/3", "k-2:part-3/3"]
    assert ids.split(",") == [m["id"] for m in stored]

    with pytest.raises(NotificationRejected):
        await sender.send(to="not-a-number", text="x", idempotency_key="k-3")
    with pytest.raises(NotificationUnavailable):
        await HttpSmsSender(f"http://127.0.0.1:{free_port()}").send(to=to, text="x", idempotency_key="k-4")


# --- a dunning level with an SMS notice -----------------------------------------------------------------------------

SMS_POLICY = {
    "segment": "sms-test", "description": "a reminder by e-mail and SMS", "customer_type": "consumer", "country": "DE",
    "levels": [{"name": "zahlungserinnerung", "after": "P5D", "when": {"min_overdue": "0.01"}, "actions": [
        {"type": "notice", "channel": "email", "template": "zahlungserinnerung"},
        {"type": "notice", "channel": "sms", "template": "zahlungserinnerung-sms"}]}],
}


async def test_an_sms_notice_goes_to_every_line_of_the_account_once(make_settings, db_url, oss_http, ts_env, mail_sink, sms_sink):
    due = await pin_clock(ts_env, 12, 1)
    settings = make_settings(sms_url=sms_sink)
    account = await open_account(db_url, oss_http, ["mobile-s", "mobile-l"], activated_at=due - 60 * DAY, payment_method=DECLINING_CARD)
    invoice_id = add_invoice(db_url, account, gross_cents=4000, due_at=due)
    activities = dunning_activities(settings, sms=HttpSmsSender(settings.sms_url))
    inp = DunningInput(billing_account_id=account.account_id, customer_id=account.customer_id, invoice_id=invoice_id, due_at=due,
                       segment="sms-test", policy=DunningPolicy.model_validate(SMS_POLICY))
    with ThreadPoolExecutor(max_workers=8) as executor:
        async with Worker(ts_env.client, task_queue=settings.task_queue, workflows=[DunningWorkflow], activities=activities_of(activities),
                          activity_executor=executor, graceful_shutdown_timeout=timedelta(seconds=5)):
            handle = await ts_env.client.start_workflow(DunningWorkflow.run, inp, id=inp.episode_id, task_queue=settings.task_queue)
            await advance_to(ts_env, due + 6 * DAY)
            numbers = sorted(f"+{m}" for m in account.msisdns)
            texts = await eventually(lambda: [m for n in numbers for m in sink_messages(sms_sink, n)])
            await handle.terminate(reason="test finished")
        await replays(handle)

    assert sorted(m["to"] for m in texts) == numbers
    for message in texts:
        assert len(message["text"]) <= 160 and message["text"] == gsm_text(message["text"])
        assert f"{settings.seller_name}: Ihre Rechnung" in message["text"] and "40.00 EUR" in message["text"] and "fällig am 01.12.2026" in message["text"]
        assert message["idempotencyKey"] == f"dunning:{inp.episode_id}:level:zahlungserinnerung:notice-1:{message['to']}"
    sms_row = [n for n in rows(db_url, Notification, Notification.billing_account_id == account.account_id) if n.channel == "sms"]
    assert [(n.recipient, days_after(due, n.sent_at)) for n in sms_row] == [(", ".join(numbers), 5)]
    assert sorted(sms_row[0].message_id.split(",")) == sorted(m["id"] for m in texts)
    story = [e.message for e in events(db_url, account.account_id) if e.kind == "dunning.notice"]
    assert len(story) == 2 and any("sms notice" in m for m in story)
