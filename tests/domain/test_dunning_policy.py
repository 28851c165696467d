"""Dunning policies as data: the shipped policies, the loader's errors (file, level, field), the §61 TKG
checks, and the pure timeline / episode rules the DunningWorkflow applies."""
from __future__ import annotations

import shutil
import textwrap
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from config.dunning_loader import DEFAULT_DUNNING_DIR, DunningConfigError, load_dunning_config
from domain.dunning_timeline import (
    DunningBalance,
    DunningInput,
    PauseCommand,
    announced_barring,
    barring_gate,
    defer,
    dunning_timeline,
    entry_at,
    level_applies,
    lift_for_low_arrears,
    mark_done,
    next_entry,
    pause,
    resume,
    start_state,
    status_view,
)

DUE = datetime(2027, 3, 1, 11, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def shipped():
    return load_dunning_config()


def balance(overdue: str, invoices: int = 1) -> DunningBalance:
    cents = int(Decimal(overdue) * 100)
    return DunningBalance(as_of=DUE, overdue_cents=cents, open_cents=cents, overdue_invoice_ids=[f"inv-{i}" for i in range(invoices)])


def state_for(policy):
    return start_state(DunningInput(billing_account_id="ba-1", customer_id="c-1", invoice_id="inv-1", due_at=DUE, segment=policy.segment, policy=policy))


# --- the shipped policies -------------------------------------------------------------------------------


def test_shipped_policies_load_and_consumer_de_is_the_default(shipped):
    assert set(shipped.policies) >= {"consumer-de", "business-de"}
    assert shipped.policy(None).segment == "consumer-de"
    consumer = shipped.policy("consumer-de")
    assert consumer.customer_type == "consumer" and consumer.barring_protection.min_overdue == Decimal("100.00")
    assert consumer.barring_protection.notice_period == timedelta(days=14)
    with pytest.raises(KeyError, match="no dunning policy for segment 'gold'"):
        shipped.policy("gold")


def test_consumer_de_timeline_interleaves_retries_and_levels_retry_first(shipped):
    timeline = dunning_timeline(shipped.policy("consumer-de"), DUE)
    assert [(e.key, (e.at - DUE) / DAY) for e in timeline] == [
        ("retry-1", 3), ("level:zahlungserinnerung", 5), ("retry-2", 7), ("retry-3", 14), ("level:mahnung", 14),
        ("level:sperrankuendigung", 21), ("level:sperre-abgehend", 35), ("level:vollsperre", 42), ("level:kuendigung", 70), ("level:inkasso", 90),
    ]
    assert [e.attempt for e in timeline if e.kind == "payment_retry"] == [1, 2, 3]


def test_consumer_de_bars_only_from_100_eur_and_two_weeks_after_the_written_notice(shipped):
    policy = shipped.policy("consumer-de")
    notice = next(level for level in policy.levels if level.announces_barring)
    for level in (level for level in policy.levels if level.bars):
        assert level.when.min_overdue >= Decimal("100.00")
        assert level.after - notice.after >= timedelta(days=14)
    # The notice names the barring date, in writing.
    assert "barring_date" in shipped.template(notice.actions_of("notice")[0].template).placeholders


def test_templates_render_every_placeholder(shipped):
    values = {name: f"<{name}>" for name in ("customer_name", "account_id", "invoice_numbers", "due_date", "overdue_amount", "unpaid_invoices",
                                             "late_fee", "total_fees", "barring_date", "barring_scope", "level", "seller_name", "currency")}
    subject, body = shipped.template("sperrankuendigung").render(values)
    assert subject == "Ankündigung der Sperre Ihres Anschlusses: Rechnung <invoice_numbers>"
    assert "ab dem <barring_date>" in body and "§ 61" in body and "{" not in body


# --- loader errors -------------------------------------------------------------------------------------------

CONSUMER = """
segment: {segment}
description: test policy
customer_type: consumer
country: DE
barring_protection: {{min_overdue: "{floor}", notice_period: {period}}}
payment_retries: [P3D, P7D]
levels:
  - name: erinnerung
    after: P5D
    actions:
      - {{type: notice, channel: email, template: zahlungserinnerung}}
  - name: ankuendigung
    after: {notice_after}
    when: {{min_overdue: "{notice_min}"}}
    actions:
      - {{type: late_fee, amount: {fee}}}
      - {{type: notice, channel: {notice_channel}, template: {notice_template}, announces_barring: true}}
  - name: sperre
    after: {bar_after}
    when: {{min_overdue: "{bar_min}"}}
    actions:
      - {{type: {bar_type}, scope: full}}
"""
GOOD = dict(segment="consumer-de", floor="100.00", period="P14D", notice_after="P21D", notice_min="100.00", fee='"2.50"', notice_channel="email",
            notice_template="sperrankuendigung", bar_after="P35D", bar_min="100.00", bar_type="bar")


def write_config(tmp_path: Path, text: str | None = None, name: str = "consumer-de.yaml", **changes) -> Path:
    directory = tmp_path / "dunning"
    if not directory.exists():
        shutil.copytree(DEFAULT_DUNNING_DIR / "templates", directory / "templates")
    body = text if text is not None else CONSUMER.format(**{**GOOD, **changes})
    (directory / name).write_text(textwrap.dedent(body), encoding="utf-8")
    return directory


def load_error(directory: Path) -> str:
    with pytest.raises(DunningConfigError) as caught:
        load_dunning_config(directory)
    return str(caught.value)


def test_the_test_policy_itself_is_valid(tmp_path):
    policy = load_dunning_config(write_config(tmp_path)).policy("consumer-de")
    assert [level.name for level in policy.levels] == ["erinnerung", "ankuendigung", "sperre"]
    assert policy.levels[1].actions[0].amount == Decimal("2.50")


def test_consumer_barring_less_than_two_weeks_after_the_notice_is_refused(tmp_path):
    message = load_error(write_config(tmp_path, bar_after="P30D"))
    assert "consumer-de.yaml" in message
    assert "level 'sperre' bars at P30D" in message and "at least P14D before" in message and "P16D or earlier" in message


def test_consumer_barring_below_100_eur_is_refused(tmp_path):
    message = load_error(write_config(tmp_path, bar_min="50.00"))
    assert "consumer-de.yaml" in message and "level 'sperre' bars from 50.00 EUR overdue" in message


def test_consumer_barring_protection_weaker_than_tkg61_is_refused(tmp_path):
    assert "§61 TKG allows barring a consumer only from 100.00 EUR" in load_error(write_config(tmp_path, floor="80.00", bar_min="100.00"))
    assert "at least two weeks (P14D)" in load_error(write_config(tmp_path, period="P10D"))


def test_consumer_policy_that_bars_without_barring_protection_is_refused(tmp_path):
    text = CONSUMER.format(**GOOD).replace('barring_protection: {min_overdue: "100.00", notice_period: P14D}\n', "")
    assert "must set barring_protection" in load_error(write_config(tmp_path, text))


def test_barring_notice_must_be_written_and_reach_everyone_the_barring_reaches(tmp_path):
    assert "must be announced in writing (channel email), not 'sms'" in load_error(write_config(tmp_path, notice_channel="sms"))
    # A notice sent only from 150 EUR would leave a 120 EUR debtor barred without notice.
    message = load_error(write_config(tmp_path, notice_min="150.00"))
    assert "no earlier level announces the barring" in message


def test_a_notice_threatening_barring_below_the_floor_is_refused(tmp_path):
    assert "would threaten what may not happen" in load_error(write_config(tmp_path, notice_min="20.00"))


def test_field_errors_name_file_level_and_field(tmp_path):
    message = load_error(write_config(tmp_path, fee="2.50"))  # unquoted: a YAML float
    assert message.startswith(str(tmp_path / "dunning" / "consumer-de.yaml"))
    assert "level 2 ('ankuendigung'): field 'actions[0].amount'" in message and "exact decimal expected, got float" in message
    message = load_error(write_config(tmp_path, bar_type="suspend"))
    assert "level 3 ('sperre'): field 'actions[0]'" in message and "'notice', 'late_fee', 'retry_payment', 'bar'" in message
    message = load_error(write_config(tmp_path, bar_after="P1M"))
    assert "level 3 ('sperre'): field 'after'" in message and "months and years are not allowed" in message
    message = load_error(write_config(tmp_path, fee='"2.505"'))
    assert "level 2 ('ankuendigung'): field 'actions[0].amount'" in message and "whole number of cents" in message


def test_retry_schedule_errors(tmp_path):
    text = CONSUMER.format(**GOOD).replace("payment_retries: [P3D, P7D]", "payment_retries: [P7D, P3D]")
    assert "field 'payment_retries': payment retries must be in strictly increasing order" in load_error(write_config(tmp_path, text))
    text = CONSUMER.format(**GOOD).replace("payment_retries: [P3D, P7D]", "payment_retries: [3]")
    assert "field 'payment_retries[0]'" in load_error(write_config(tmp_path, text))


def test_template_errors(tmp_path):
    assert "field 'actions[1].template': no template 'sperre-brief'" in load_error(write_config(tmp_path, notice_template="sperre-brief"))
    directory = write_config(tmp_path, notice_template="mahnung")
    assert "announces a barring and must name its date ({barring_date})" in load_error(directory)
    (directory / "templates" / "kaputt.txt").write_text("Subject: Hallo {kunde}\n\nText\n", encoding="utf-8")
    message = load_error(directory)
    assert "kaputt.txt: line 1: unknown placeholder {kunde}" in message


def test_file_level_errors(tmp_path):
    assert "field 'segment' is 'consumer-de' but the file name says 'consumer-at'" in load_error(write_config(tmp_path, name="consumer-at.yaml"))
    shutil.rmtree(tmp_path / "dunning")
    assert "not valid YAML" in load_error(write_config(tmp_path, "levels: [\n"))
    shutil.rmtree(tmp_path / "dunning")
    directory = write_config(tmp_path, name="business-de.yaml", text=CONSUMER.format(**{**GOOD, "segment": "business-de"}))
    assert "the default segment 'consumer-de' has no policy file" in load_error(directory)


def test_ladder_shape_errors(tmp_path):
    text = CONSUMER.format(**GOOD).replace("after: P5D", "after: P40D")
    assert "levels must be sorted by 'after'" in load_error(write_config(tmp_path, text))
    text = CONSUMER.format(**GOOD).replace("      - {type: notice, channel: email, template: zahlungserinnerung}",
                                           "      - {type: collections}")
    assert "ends the episode (collections / write-off) and must be the last level" in load_error(write_config(tmp_path, text))


def test_a_business_policy_is_not_bound_by_tkg61(tmp_path):
    text = CONSUMER.format(**{**GOOD, "segment": "business-de", "period": "P7D", "bar_after": "P28D"}).replace("consumer\n", "business\n")
    directory = write_config(tmp_path)
    write_config(tmp_path, text, name="business-de.yaml")
    business = load_dunning_config(directory).policy("business-de")
    assert business.levels[-1].after == timedelta(days=28)


# --- the episode rules ---------------------------------------------------------------------------------------


def test_pause_moves_every_later_step_by_the_time_paused(shipped):
    policy = shipped.policy("consumer-de")
    timeline = dunning_timeline(policy, DUE)
    state = state_for(policy)
    for entry in timeline[:3]:  # retry-1, reminder, retry-2 done
        state = mark_done(state, entry)
    upcoming = next_entry(timeline, state)
    assert upcoming.key == "retry-3" and entry_at(upcoming, state) == DUE + 14 * DAY
    command = PauseCommand(command_id="c1", actor="support:abc", reason="promised", kind="promise_to_pay", until=DUE + 20 * DAY)
    state = pause(state, command, DUE + 10 * DAY)
    view = status_view(timeline, state)
    assert (view.state, view.next_step, view.next_step_at, view.paused_until) == ("paused", "payment retry 3", DUE + 24 * DAY, DUE + 20 * DAY)
    state = resume(state, DUE + 20 * DAY)
    assert state.shift == 10 * DAY and entry_at(upcoming, state) == DUE + 24 * DAY
    assert status_view(timeline, state).state == "active"
    # A dispute without an end date: the next step waits for staff.
    state = pause(state, PauseCommand(command_id="c2", actor="support:abc", reason="dispute", kind="dispute"), DUE + 21 * DAY)
    assert status_view(timeline, state).next_step_at is None


def test_barring_gate_follows_tkg61_at_run_time(shipped):
    policy = shipped.policy("consumer-de")
    state = state_for(policy)
    now = DUE + 35 * DAY
    assert barring_gate(policy, state, balance("99.99"), now).verdict == "skip"
    first = barring_gate(policy, state, balance("150.00"), now)
    assert (first.verdict, first.until) == ("notice_first", now + 14 * DAY)
    state = state.model_copy(update={"barring_notice_at": now - 10 * DAY})
    waiting = barring_gate(policy, state, balance("150.00"), now)
    assert (waiting.verdict, waiting.until) == ("wait", now + 4 * DAY)
    state = state.model_copy(update={"barring_notice_at": now - 14 * DAY})
    assert barring_gate(policy, state, balance("150.00"), now).verdict == "bar"


def test_deferring_a_barring_moves_it_and_everything_after_it(shipped):
    policy = shipped.policy("consumer-de")
    timeline = dunning_timeline(policy, DUE)
    state = state_for(policy)
    bar = next(e for e in timeline if e.key == "level:sperre-abgehend")
    state = defer(state, bar, DUE + 40 * DAY)
    assert entry_at(bar, state) == DUE + 40 * DAY
    assert entry_at(timeline[-1], state) == DUE + 95 * DAY  # collections keeps its distance
    assert defer(state, bar, DUE + 39 * DAY) == state  # never earlier


def test_the_barring_notice_names_the_next_barring_not_sooner_than_the_notice_period(shipped):
    policy = shipped.policy("consumer-de")
    timeline = dunning_timeline(policy, DUE)
    state = state_for(policy)
    notice = next(e for e in timeline if e.key == "level:sperrankuendigung")
    assert announced_barring(policy, timeline, state, notice, DUE + 21 * DAY) == (DUE + 35 * DAY, "outgoing")
    # Sent late (e.g. after a pause), the date is still at least two weeks away.
    assert announced_barring(policy, timeline, state, notice, DUE + 30 * DAY) == (DUE + 44 * DAY, "outgoing")


def test_conditions_and_lifting_for_low_arrears(shipped):
    policy = shipped.policy("consumer-de")
    barring_level = policy.level("sperre-abgehend")
    assert level_applies(barring_level, balance("100.00")) and not level_applies(barring_level, balance("99.99"))
    assert not level_applies(policy.level("zahlungserinnerung"), balance("0"))
    state = state_for(policy).model_copy(update={"barred": "outgoing"})
    assert lift_for_low_arrears(policy, state, balance("60.00"))
    assert not lift_for_low_arrears(policy, state, balance("100.00"))
