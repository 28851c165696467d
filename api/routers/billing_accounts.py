"""TMF666 BillingAccount, with o2c's billing extensions (billCycleDay, timeZone, billingProfile)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from api import tmf
from api.deps import Ctx, PagingDep, list_response, reader, writer
from api.errors import ApiError
from api.schemas import BillingAccountCreate, BillingAccountUpdate, SpendingLimitIn
from domain.orders import FieldError
from domain.spending import SpendingLimit
from services import billing_accounts

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


@router.post("/billingAccount", status_code=201, dependencies=[writer("billingAccount")])
async def create_billing_account(body: BillingAccountCreate, ctx: Ctx) -> JSONResponse:
    customer_id, customer_field = customer_reference(body.relatedParty)
    row = await ctx.tx(
        lambda s: billing_accounts.create_billing_account(
            s,
            name=body.name,
            customer_id=customer_id,
            customer_field=customer_field,
            bill_cycle_day=body.billCycleDay,
            timezone=body.timeZone,
            billing_profile=body.billingProfile,
            payment_method=body.defaultPaymentMethod.id.strip() if body.defaultPaymentMethod else None,
            profiles=ctx.profiles,
            spending_limit=spending_limit(body.spendingLimit),
            leitweg_id=body.leitwegId,
            itemised_bill=body.itemisedBill,
            itemised_mask_last3=body.itemisedBillMaskLast3,
        )
    )
    return JSONResponse(tmf.billing_account(row), status_code=201, headers={"Location": tmf.account_href(row.id)})


@router.get("/billingAccount", dependencies=[reader("billingAccount")])
async def list_billing_accounts(
    ctx: Ctx, page: PagingDep, related_party_id: Annotated[str | None, Query(alias="relatedParty.id", description="customer id")] = None
) -> JSONResponse:
    result = await ctx.tx(lambda s: billing_accounts.list_billing_accounts(s, customer_id=related_party_id, limit=page.limit, offset=page.offset))
    return list_response(result, tmf.billing_account)


@router.get("/billingAccount/{account_id}", dependencies=[reader("billingAccount")])
async def get_billing_account(account_id: str, ctx: Ctx) -> JSONResponse:
    return JSONResponse(tmf.billing_account(await ctx.tx(billing_accounts.get_billing_account, account_id)))


@router.patch("/billingAccount/{account_id}", dependencies=[writer("billingAccount")])
async def update_billing_account(account_id: str, body: BillingAccountUpdate, ctx: Ctx) -> JSONResponse:
    """Changes the fields present in the body: spendingLimit (null removes it), leitwegId (null removes it),
    itemisedBill and itemisedBillMaskLast3 (they apply to documents issued from then on)."""
    row = await ctx.tx(billing_accounts.get_billing_account, account_id)
    if "spendingLimit" in body.model_fields_set:
        row = await ctx.tx(billing_accounts.set_spending_limit, account_id, spending_limit(body.spendingLimit))
    document_fields = {"leitwegId": "leitweg_id", "itemisedBill": "itemised_bill", "itemisedBillMaskLast3": "itemised_mask_last3"}
    changes = {column: getattr(body, field) for field, column in document_fields.items() if field in body.model_fields_set}
    if changes:
        for column in ("itemised_bill", "itemised_mask_last3"):
            if column in changes and changes[column] is None:
                raise ApiError(422, "invalid_request", f"{column} cannot be null",
                               [FieldError(field=next(f for f, c in document_fields.items() if c == column), code="null", message="true or false")])
        row = await ctx.tx(billing_accounts.set_document_options, account_id, changes)
    return JSONResponse(tmf.billing_account(row))


@router.get("/billingAccount/{account_id}/events", dependencies=[reader("billingAccount")])
async def billing_account_events(
    account_id: str, ctx: Ctx, page: PagingDep, kind: Annotated[str | None, Query(description="e.g. dunning.reminder")] = None
) -> JSONResponse:
    """o2c extension: what happened on the account (orders, invoices, payments, dunning), oldest first."""
    result = await ctx.tx(lambda s: billing_accounts.account_events(s, account_id, kind=kind, limit=page.limit, offset=page.offset))
    return list_response(result, tmf.business_event)
