from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from domain.dunning import (
    DunningPolicy,
    DunningState,
    DunningStep,
    dunning_level,
    mark_step_done,
    next_due_step,
    pause,
    restore_needed,
    resume,
    settle,
    start_episode,
    update_overdue,
)

DUE = datetime(2026, 3, 1, 12, tzinfo=UTC)


def step(name: str, days: int, action: str, min_overdue: str = "0") -> DunningStep:
    return DunningStep(name=name, after=timedelta(days=days), action=action, min_overdue=Decimal(min_overdue))


POLICY = DunningPolicy(
    name="standard",
    steps=[
        step("reminder", 3, "reminder"),
        step("retry_payment", 7, "retry_payment"),
        step("suspension_notice", 7, "reminder"),
        step("suspend", 21, "suspend", "100.00"),
    ],
)


def run_all(policy: DunningPolicy, state: DunningState) -> tuple[list[tuple[str, datetime]], DunningState]:
    """Execute due steps until none is left, recording (name, due instant)."""
    executed = []
    while (due := next_due_step(policy, state)) is not None:
        next_step, at = due
        executed.append((next_step.name, at))
        state = mark_step_done(state, next_step)
    return executed, state


def test_no_episode_means_nothing_to_do():
    assert next_due_step(POLICY, DunningState()) is None
    assert dunning_level(DunningState()) == "none"


def test_steps_run_in_order_at_due_date_plus_offset():
    state = start_episode(DunningState(), "inv-1", DUE, Decimal("150.00"))
    executed, state = run_all(POLICY, state)
    assert executed == [
        ("reminder", DUE + timedelta(days=3)),
        ("retry_payment", DUE + timedelta(days=7)),
        ("suspension_notice", DUE + timedelta(days=7)),
        ("suspend", DUE + timedelta(days=21)),
    ]
    assert state.suspended
    assert dunning_level(state) == "suspend"


def test_suspension_is_skipped_below_min_overdue():
    state = start_episode(DunningState(), "inv-1", DUE, Decimal("99.99"))
    executed, state = run_all(POLICY, state)
    assert [name for name, _ in executed] == ["reminder", "retry_payment", "suspension_notice"]
    assert not state.suspended
    assert dunning_level(state) == "suspension_notice"


def test_a_skipped_step_does_not_block_later_steps():
    policy = DunningPolicy(
        name="with-termination",
        steps=[*POLICY.steps, step("terminate", 60, "terminate")],
    )
    state = start_episode(DunningState(), "inv-1", DUE, Decimal("50"))
    for _ in range(3):
        next_step, _ = next_due_step(policy, state)
        state = mark_step_done(state, next_step)
    next_step, at = next_due_step(policy, state)
    assert next_step.name == "terminate"
    assert at == DUE + timedelta(days=60)


def test_partial_payment_below_threshold_prevents_suspension():
    state = start_episode(DunningState(), "inv-1", DUE, Decimal("150.00"))
    for _ in range(3):
        next_step, _ = next_due_step(POLICY, state)
        state = mark_step_done(state, next_step)
    assert next_due_step(POLICY, state)[0].name == "suspend"
    state = update_overdue(state, Decimal("80.00"))
    assert next_due_step(POLICY, state) is None


def test_pause_holds_dunning_and_resume_continues_where_it_stopped():
    state = start_episode(DunningState(), "inv-1", DUE, Decimal("150.00"))
    state = mark_step_done(state, POLICY.steps[0])
    paused = pause(state)
    assert next_due_step(POLICY, paused) is None
    resumed = resume(paused)
    assert next_due_step(POLICY, resumed)[0].name == "retry_payment"


def test_nothing_overdue_means_nothing_to_do():
    state = start_episode(DunningState(), "inv-1", DUE, Decimal("0"))
    assert next_due_step(POLICY, state) is None


def test_mark_step_done_is_idempotent_and_pure():
    state = start_episode(DunningState(), "inv-1", DUE, Decimal("150.00"))
    once = mark_step_done(state, POLICY.steps[0])
    twice = mark_step_done(once, POLICY.steps[0])
    assert twice.steps_done == ["reminder"]
    assert state.steps_done == []


def test_settle_after_suspension_asks_for_restore():
    state = start_episode(DunningState(), "inv-1", DUE, Decimal("150.00"))
    _, state = run_all(POLICY, state)
    settled, restore = settle(state)
    assert restore is True
    assert settled == DunningState()
    assert dunning_level(settled) == "none"
    assert next_due_step(POLICY, settled) is None


def test_settle_without_suspension_needs_no_restore():
    state = start_episode(DunningState(), "inv-1", DUE, Decimal("150.00"))
    state = mark_step_done(pause(state), POLICY.steps[0])
    settled, restore = settle(state)
    assert restore is False
    assert not settled.paused
    assert settled.invoice_id is None and settled.steps_done == []


def test_suspension_finishing_after_settlement_is_reported_for_restore():
    # A payment can arrive while the suspend activity is still running.
    state = start_episode(DunningState(), "inv-1", DUE, Decimal("150.00"))
    settled, _ = settle(state)
    after = mark_step_done(settled, POLICY.steps[3])
    assert after.suspended
    assert after.steps_done == []
    assert restore_needed(after)
    assert not restore_needed(start_episode(after, "inv-2", DUE, Decimal("150.00")))


def test_new_episode_resets_steps_but_keeps_account_flags():
    state = start_episode(DunningState(), "inv-1", DUE, Decimal("150.00"))
    _, state = run_all(POLICY, state)
    state = pause(state)
    later_due = DUE + timedelta(days=31)
    fresh = start_episode(state, "inv-2", later_due, Decimal("300.00"))
    assert (fresh.invoice_id, fresh.due_at, fresh.overdue_amount) == ("inv-2", later_due, Decimal("300.00"))
    assert fresh.steps_done == []
    assert fresh.suspended and fresh.paused


def test_due_at_is_normalised_to_utc_and_must_be_aware():
    local_due = datetime(2026, 3, 1, 13, tzinfo=ZoneInfo("Europe/Berlin"))
    state = start_episode(DunningState(), "inv-1", local_due, Decimal("10"))
    assert state.due_at == DUE and state.due_at.tzinfo is UTC
    with pytest.raises(ValueError, match="timezone-aware"):
        start_episode(DunningState(), "inv-1", datetime(2026, 3, 1), Decimal("10"))


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([step("reminder", 7, "reminder"), step("retry", 3, "retry_payment")], "sorted"),
        ([step("reminder", 3, "reminder"), step("reminder", 7, "reminder")], "unique"),
        ([step("retry", 3, "retry_payment"), step("suspend", 21, "suspend")], "reminder"),
        ([step("suspend", 3, "suspend"), step("reminder", 3, "reminder")], "reminder"),
        (
            [step("reminder", 3, "reminder"), step("suspend", 21, "suspend"), step("suspend_again", 30, "suspend")],
            "at most once",
        ),
    ],
)
def test_invalid_policies_are_rejected(steps, message):
    with pytest.raises(ValidationError, match=message):
        DunningPolicy(name="bad", steps=steps)


def test_negative_offsets_and_thresholds_are_rejected():
    with pytest.raises(ValidationError, match="negative"):
        DunningStep(name="early", after=timedelta(days=-1), action="reminder")
    with pytest.raises(ValidationError):
        DunningStep(name="x", after=timedelta(0), action="reminder", min_overdue=Decimal("-1"))
    with pytest.raises(ValidationError):
        DunningStep(name="x", after=timedelta(0), action="invoice_again")


def test_state_and_policy_survive_a_json_round_trip():
    # Workflows carry these models through Temporal's JSON payloads.
    state = mark_step_done(start_episode(DunningState(), "inv-1", DUE, Decimal("150.00")), POLICY.steps[0])
    assert DunningState.model_validate_json(state.model_dump_json()) == state
    assert DunningPolicy.model_validate_json(POLICY.model_dump_json()) == POLICY
