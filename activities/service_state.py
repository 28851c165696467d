"""Activities of staff suspend / restore (ServiceStateWorkflow) and of the nightly OSS reconciliation
(OssReconciliationWorkflow). Every OSS write is keyed by a business id, so a retried activity makes the
OSS replay the same service order:

- suspend: externalId `manual:<request id>:<product>` (the API request's id); restore:
  `manual:<request id>:<product>:<barring>` (the bar under the hold can move while it runs);
- a reconciliation repair: externalId `reconcile:<run id>:<product>`.

A suspension writes its hold (pending) before the OSS order, so dunning and the spending cap treat the line
as held from then on; the rest of a change (status, history, product event, business event, audit) is
written in one transaction after the OSS has confirmed, and is written once: a retry finds the change
already made. A restoration lifts the hold only if the bar under it is still the one it sent to the OSS."""
from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Literal

from pydantic import BaseModel
from sqlmodel import col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.order_records import record_event, utcnow
from activities.oss_orders import place_order
from adapters.oss.port import OssClient, OssNotFound, OssRejected, OssUnavailable
from domain.service_state import LIVE_STATUSES, MANUAL_BARRING, expected_barring, manual_reason, state_for_barring
from persistence.db import session_scope
from persistence.tables import BillingAccount, ManualSuspension, Product
from services.audit import Actor, record_audit, snapshot
from services.hub_events import emit_product_event
from services.service_state import hold_pending, place_hold, record_status_change

RECONCILE_BATCH = 100  # lines read from the OSS per activity
RECONCILE_PAGE = 1000  # products read from the database per activity (keeps each payload small)


class ServiceStateRequest(BaseModel):
    product_id: str
    target: Literal["suspended", "active"]
    reason: str
    request_id: str  # the API request's id: the OSS order's key and the hold's
    actor_kind: str
    actor_id: str
    actor_role: str | None = None
    actor_name: str | None = None

    @property
    def actor(self) -> Actor:
        return Actor(kind=self.actor_kind, id=self.actor_id, role=self.actor_role, name=self.actor_name)


class ServiceStateResult(BaseModel):
    product_id: str
    outcome: Literal["applied", "already", "not_live"]
    status: str
    status_reason: str | None = None
    barring: str | None = None  # what the OSS was told


class ExpectedLine(BaseModel):
    product_id: str
    msisdn: str
    barring: str  # o2c's view


class LineDrift(BaseModel):
    product_id: str
    msisdn: str
    expected: str  # the barring o2c's view says
    actual: str  # the OSS's barring, or missing / inactive / terminated when it has no active line
    repaired: bool = False
    note: str | None = None


class OssReconciliationReport(BaseModel):
    as_of: datetime
    checked: int
    drifts: list[LineDrift] = []
    repaired: int = 0
    unrepaired: int = 0


def _oss_error(error: Exception) -> ApplicationError:
    """The reconciliation's reads (and a refused staff order) as activity errors; the orders go through activities.oss_orders."""
    if isinstance(error, OssUnavailable):
        return ApplicationError(f"OSS unavailable: {error}", type="OssUnavailable")
    return ApplicationError(f"OSS refused: {error}", type="OssRejected", non_retryable=True)


def _manual_key(req: ServiceStateRequest, barring: str) -> str:
    """A staff order's externalId. A restoration's names the bar it sends (the bar under the hold can move while it
    runs): a retried attempt replays the same order, a moved bar is a new one. (A bar moving away and back while
    one restoration runs makes the OSS replay the older order: the nightly reconciliation repairs that line.)"""
    return f"manual:{req.request_id}:{req.product_id}" + ("" if req.target == "suspended" else f":{barring}")


class ServiceStateActivities:
    def __init__(self, db_url: str, oss: OssClient) -> None:
        self.db_url = db_url
        self.oss = oss

    async def _set_barring(self, external_id: str, msisdn: str, barring: str) -> None:
        refused = await place_order(partial(self.oss.set_barring, external_id=external_id, msisdn=msisdn, barring=barring), "barring order")  # type: ignore[arg-type]
        if refused is not None:
            raise _oss_error(refused) from refused

    # --- staff suspend / restore ----------------------------------------------------------------------

    @activity.defn(name="service_state_apply")
    async def apply(self, req: ServiceStateRequest) -> ServiceStateResult:
        """Suspends (OSS barring full) or restores (the bar dunning or a spending cap still wants, else none)
        one product, then records the change. Retried while the OSS is away; a refusal is final.

        A suspension writes its hold (pending) before the OSS order, so dunning and the spending cap, from then
        on, leave the line alone and only change the bar under it. A restoration re-reads that bar when it
        records the change and, if dunning or the cap moved it meanwhile, sends the new one first."""
        if req.target == "suspended":
            early = self._hold_first(req)
            if early is not None:
                return early
            barring = MANUAL_BARRING
        else:
            early, barring = self._restore_target(req)
            if early is not None:
                return early
        msisdn = self._msisdn(req.product_id)
        await self._order(req, msisdn, barring)
        if req.target == "suspended":
            return self._record(req, barring)
        while True:  # restore: the bar under the hold may have moved while the OSS order was under way
            result, moved = self._record_restore(req, barring)
            if result is not None:
                return result
            barring = moved
            await self._order(req, msisdn, barring)

    async def _order(self, req: ServiceStateRequest, msisdn: str | None, barring: str) -> None:
        if not msisdn:
            return
        try:
            await self._set_barring(_manual_key(req, barring), msisdn, barring)
        except ApplicationError as error:
            if error.type == "OssRejected":
                self._refused(req, str(error))
            raise

    def _msisdn(self, product_id: str) -> str | None:
        with session_scope(self.db_url) as session:
            return session.get(Product, product_id).msisdn

    def _hold_first(self, req: ServiceStateRequest) -> ServiceStateResult | None:
        """Suspend, before the OSS order: writes the pending hold (or takes over one a request that never finished
        left). Returns the answer when there is nothing to do."""
        with session_scope(self.db_url) as session:
            product = self._live_product(session, req.product_id)
            if product.status not in LIVE_STATUSES:
                return ServiceStateResult(product_id=product.id, outcome="not_live", status=product.status, status_reason=product.status_reason)
            hold = session.get(ManualSuspension, product.id)
            if hold is None:
                place_hold(session, product, request_id=req.request_id, reason=req.reason, actor=req.actor.identity, at=utcnow())
            elif not hold_pending(product, hold):
                outcome = "applied" if hold.request_id == req.request_id else "already"
                return ServiceStateResult(product_id=product.id, outcome=outcome, status=product.status, status_reason=product.status_reason,
                                          barring=MANUAL_BARRING)
            elif hold.request_id != req.request_id:
                hold.request_id, hold.reason, hold.actor, hold.at = req.request_id, req.reason, req.actor.identity, utcnow()
                session.add(hold)
            return None

    def _restore_target(self, req: ServiceStateRequest) -> tuple[ServiceStateResult | None, str]:
        with session_scope(self.db_url) as session:
            product = self._live_product(session, req.product_id)
            if product.status not in LIVE_STATUSES:
                return ServiceStateResult(product_id=product.id, outcome="not_live", status=product.status, status_reason=product.status_reason), ""
            hold = session.get(ManualSuspension, product.id)
            if hold is None:
                return ServiceStateResult(product_id=product.id, outcome="already", status=product.status, status_reason=product.status_reason,
                                          barring=expected_barring(product.status, product.status_reason)), ""
            return None, hold.underlying_barring

    @staticmethod
    def _live_product(session, product_id: str) -> Product:  # noqa: ANN001
        product = session.get(Product, product_id)
        if product is None:
            raise ApplicationError(f"product {product_id} does not exist", type="NotFound", non_retryable=True)
        return product

    def _refused(self, req: ServiceStateRequest, message: str) -> None:
        with session_scope(self.db_url) as session:
            product = session.get(Product, req.product_id)
            hold = session.get(ManualSuspension, product.id)
            if req.target == "suspended" and hold_pending(product, hold) and hold.request_id == req.request_id:
                session.delete(hold)  # the suspension did not happen: the line is free again
            record_event(session, customer_id=product.customer_id, billing_account_id=product.billing_account_id, kind="service.barring_refused",
                         message=f"The OSS refused to {'suspend' if req.target == 'suspended' else 'restore'} {product.msisdn}: {message}",
                         data={"productId": product.id, "requestId": req.request_id})

    def _record(self, req: ServiceStateRequest, barring: str) -> ServiceStateResult:
        """Suspend, once the OSS barred the line: the product shows the suspension (the hold stops being pending)."""
        at = utcnow()
        with session_scope(self.db_url) as session:
            product = session.get(Product, req.product_id)
            hold = session.get(ManualSuspension, product.id)
            if product.status not in LIVE_STATUSES:  # terminated while the OSS call was under way: nothing to record
                if hold_pending(product, hold) and hold.request_id == req.request_id:
                    session.delete(hold)
                return ServiceStateResult(product_id=product.id, outcome="not_live", status=product.status, status_reason=product.status_reason)
            if hold is not None and not hold_pending(product, hold):  # recorded by an earlier attempt: nothing more to do
                return ServiceStateResult(product_id=product.id, outcome="applied" if hold.request_id == req.request_id else "already",
                                          status=product.status, status_reason=product.status_reason, barring=barring)
            if hold is None:  # gone meanwhile (an operator's hand): written again with the bar the line has now
                place_hold(session, product, request_id=req.request_id, reason=req.reason, actor=req.actor.identity, at=at)
            before = snapshot(product)
            previous = product.status
            product.status, product.status_reason = "suspended", manual_reason(req.reason)
            return self._changed(session, req, product, before, previous, barring, at, "service.suspended_by_staff", "suspended")

    def _record_restore(self, req: ServiceStateRequest, sent: str) -> tuple[ServiceStateResult | None, str]:
        """Restore, once the OSS has `sent`: lifts the hold if the bar under it is still `sent` (the hold row locked,
        so dunning and the cap wait, then find the line free). Else (None, the bar to send now)."""
        at = utcnow()
        with session_scope(self.db_url) as session:
            product = session.get(Product, req.product_id)
            if product.status not in LIVE_STATUSES:
                return ServiceStateResult(product_id=product.id, outcome="not_live", status=product.status, status_reason=product.status_reason), sent
            hold = session.get(ManualSuspension, product.id, with_for_update=True)
            if hold is None:  # lifted by an earlier attempt
                return ServiceStateResult(product_id=product.id, outcome="applied", status=product.status, status_reason=product.status_reason,
                                          barring=sent), sent
            if hold.underlying_barring != sent:
                return None, hold.underlying_barring
            before = snapshot(product)
            previous = product.status
            session.delete(hold)
            product.status, product.status_reason = state_for_barring(hold.underlying_barring, hold.underlying_reason)  # type: ignore[arg-type]
            return self._changed(session, req, product, before, previous, sent, at, "service.restored_by_staff", "restored"), sent

    @staticmethod
    def _changed(session, req: ServiceStateRequest, product: Product, before: dict, previous: str, barring: str, at: datetime,  # noqa: ANN001
                 kind: str, verb: str) -> ServiceStateResult:
        """History, product event, business event and audit of a staff change (in the change's transaction)."""
        session.add(product)
        session.flush()
        record_status_change(session, product, previous, reason=req.reason, source="manual", actor=req.actor.identity, at=at)
        if product.status != previous:
            emit_product_event(session, product, at=at)
        still = f"; still barred ({barring}): {product.status_reason}" if req.target == "active" and barring != "none" else ""
        record_event(session, customer_id=product.customer_id, billing_account_id=product.billing_account_id, kind=kind,
                     message=f"Service {product.msisdn or product.id} {verb} by {req.actor.name or req.actor.id}: {req.reason}{still}",
                     data={"productId": product.id, "msisdn": product.msisdn, "barring": barring, "requestId": req.request_id,
                           "actor": req.actor.identity})
        record_audit(session, req.actor, f"product.{'suspend' if req.target == 'suspended' else 'restore'}", "product", product.id,
                     reason=req.reason, before=before, after=snapshot(product), customer_id=product.customer_id, request_id=req.request_id, at=at)
        return ServiceStateResult(product_id=product.id, outcome="applied", status=product.status, status_reason=product.status_reason,
                                  barring=barring)

    # --- nightly OSS reconciliation -------------------------------------------------------------------

    @activity.defn(name="oss_reconciliation_expected")
    def expected_lines(self, after_id: str | None, limit: int) -> list[ExpectedLine]:
        """One page (by product id, after `after_id`) of the live products with a line, and the barring o2c's view says each has."""
        with session_scope(self.db_url) as session:
            statement = select(Product).where(col(Product.status).in_(LIVE_STATUSES), col(Product.msisdn).is_not(None))
            if after_id is not None:
                statement = statement.where(Product.id > after_id)
            rows = list(session.exec(statement.order_by(Product.id).limit(limit)))
            held = set(session.exec(select(ManualSuspension.product_id).where(col(ManualSuspension.product_id).in_([p.id for p in rows])))) if rows else set()
            return [ExpectedLine(product_id=p.id, msisdn=p.msisdn, barring=expected_barring(p.status, p.status_reason, manually_suspended=p.id in held))
                    for p in rows]

    @activity.defn(name="oss_reconciliation_compare")
    async def compare(self, lines: list[ExpectedLine]) -> list[LineDrift]:
        """Reads each line from the OSS; the lines whose barring (or state) differs from o2c's view."""
        drifts: list[LineDrift] = []
        for line in lines:
            try:
                actual = await self.oss.get_line(line.msisdn)
            except OssNotFound:
                drifts.append(LineDrift(product_id=line.product_id, msisdn=line.msisdn, expected=line.barring, actual="missing"))
                continue
            except (OssUnavailable, OssRejected) as error:
                raise _oss_error(error) from error
            if actual.state != "active":
                drifts.append(LineDrift(product_id=line.product_id, msisdn=line.msisdn, expected=line.barring, actual=actual.state))
            elif actual.barring != line.barring:
                drifts.append(LineDrift(product_id=line.product_id, msisdn=line.msisdn, expected=line.barring, actual=actual.barring))
        return drifts

    @activity.defn(name="oss_reconciliation_repair")
    async def repair(self, drift: LineDrift, run_id: str) -> LineDrift:
        """Re-issues the barring o2c's view says, if that view has not moved since the comparison. A line the
        OSS has not active cannot be barred: it is reported for staff."""
        if drift.actual in ("missing", "inactive", "terminated"):
            return drift.model_copy(update={"note": "the OSS has no active line: staff must check it"})
        with session_scope(self.db_url) as session:
            product = session.get(Product, drift.product_id)
            held = product is not None and session.get(ManualSuspension, product.id) is not None
            now_expected = None if product is None else expected_barring(product.status, product.status_reason, manually_suspended=held)
        if now_expected != drift.expected:
            return drift.model_copy(update={"note": f"o2c's view changed meanwhile (now {now_expected}); left to the next run"})
        try:
            await self._set_barring(f"reconcile:{run_id}:{drift.product_id}", drift.msisdn, drift.expected)
        except ApplicationError as error:
            if error.type != "OssRejected":
                raise
            return drift.model_copy(update={"note": str(error)})
        return drift.model_copy(update={"repaired": True})

    @activity.defn(name="oss_reconciliation_record")
    def record_report(self, report: OssReconciliationReport) -> None:
        """One business event per drifting line (on its account's story) and one summary event."""
        with session_scope(self.db_url) as session:
            for drift in report.drifts:
                product = session.get(Product, drift.product_id)
                account = session.get(BillingAccount, product.billing_account_id) if product else None
                outcome = "repaired" if drift.repaired else f"not repaired ({drift.note})"
                record_event(session, customer_id=account.customer_id if account else None, billing_account_id=account.id if account else None,
                             kind="service.oss_drift", message=f"OSS drift on {drift.msisdn}: o2c expects barring {drift.expected}, "
                                                               f"the OSS had {drift.actual}; {outcome}",
                             data=drift.model_dump(mode="json"))
            record_event(session, customer_id=None, billing_account_id=None, kind="oss.reconciliation",
                         message=f"OSS reconciliation: {report.checked} lines checked, {len(report.drifts)} differences, "
                                 f"{report.repaired} repaired, {report.unrepaired} not repaired",
                         data={"asOf": report.as_of.isoformat(), "checked": report.checked, "drifts": len(report.drifts),
                               "repaired": report.repaired, "unrepaired": report.unrepaired})
