"""The ordering rule for payment states reported out of order (webhooks, replays): pure domain."""
from __future__ import annotations

import itertools
from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.payments import PAYMENT_STATUS_RANK, PaymentStatus, advance_payment_status

STATUSES = list(get_args(PaymentStatus))


def test_every_status_has_a_rank() -> None:
    assert set(PAYMENT_STATUS_RANK) == set(STATUSES)


@pytest.mark.parametrize(
    "current, observed, expected",
    [
        (None, "processing", "processing"),  # first word on a payment is taken as it is
        (None, "succeeded", "succeeded"),
        ("unknown", "processing", "processing"),
        ("unknown", "declined", "declined"),
        ("requires_action", "processing", "processing"),  # the customer authenticated
        ("requires_action", "succeeded", "succeeded"),
        ("processing", "succeeded", "succeeded"),
        ("processing", "declined", "declined"),  # the SEPA debit bounced
        ("requires_action", "canceled", "canceled"),
        ("declined", "succeeded", "succeeded"),  # re-confirmed on-session: the money did arrive
        ("canceled", "succeeded", "succeeded"),
    ],
)
def test_forward_moves(current, observed, expected) -> None:
    assert advance_payment_status(current, observed) == expected


@pytest.mark.parametrize(
    "current, observed",
    [
        ("succeeded", "processing"),  # the late `processing` webhook of a settled debit
        ("succeeded", "declined"),
        ("succeeded", "requires_action"),
        ("succeeded", "unknown"),
        ("declined", "processing"),  # a bounced debit stays bounced
        ("declined", "requires_action"),
        ("declined", "canceled"),
        ("canceled", "declined"),
        ("processing", "requires_action"),
        ("processing", "unknown"),
        ("processing", "processing"),  # nothing new
        ("succeeded", "succeeded"),
    ],
)
def test_stale_or_repeated_observations_are_ignored(current, observed) -> None:
    assert advance_payment_status(current, observed) is None


def test_unrecognised_stored_status_is_replaced_and_bad_input_refused() -> None:
    assert advance_payment_status("pending_legacy", "processing") == "processing"
    with pytest.raises(ValueError):
        advance_payment_status("processing", "settled")


def _replay(observations: list[str]) -> str | None:
    status = None
    for observed in observations:
        status = advance_payment_status(status, observed) or status
    return status


@given(st.lists(st.sampled_from(STATUSES), min_size=1, max_size=8))
def test_any_delivery_order_ends_in_the_most_advanced_state(observations: list[str]) -> None:
    top = max(PAYMENT_STATUS_RANK[s] for s in observations)
    leaders = {s for s in observations if PAYMENT_STATUS_RANK[s] == top}
    for order in itertools.islice(itertools.permutations(observations), 50):
        final = _replay(list(order))
        assert final in leaders
        if len(leaders) == 1:  # declined/canceled tie: the first final failure reported stays
            assert final == next(iter(leaders))


@given(st.sampled_from(STATUSES), st.sampled_from(STATUSES))
def test_a_move_never_lowers_the_rank_and_success_is_absorbing(current: str, observed: str) -> None:
    moved = advance_payment_status(current, observed)
    if moved is not None:
        assert PAYMENT_STATUS_RANK[moved] > PAYMENT_STATUS_RANK[current]
    if current == "succeeded":
        assert moved is None
