"""Histories of SEPA debits polled at the gateway, recorded on the code before the two polling loops were folded
into workflows/debit_polling.py (tests/workflows/record_debit_histories.py made them), replay on today's code:
the workflows still emit the same commands in the same order (activity types, timers, child workflows), and
every recorded activity result still decodes into today's result types. A command that differs makes the
Replayer raise a nondeterminism error, which fails the test."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.billing_account import BillingAccountWorkflow
from workflows.dunning import DunningWorkflow

HISTORIES = Path(__file__).parent / "histories"
# (history file, the activity that polls a debit, how many polls it recorded, how many of them failed)
RECORDED = [
    ("billing_account-debit-settled-run1.json", "check_payment", 0, 0),  # the charge that leaves the debit in processing
    ("billing_account-debit-settled-run2.json", "check_payment", 1, 0),
    ("billing_account-debit-overdue-run1.json", "check_payment", 0, 0),
    ("billing_account-debit-overdue-run2.json", "check_payment", 14, 1),
    ("dunning-debit-settled-run1.json", "dunning_check_payment", 1, 0),
    ("dunning-debit-overdue-run1.json", "dunning_check_payment", 14, 1),
]


def _polls(history: dict, activity_type: str) -> tuple[int, int]:
    """How many `activity_type` activities the history scheduled, and how many of those failed."""
    scheduled = {e["eventId"] for e in history["events"]
                 if e.get("activityTaskScheduledEventAttributes", {}).get("activityType", {}).get("name") == activity_type}
    failed = [e for e in history["events"] if e.get("activityTaskFailedEventAttributes", {}).get("scheduledEventId") in scheduled]
    return len(scheduled), len(failed)


@pytest.mark.parametrize(("name", "activity_type", "polls", "failures"), RECORDED, ids=[r[0].removesuffix(".json") for r in RECORDED])
async def test_a_recorded_debit_polling_history_replays_on_todays_code(name: str, activity_type: str, polls: int, failures: int):
    text = (HISTORIES / name).read_text()
    # The history really is the one described (the polls are in it), so a replay proves something about polling.
    assert _polls(json.loads(text), activity_type) == (polls, failures)
    history = WorkflowHistory.from_json(f"recorded-{name}", text)
    replayer = Replayer(workflows=[BillingAccountWorkflow, DunningWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure
