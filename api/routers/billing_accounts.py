"""TMF666 BillingAccount, with o2c's billing extensions (billCycleDay, timeZone, billingProfile)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from api import tmf
from api.deps import Ctx, PagingDep, audit_draft, list_response, payment_gateway, reader, request_id, writer
from api.errors import ApiError
from api.schemas import BillingAccountCreate, BillingAccountUpdate, MandateAcceptanceIn, Ref, RoamingDataContinueIn, SpendingLimitIn
from domain.orders import FieldError
from domain.spending import SpendingLimit
from services import billing_accounts, payment_methods
from services.query import new_id

router = APIRouter(prefix=tmf.ACCOUNT_API, tags=["TMF666 Account"])


def customer_reference(parties: list) -> tuple[str, str]:
    """(customer id, its field path) from relatedParty; the customer is the party with role 'customer'."""
    for index, party in enumerate(parties):
        if party.role.lower() == "customer":
            return party.id, f"relatedParty[{index}].id"
    raise ApiError(422, "invalid_request", "a relatedParty with role 'customer' is required",
                   [FieldError(field="relatedParty", code="required", message="a relatedParty with role 'customer' is required")])


def spending_limit(body: SpendingLimitIn | None) -> SpendingLimit | None:
    return None if body is None else SpendingLimit(amount=body.amount.value, hard_cap=body.hardCap)


def account_document(row) -> dict:
    """TMF666 BillingAccount with o2c's roaming data extension: `roamingDataCap.optOut`."""
    return {**tmf.billing_account(row), "roamingDataCap": billing_accounts.roaming_data_cap_view(row),
            "trafficDataHold": billing_accounts.traffic_data_hold_view(row)}


def _audit_change(request: Request, field: str, before, after) -> None:
    """Adds one field's before/after to the request's audit entry (a PATCH may change several)."""
    draft = audit_draft(request)
    if draft is None:
        return
    draft.before = {**(draft.before if isinstance(draft.before, dict) else {}), field: before}
    draft.after = {**(draft.after if isinstance(draft.after, dict) else {}), field: after}


def _saving(request: Request, ctx: Ctx, method: Ref, acceptance: MandateAcceptanceIn | None) -> payment_methods.Saving:
    # The app's one gateway (api.deps.payment_gateway), shared with refunds and Stripe webhooks.
    return payment_methods.Saving(payment_gateway(request), method.id.strip(), acceptance.domain() if acceptance is not None else None,
                                  acceptance.accountHolder if acceptance is not None else None, hash_key=ctx.settings.pii_hash_key)


@router.post("/billingAccount", status_code=201, dependencies=[writer("billingAccount")])
async def create_billing_account(body: BillingAccountCreate, request: Request, ctx: Ctx) -> JSONResponse:
    """With a card or SEPA defaultPaymentMethod, the method is saved at the payment gateway before the account is
    created: a refused one is answered 422 payment_method_refused and nothing is created."""
    customer_id, customer_field = customer_reference(body.relatedParty)
    account_id = new_id()
    saving = _saving(request, ctx, body.defaultPaymentMethod, body.mandateAcceptance) if body.defaultPaymentMethod else None
    if saving is not None:
        def check(s):
            customer, _ = billing_accounts.check_new_account(s, customer_id=customer_id, billing_profile=body.billingProfile,
                                                             profiles=ctx.profiles, customer_field=customer_field)
            return customer.email, customer.name

        email, name = await ctx.tx(check)
        await saving.at_gateway(account_id, email=email, name=name, already=None)

    def create(s):
        row = billing_accounts.create_billing_account(
            s,
            name=body.name,
            customer_id=customer_id,
            customer_field=customer_field,
            bill_cycle_day=body.billCycleDay,
            timezone=body.timeZone,
            billing_profile=body.billingProfile,
            payment_method=saving.raw if saving is not None else None,
            profiles=ctx.profiles,
            spending_limit=spending_limit(body.spendingLimit),
            leitweg_id=body.leitwegId,
            itemised_bill=body.itemisedBill,
            itemised_mask_last3=body.itemisedBillMaskLast3,
            account_id=account_id,
            roaming_data_cap_opt_out=body.roamingDataCap.optOut if body.roamingDataCap is not None else False,
        )
        if saving is not None:
            s.flush()
            saving.store(s, row)
        return row

    row = await ctx.tx(create)
    return JSONResponse(account_document(row), status_code=201, headers={"Location": tmf.account_href(row.id)})


@router.get("/billingAccount", dependencies=[reader("billingAccount")])
async def list_billing_accounts(
    ctx: Ctx, page: PagingDep, related_party_id: Annotated[str | None, Query(alias="relatedParty.id", description="customer id")] = None
) -> JSONResponse:
    result = await ctx.tx(lambda s: billing_accounts.list_billing_accounts(s, customer_id=related_party_id, limit=page.limit, offset=page.offset))
    return list_response(result, account_document)


@router.get("/billingAccount/{account_id}", dependencies=[reader("billingAccount")])
async def get_billing_account(account_id: str, ctx: Ctx) -> JSONResponse:
    return JSONResponse(account_document(await ctx.tx(billing_accounts.get_billing_account, account_id)))


@router.patch("/billingAccount/{account_id}", dependencies=[writer("billingAccount")])
async def update_billing_account(account_id: str, body: BillingAccountUpdate, request: Request, ctx: Ctx) -> JSONResponse:
    """Changes the fields present in the body: spendingLimit (null removes it), trafficDataHold (a complaint is open:
    traffic data is kept past retention; null releases it), leitwegId (null removes it),
    itemisedBill and itemisedBillMaskLast3 (they apply to documents issued from then on), defaultPaymentMethod
    (saved at the payment gateway first: a refused one is answered 422 payment_method_refused and nothing changes;
    the same method again calls no gateway; null removes it)."""
    row = await ctx.tx(billing_accounts.get_billing_account, account_id)
    if "defaultPaymentMethod" in body.model_fields_set:
        row = await _change_payment_method(request, ctx, account_id, body)
    if "spendingLimit" in body.model_fields_set:
        row = await ctx.tx(billing_accounts.set_spending_limit, account_id, spending_limit(body.spendingLimit))
    if "roamingDataCap" in body.model_fields_set:
        row = await _change_roaming_data_cap(request, ctx, account_id, body)
    if "trafficDataHold" in body.model_fields_set:
        row = await _change_traffic_data_hold(request, ctx, account_id, body)
    document_fields = {"leitwegId": "leitweg_id", "itemisedBill": "itemised_bill", "itemisedBillMaskLast3": "itemised_mask_last3"}
    changes = {column: getattr(body, field) for field, column in document_fields.items() if field in body.model_fields_set}
    if changes:
        for column in ("itemised_bill", "itemised_mask_last3"):
            if column in changes and changes[column] is None:
                raise ApiError(422, "invalid_request", f"{column} cannot be null",
                               [FieldError(field=next(f for f, c in document_fields.items() if c == column), code="null", message="true or false")])
        row = await ctx.tx(billing_accounts.set_document_options, account_id, changes)
    return JSONResponse(account_document(row))


async def _change_traffic_data_hold(request: Request, ctx: Ctx, account_id: str, body: BillingAccountUpdate):
    reason = body.trafficDataHold.reason if body.trafficDataHold is not None else None

    def change(s):
        before = billing_accounts.traffic_data_hold_view(billing_accounts.get_billing_account(s, account_id))
        return billing_accounts.set_traffic_data_hold(s, account_id, reason), before

    row, before = await ctx.tx(change)
    _audit_change(request, "trafficDataHold", before, billing_accounts.traffic_data_hold_view(row))
    return row


async def _change_roaming_data_cap(request: Request, ctx: Ctx, account_id: str, body: BillingAccountUpdate):
    if body.roamingDataCap is None:
        raise ApiError(422, "invalid_request", "roamingDataCap cannot be null",
                       [FieldError(field="roamingDataCap", code="null", message='{"optOut": true} or {"optOut": false}')])
    opt_out = body.roamingDataCap.optOut

    def change(s):
        before = billing_accounts.roaming_data_cap_view(billing_accounts.get_billing_account(s, account_id))
        row, changed = billing_accounts.set_roaming_data_cap_opt_out(s, account_id, opt_out)
        return row, changed, before

    row, changed, before = await ctx.tx(change)
    _audit_change(request, "roamingDataCap", before, billing_accounts.roaming_data_cap_view(row))
    if changed and opt_out:
        await billing_accounts.lift_roaming_data_after_opt_out(ctx.workflows, account_id, f"opt-out:{request_id(request) or new_id()}")
    return row


@router.post("/billingAccount/{account_id}/roamingDataCap/continue", status_code=202, dependencies=[writer("billingAccount")])
async def continue_roaming_data(account_id: str, body: RoamingDataContinueIn, request: Request, ctx: Ctx) -> JSONResponse:
    """o2c extension: the customer asks (through the CRM) to go on using roaming data this cycle after the EU roaming
    data limit cut it off (Regulation (EU) 2022/612): the account's workflow lifts the roaming data barring and does
    not cut it off again until the next cycle. 409 roaming_data_cap_opted_out when the account opted out (nothing is
    cut off), 409 billing_not_started when the account has no billing yet, 503 while Temporal is away."""
    rid = request_id(request) or new_id()
    row = await billing_accounts.continue_roaming_data(ctx.db_url, ctx.workflows, account_id, request_id=rid, reason=body.reason.strip())
    draft = audit_draft(request)
    if draft is not None:
        draft.action = "billingAccount.roamingDataCap.continue"
        draft.resource_type, draft.resource_id, draft.customer_id = "billingAccount", row.id, row.customer_id
        draft.after = {"roamingDataCap": {"continueRequested": rid}}
    return JSONResponse({"billingAccount": tmf.account_ref(row.id), "state": "acknowledged", "requestId": rid, "reason": body.reason.strip()},
                        status_code=202)


@router.get("/billingAccount/{account_id}/events", dependencies=[reader("billingAccount")])
async def billing_account_events(
    account_id: str, ctx: Ctx, page: PagingDep, kind: Annotated[str | None, Query(description="e.g. dunning.reminder")] = None
) -> JSONResponse:
    """o2c extension: what happened on the account (orders, invoices, payments, dunning), oldest first."""
    result = await ctx.tx(lambda s: billing_accounts.account_events(s, account_id, kind=kind, limit=page.limit, offset=page.offset))
    return list_response(result, tmf.business_event)


async def _change_payment_method(request: Request, ctx: Ctx, account_id: str, body: BillingAccountUpdate):
    def before(s):
        account = billing_accounts.get_billing_account(s, account_id)
        saved = payment_methods.current(s, account_id)
        customer = s.get(billing_accounts.Customer, account.customer_id)
        return (payment_methods.view(account, saved), account.email, customer.name if customer else account.name,
                saved.source_digest if saved is not None and saved.status == payment_methods.ACTIVE else None)

    old_view, email, name, digest = await ctx.tx(before)
    if body.defaultPaymentMethod is None:
        def change(s):
            account = billing_accounts.get_billing_account(s, account_id)
            payment_methods.remove(s, account)
            return account, payment_methods.view(account, None)
    else:
        saving = _saving(request, ctx, body.defaultPaymentMethod, body.mandateAcceptance)
        await saving.at_gateway(account_id, email=email, name=name, already=digest)

        def change(s):
            account = billing_accounts.get_billing_account(s, account_id)
            saving.store(s, account)
            s.flush()
            return account, payment_methods.view(account, payment_methods.current(s, account_id))

    row, new_view = await ctx.tx(change)
    draft = audit_draft(request)
    if draft is not None:
        draft.before, draft.after = {"paymentMethod": old_view}, {"paymentMethod": new_view}
    return row


@router.get("/billingAccount/{account_id}/paymentMethod", dependencies=[reader("billingAccount")])
async def billing_account_payment_method(account_id: str, ctx: Ctx) -> JSONResponse:
    """o2c extension (TMF670-style PaymentMethod): the account's payment method as saved at the gateway: its kind,
    status (active, revoked: the SEPA mandate was revoked, charges are hard declines; notSaved; none), the
    gateway's customer and payment method ids, the last four digits and, for SEPA, the mandate."""
    def read(s):
        account = billing_accounts.get_billing_account(s, account_id)
        return payment_methods.view(account, payment_methods.current(s, account_id))

    return JSONResponse(await ctx.tx(read))
