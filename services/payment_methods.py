"""A billing account's payment method, saved at the payment gateway (issue 6, docs/payments-methods.md).

When a client gives an account a card or SEPA payment method (TMF666 `defaultPaymentMethod` on create or
PATCH), the API saves it at the gateway *synchronously*: the gateway customer of the account (one per
account, keyed by the account id), then the card attached to it or the SEPA mandate set up with a
SetupIntent. A refusal is answered at once (422 `payment_method_refused`), nothing is stored then.

Durability comes from the gateway's idempotency keys, which StripeGateway derives from business ids
(customer: account id; card: customer + card; SEPA: customer + IBAN digest): a retried request (the
client's retry after a lost answer, or after the API died between the gateway call and the commit)
replays the first result at the gateway instead of creating a second customer or mandate. The ids are
stored only after the gateway answered; `source_digest` lets the same request again skip the gateway.

Charges then use the saved method and customer (`charge_method`); a revoked mandate makes them hard
declines (`mandate_revoked`) until another method is saved (`record_mandate_status`).
"""
from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, NamedTuple

from sqlmodel import Session, select

from adapters.payments.port import (
    GatewayConfigError,
    GatewayError,
    GatewayRequestRejected,
    GatewayUnavailable,
    IdempotencyConflict,
    PaymentGateway,
    PaymentMethodRejected,
)
from adapters.payments.stripe_gateway import StripeGateway
from domain.payments import MandateAcceptance, PaymentMethodRef, SavedPaymentMethod as SavedAtGateway, parse_payment_method
from persistence.tables import BillingAccount, BusinessEvent, SavedPaymentMethod
from services.errors import Conflict, Invalid, Unavailable, field_error
from services.query import utcnow

ACTIVE = "active"
REVOKED = "revoked"
MANDATE_REVOKED = "mandate_revoked"
# Stripe Mandate statuses (mandate.updated) after which the mandate no longer authorises debits.
DEAD_MANDATE_STATUSES = frozenset({"inactive", "revoked"})


def gateway_name(gateway: PaymentGateway) -> str:
    return "stripe" if isinstance(gateway, StripeGateway) else "sandbox"


def source_digest(ref: PaymentMethodRef, acceptance: MandateAcceptance | None, holder: str | None, *, key: str) -> str:
    """What the client asked to save, as an HMAC-SHA256 under the server's secret `key` (settings.pii_hash_key):
    an IBAN is never stored in clear here, and without the key its digest cannot be found by trying the few
    account numbers of a known bank code. Only compared with the digest of a new request; a row from before the
    key (a plain SHA-256) matches no request, so the method is saved at the gateway again (idempotent there) and
    the row re-hashed."""
    data: dict[str, Any] = {"kind": ref.kind, "pm": ref.payment_method_id, "iban": ref.iban}
    if ref.kind == "sepa_debit":
        data["acceptance"] = acceptance.model_dump() if acceptance is not None else None
        data["holder"] = holder
    return hmac.new(key.encode(), json.dumps(data, sort_keys=True).encode(), hashlib.sha256).hexdigest()


def needs_gateway(ref: PaymentMethodRef) -> bool:
    """`sepa:pm_...` names a method saved at the gateway before (with its mandate): nothing to set up."""
    return not (ref.kind == "sepa_debit" and ref.iban is None)


async def save_at_gateway(
    gateway: PaymentGateway,
    account_id: str,
    ref: PaymentMethodRef,
    *,
    email: str | None,
    name: str | None,
    holder: str | None,
    acceptance: MandateAcceptance | None,
    field: str = "defaultPaymentMethod.id",
) -> SavedAtGateway:
    """Customer (created once per account) + the method saved to it. Gateway errors become service errors:
    a refusal 422 `payment_method_refused` (the field error's code is the gateway's decline code), a method the
    gateway does not know 422 `invalid_payment_method`, an unreachable/misconfigured gateway 503."""
    try:
        customer_id = await gateway.ensure_customer(account_id, email=email, name=name)
        if ref.kind == "card":
            return await gateway.attach_card(customer_id, ref.payment_method_id or "")
        return await gateway.setup_sepa_debit(
            customer_id, ref.iban or "", account_holder=holder or name or account_id, email=email,
            acceptance=acceptance or MandateAcceptance(type="offline"),
        )
    except PaymentMethodRejected as exc:
        code = exc.decline_code or "declined"
        raise Invalid([field_error(field, code, f"the gateway refused the payment method: {exc} (decline code {code}, {exc.decline_class} decline)")],
                      f"the gateway refused the payment method ({code})", code="payment_method_refused") from exc
    except GatewayRequestRejected as exc:
        raise Invalid([field_error(field, "invalid_payment_method", str(exc))], code="invalid_payment_method") from exc
    except IdempotencyConflict as exc:
        # StripeGateway keys a SEPA set-up by customer + IBAN: the same IBAN with other mandate data within the
        # gateway's idempotency window (24 h at Stripe) cannot be set up again.
        raise Conflict(f"the gateway saved this payment method with other details moments ago: {exc}", code="payment_method_conflict") from exc
    except GatewayUnavailable as exc:
        raise Unavailable(f"the payment gateway cannot be reached: {exc}", code="gateway_unavailable") from exc
    except GatewayConfigError as exc:
        raise Unavailable(f"the payment gateway is not configured correctly: {exc}", code="gateway_not_configured") from exc
    except GatewayError as exc:
        raise Unavailable(f"the payment gateway failed: {exc}", code="gateway_error") from exc


class Saving:
    """One request's payment method for an account: saved at the gateway first (`at_gateway`, outside any
    transaction; skipped when exactly this method is saved already), then stored with the account change in the
    caller's transaction (`store`)."""

    def __init__(self, gateway: PaymentGateway, raw: str, acceptance: MandateAcceptance | None, holder: str | None, *,
                 hash_key: str) -> None:
        self.gateway, self.raw, self.acceptance, self.holder, self.hash_key = gateway, raw, acceptance, holder, hash_key
        self.ref = parse_payment_method(raw)
        self.digest: str | None = None
        self.saved: SavedAtGateway | None = None

    async def at_gateway(self, account_id: str, *, email: str | None, name: str | None, already: str | None) -> None:
        """`already`: the digest of the account's active saved method, if any."""
        self.digest = source_digest(self.ref, self.acceptance, self.holder or name, key=self.hash_key)
        if not needs_gateway(self.ref) or already == self.digest:
            return
        self.saved = await save_at_gateway(self.gateway, account_id, self.ref, email=email, name=name, holder=self.holder or name,
                                           acceptance=self.acceptance)

    def store(self, session: Session, account: BillingAccount) -> None:
        if self.saved is not None:
            store(session, account, self.raw, self.saved, gateway=gateway_name(self.gateway), digest=self.digest or "",
                  acceptance=self.acceptance)
        elif not needs_gateway(self.ref):
            # `sepa:pm_...`: a method saved at the gateway before, charged as it is.
            stale = current(session, account.id)
            if stale is not None:
                session.delete(stale)
            account.payment_method = self.raw
            session.add(account)


def current(session: Session, account_id: str) -> SavedPaymentMethod | None:
    return session.get(SavedPaymentMethod, account_id)


def is_saved(session: Session, account_id: str, digest: str) -> bool:
    """Whether exactly this method is already saved and usable (then a repeated request calls no gateway)."""
    row = current(session, account_id)
    return row is not None and row.source_digest == digest and row.status == ACTIVE


def store(session: Session, account: BillingAccount, raw: str, saved: SavedAtGateway, *, gateway: str, digest: str,
          acceptance: MandateAcceptance | None) -> SavedPaymentMethod:
    """The account's method with its gateway ids, and a business event."""
    now = utcnow()
    row = current(session, account.id)
    if row is None:
        row = SavedPaymentMethod(billing_account_id=account.id, gateway=gateway, kind=saved.kind, gateway_customer_id=saved.customer_id,
                                 gateway_payment_method_id=saved.payment_method_id, source_digest=digest, created_at=now, updated_at=now)
    row.gateway, row.kind, row.source_digest = gateway, saved.kind, digest
    row.gateway_customer_id, row.gateway_payment_method_id = saved.customer_id, saved.payment_method_id
    row.last4, row.brand, row.mandate_id = saved.last4, saved.brand, saved.mandate_id
    row.mandate_acceptance = (acceptance.type if acceptance else "offline") if saved.kind == "sepa_debit" else None
    row.status, row.status_reason, row.updated_at = ACTIVE, None, now
    session.add(row)
    # A card keeps the reference the client sent (a pm_ id or test card; TMF666 echoes it); a SEPA method becomes
    # its gateway reference `sepa:pm_...`, so no IBAN is kept in clear.
    account.payment_method = saved.reference if saved.kind == "sepa_debit" else raw
    session.add(account)
    what = f"card {saved.brand or ''} ending {saved.last4}".replace("  ", " ") if saved.kind == "card" else f"SEPA mandate {saved.mandate_id} for IBAN ending {saved.last4}"
    session.add(BusinessEvent(customer_id=account.customer_id, billing_account_id=account.id, kind="payment_method.saved",
                              message=f"Payment method saved at the {gateway} gateway: {what}",
                              data={"kind": saved.kind, "paymentMethodId": saved.payment_method_id, "customerId": saved.customer_id,
                                    "mandateId": saved.mandate_id}, at=now))
    return row


def remove(session: Session, account: BillingAccount) -> None:
    """No payment method any more (charges answer no_payment_method); the gateway keeps the customer."""
    row = current(session, account.id)
    if row is not None:
        session.delete(row)
    if account.payment_method is not None or row is not None:
        account.payment_method = None
        session.add(account)
        session.add(BusinessEvent(customer_id=account.customer_id, billing_account_id=account.id, kind="payment_method.removed",
                                  message="Payment method removed", at=utcnow()))


def record_mandate_status(session: Session, mandate_id: str, status: str, reason: str | None = None) -> SavedPaymentMethod | None:
    """A mandate's status as the gateway reports it (Stripe `mandate.updated`, re-read): a revoked or inactive
    mandate flags the account's method `revoked`, so its charges are hard declines (mandate_revoked) and dunning
    stops retrying until the customer gives a new method. Returns the row it changed, None when nothing changed."""
    row = session.exec(select(SavedPaymentMethod).where(SavedPaymentMethod.mandate_id == mandate_id)).first()
    if row is None or status not in DEAD_MANDATE_STATUSES or row.status == REVOKED:
        return None
    row.status, row.status_reason, row.updated_at = REVOKED, reason or f"mandate {mandate_id} is {status}", utcnow()
    session.add(row)
    account = session.get(BillingAccount, row.billing_account_id)
    if account is not None:
        session.add(BusinessEvent(customer_id=account.customer_id, billing_account_id=account.id, kind="payment_method.revoked",
                                  message=f"SEPA mandate {mandate_id} is {status}: debits are refused until a new payment method is saved",
                                  data={"mandateId": mandate_id, "status": status}, at=utcnow()))
    return row


class ChargeMethod(NamedTuple):
    """What a charge of the account is made with: the saved method and its customer when there is one;
    `refused_code` set: do not charge, it is a hard decline with this code (a revoked mandate)."""

    payment_method: str | None
    gateway_customer_id: str | None = None
    refused_code: str | None = None


def charge_method(session: Session, account: BillingAccount) -> ChargeMethod:
    row = current(session, account.id)
    if row is None or not account.payment_method:
        return ChargeMethod(account.payment_method)
    if row.status == REVOKED:
        return ChargeMethod(account.payment_method, row.gateway_customer_id, refused_code=MANDATE_REVOKED)
    reference = f"sepa:{row.gateway_payment_method_id}" if row.kind == "sepa_debit" else row.gateway_payment_method_id
    return ChargeMethod(reference, row.gateway_customer_id)


def view(account: BillingAccount, row: SavedPaymentMethod | None) -> dict[str, Any]:
    """TMF670-style PaymentMethod of the account (GET /billingAccount/{id}/paymentMethod)."""
    if row is None:
        return {"@type": "PaymentMethod", "id": account.payment_method, "status": "notSaved" if account.payment_method else "none",
                "account": {"id": account.id, "@referredType": "BillingAccount"}}
    body: dict[str, Any] = {
        "@type": "SEPADirectDebitPaymentMethod" if row.kind == "sepa_debit" else "TokenizedCardPaymentMethod",
        "id": account.payment_method,
        "kind": row.kind,
        "status": row.status,
        "statusReason": row.status_reason,
        "gateway": row.gateway,
        "gatewayCustomerId": row.gateway_customer_id,
        "gatewayPaymentMethodId": row.gateway_payment_method_id,
        "last4": row.last4,
        "account": {"id": account.id, "@referredType": "BillingAccount"},
        "savedAt": row.updated_at.isoformat(),
    }
    if row.kind == "card":
        body["brand"] = row.brand
    else:
        body["mandate"] = {"id": row.mandate_id, "acceptance": row.mandate_acceptance,
                           "status": "revoked" if row.status == REVOKED else "active"}
    return body
