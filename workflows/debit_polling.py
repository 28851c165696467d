"""The polling fallback for SEPA debits in `processing`, shared by BillingAccountWorkflow (its own charges) and
DunningWorkflow (its payment retries): the webhook usually settles a debit; failing that, a workflow looks it up at
the gateway every DEBIT_POLL_INTERVAL until it settles or fails, and gives it up after DEBIT_POLL_LIMIT (its
invoice is then dunned like any other).

Replay: a look is exactly the one activity each workflow scheduled before this module existed (its own check
activity, by name, with the payment id), and whatever a workflow records about a failed look or a debit given up
it still records itself, at the same point. So the commands are the ones recorded in running workflows' histories
(tests/workflows/test_debit_polling_replay.py replays histories recorded before the two loops were folded here)."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import Enum
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from domain.dunning_timeline import DEBIT_POLL_INTERVAL, DEBIT_POLL_LIMIT

# Histories recorded before it gave a debit up on a failed look at the limit too.
PATCH_NO_GIVE_UP_ON_FAILED_LOOK = "debit-poll-no-give-up-on-failed-look"
# The statuses of a debit still in flight (a failed look counts as `unknown`): it is looked at again.
IN_FLIGHT = ("processing", "unknown", "requires_action")

__all__ = ["DEBIT_POLL_INTERVAL", "DEBIT_POLL_LIMIT", "IN_FLIGHT", "Poll", "activity_cause", "look_up_debit", "next_look"]


class Poll(Enum):
    WAIT = "wait"  # still in flight: look again at next_look(now)
    GIVEN_UP = "given_up"  # still in flight after DEBIT_POLL_LIMIT: no longer polled
    ENDED = "ended"  # settled or failed: the status says which


def activity_cause(error: ActivityError) -> str:
    """Why an activity failed, as a workflow tells it in the customer's story."""
    return error.cause.message if isinstance(error.cause, ApplicationError) else str(error)


def next_look(now: datetime) -> datetime:
    return now + DEBIT_POLL_INTERVAL


async def look_up_debit(check_payment: Callable[..., Any], payment_id: str, since: datetime, now: datetime, *, call: dict,
                        on_failure: Callable[[str], Awaitable[None]]) -> tuple[str, Poll]:
    """Looks a due debit up at the gateway by the workflow's `check_payment` activity (options `call`): its status and
    what follows from it. A look that fails is told to `on_failure` (with the cause) and counts as `unknown`."""
    try:
        status = (await workflow.execute_activity_method(check_payment, payment_id, **call)).status
        looked = True
    except ActivityError as error:
        await on_failure(activity_cause(error))
        status, looked = "unknown", False
    if status not in IN_FLIGHT:
        return status, Poll.ENDED
    if now - since < DEBIT_POLL_LIMIT:
        return status, Poll.WAIT
    # A debit is given up only on the gateway's own answer: a look that failed at the limit (a key being rotated)
    # would hand a debit that may still settle to dunning, whose retry could then charge twice.
    if not looked and workflow.patched(PATCH_NO_GIVE_UP_ON_FAILED_LOOK):
        return status, Poll.WAIT
    return status, Poll.GIVEN_UP
