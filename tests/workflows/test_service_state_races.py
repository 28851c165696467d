"""Staff suspension vs dunning and the hard spending cap: each party changes only its own bar under a manual
suspension, and the races between a staff suspend / restore and a barring running at the same moment. The
racing orders are played deterministically: the real activities, the real OSS simulator, and a barring run
at a chosen point of the staff change (right after its OSS order went through)."""
from __future__ import annotations

import uuid

import pytest

from activities.dunning import BarringRequest
from activities.service_state import ServiceStateRequest
from persistence.db import session_scope
from persistence.tables import ManualSuspension
from services.service_state import HoldReleased
from tests.support.billing import barring, open_account, products
from worker import build_activities

ARREARS_FULL = ("full", "barred for arrears (full)")
SPENDING = ("outgoing", "outgoing use barred: spending limit reached")


def _activity(settings, name: str):
    return next(a for a in build_activities(settings) if getattr(a, "__temporal_activity_definition").name == name)


def _hold(db_url, product_id):
    with session_scope(db_url) as session:
        row = session.get(ManualSuspension, product_id)
        return None if row is None else (row.underlying_barring, row.underlying_reason)


def _state(db_url, account_id, product_id):
    product = next(p for p in products(db_url, account_id) if p.id == product_id)
    return product.status, product.status_reason


def _staff(product_id: str, target: str, reason: str = "stolen phone") -> ServiceStateRequest:
    return ServiceStateRequest(product_id=product_id, target=target, reason=reason, request_id=f"req-{uuid.uuid4().hex[:8]}",
                               actor_kind="api_client", actor_id="support-test", actor_role="support", actor_name="Support")


def _dunning(account_id: str, scope: str, step: str) -> BarringRequest:
    return BarringRequest(episode_id="ep-r", billing_account_id=account_id, barring=scope, key=f"ep-r:{step}", reason=f"test {step}")


class _Then:
    """The OSS client of one activities object: after the first order whose externalId starts with `prefix` went
    through, runs `then` once (another party's barring, at exactly that point of the staff change)."""

    def __init__(self, real, prefix: str, then) -> None:  # noqa: ANN001
        self.real, self.prefix, self.then, self.done = real, prefix, then, False

    def __getattr__(self, name):  # noqa: ANN001
        return getattr(self.real, name)

    async def set_barring(self, *, external_id: str, msisdn: str, barring: str):  # noqa: ANN201
        ref = await self.real.set_barring(external_id=external_id, msisdn=msisdn, barring=barring)
        if not self.done and external_id.startswith(self.prefix):
            self.done = True
            await self.then()
        return ref


# --- each party changes only its own bar under a manual suspension ---------------------------------------

async def test_a_spending_cap_neither_weakens_nor_lifts_dunnings_bar_under_a_staff_suspension(make_settings, db_url, oss_http):
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"])
    product = account.products[0]
    dunning_bar, cap, apply = _activity(settings, "dunning_set_barring"), _activity(settings, "set_service_barring"), _activity(settings, "service_state_apply")
    await dunning_bar(_dunning(account.account_id, "full", "l3"))
    assert (await apply(_staff(product.product_id, "suspended"))).outcome == "applied"
    assert _hold(db_url, product.product_id) == ARREARS_FULL

    await cap(account.account_id, "outgoing", "spending:race-test", "spending")
    assert _hold(db_url, product.product_id) == ARREARS_FULL
    await cap(account.account_id, "none", "spending-lifted:race-test", "spending")  # the next cycle
    assert _hold(db_url, product.product_id) == ARREARS_FULL
    assert await barring(oss_http, product.msisdn) == "full"

    # Staff restore: the customer is still in arrears, so the line stays fully barred for them.
    restored = await apply(_staff(product.product_id, "active", "found"))
    assert (restored.status, restored.status_reason, restored.barring) == ("suspended", "barred for arrears (full)", "full")
    assert await barring(oss_http, product.msisdn) == "full"


async def test_dunnings_lift_leaves_the_spending_caps_bar_under_a_staff_suspension(make_settings, db_url, oss_http):
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"])
    product = account.products[0]
    dunning_bar, cap, apply = _activity(settings, "dunning_set_barring"), _activity(settings, "set_service_barring"), _activity(settings, "service_state_apply")
    await apply(_staff(product.product_id, "suspended"))
    await cap(account.account_id, "outgoing", "spending:race-test", "spending")
    assert _hold(db_url, product.product_id) == SPENDING
    await dunning_bar(_dunning(account.account_id, "none", "lift"))  # an episode ends: it lifts its own bar, not the cap's
    assert _hold(db_url, product.product_id) == SPENDING
    # Dunning's bar replaces the cap's (as on a free line); its lift then leaves none, and the cap re-bars after an episode.
    await dunning_bar(_dunning(account.account_id, "full", "l3"))
    assert _hold(db_url, product.product_id) == ARREARS_FULL
    restored = await apply(_staff(product.product_id, "active", "found"))
    assert (restored.status, restored.status_reason) == ("suspended", "barred for arrears (full)")


# --- races: a barring while a staff suspend / restore is under way ----------------------------------------

@pytest.mark.parametrize("party", ["dunning", "cap"])
async def test_a_barring_while_a_suspension_is_at_the_oss_leaves_the_line_fully_barred(make_settings, db_url, oss_http, party):
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"])
    product = account.products[0]
    apply = _activity(settings, "service_state_apply")
    dunning_bar, cap = _activity(settings, "dunning_set_barring"), _activity(settings, "set_service_barring")

    async def other_party():
        if party == "dunning":
            await dunning_bar(_dunning(account.account_id, "outgoing", "l2"))
        else:
            await cap(account.account_id, "outgoing", "spending:race-test", "spending")

    apply.__self__.oss = _Then(apply.__self__.oss, "manual:", other_party)
    result = await apply(_staff(product.product_id, "suspended"))

    assert result.outcome == "applied" and apply.__self__.oss.done
    assert await barring(oss_http, product.msisdn) == "full"  # the other party's outgoing did not weaken it
    assert _state(db_url, account.account_id, product.product_id) == ("suspended", "suspended by staff: stolen phone")
    assert _hold(db_url, product.product_id) == (("outgoing", "barred for arrears (outgoing)") if party == "dunning" else SPENDING)


async def test_a_dunning_bar_while_a_restoration_is_at_the_oss_is_sent_before_the_hold_goes(make_settings, db_url, oss_http):
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"])
    product = account.products[0]
    apply = _activity(settings, "service_state_apply")
    dunning_bar = _activity(settings, "dunning_set_barring")
    await apply(_staff(product.product_id, "suspended"))
    assert _hold(db_url, product.product_id) == ("none", None)

    apply.__self__.oss = _Then(apply.__self__.oss, "manual:", lambda: dunning_bar(_dunning(account.account_id, "full", "l3")))
    restore = _staff(product.product_id, "active", "found")
    result = await apply(restore)

    assert apply.__self__.oss.done
    assert (result.status, result.status_reason, result.barring) == ("suspended", "barred for arrears (full)", "full")
    assert await barring(oss_http, product.msisdn) == "full"  # a customer in arrears does not get service back
    assert _hold(db_url, product.product_id) is None
    # A retried attempt finds the restoration made and changes nothing (the same externalIds).
    again = await apply(restore)
    assert (again.outcome, again.status, again.status_reason) == ("already", "suspended", "barred for arrears (full)")
    assert await barring(oss_http, product.msisdn) == "full"


async def test_a_restoration_finishing_while_dunning_bars_makes_dunning_bar_the_line_on_its_retry(make_settings, db_url, oss_http):
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s", "mobile-l"])
    held, free = account.products
    apply = _activity(settings, "service_state_apply")
    dunning_bar = _activity(settings, "dunning_set_barring")
    await apply(_staff(held.product_id, "suspended"))

    # Dunning has found `held` held and is barring `free` when staff restore `held`.
    dunning_bar.__self__.oss = _Then(dunning_bar.__self__.oss, "dunning:", lambda: apply(_staff(held.product_id, "active", "found")))
    request = _dunning(account.account_id, "full", "l3")
    with pytest.raises(HoldReleased):
        await dunning_bar(request)
    assert await barring(oss_http, held.msisdn) == "none"  # for now: the attempt failed and is retried
    await dunning_bar(request)  # Temporal's retry, with the same externalIds
    assert await barring(oss_http, held.msisdn) == "full" and await barring(oss_http, free.msisdn) == "full"
    assert {p.status_reason for p in products(db_url, account.account_id)} == {"barred for arrears (full)"}


async def test_a_refused_suspension_frees_the_line_again(make_settings, db_url, oss_http):
    settings = make_settings()
    account = await open_account(db_url, oss_http, ["mobile-s"])
    product = account.products[0]
    apply = _activity(settings, "service_state_apply")
    dunning_bar = _activity(settings, "dunning_set_barring")
    await oss_http.post("/sim/rules", json={"match": {"msisdn": product.msisdn}, "behaviour": "reject"})
    try:
        with pytest.raises(Exception, match="OSS refused"):
            await apply(_staff(product.product_id, "suspended"))
    finally:
        await oss_http.delete("/sim/rules")
    assert _hold(db_url, product.product_id) is None
    await dunning_bar(_dunning(account.account_id, "outgoing", "l2"))
    assert await barring(oss_http, product.msisdn) == "outgoing"
    assert _state(db_url, account.account_id, product.product_id) == ("suspended", "barred for arrears (outgoing)")
