"""POST /webhooks/stripe: Stripe's webhook endpoint (no API key: Stripe signs each delivery).

Answers 200 for every genuine event, including ones already seen and ones o2c does not act on,
so Stripe stops retrying; 400 with a code for a delivery whose signature or body is wrong; 503
while Stripe cannot be re-read or webhooks are not configured, so Stripe delivers it again. The
logic is in services.stripe_webhooks."""
from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from adapters.payments.port import PaymentGateway
from api.deps import Ctx, Gateway
from services import stripe_webhooks
from services.errors import Unavailable

router = APIRouter(tags=["Stripe webhooks"])


def _stripe(ctx: Ctx, gateway: Gateway) -> PaymentGateway:
    """The app's gateway (api.deps.payment_gateway), which must be Stripe's: webhooks mean nothing without it (the
    sandbox knows none of Stripe's objects), so without a key they are answered 503 stripe_not_configured."""
    if not (ctx.settings.stripe_api_key or "").strip():
        raise Unavailable("Stripe is not configured (O2C_STRIPE_API_KEY): cannot re-read the event's object", code="stripe_not_configured")
    return gateway


@router.post(
    "/webhooks/stripe",
    responses={400: {"description": "bad signature (signature_missing, signature_invalid, signature_expired) or not an event"},
               503: {"description": "Stripe not reachable or webhooks not configured; Stripe retries"}},
)
async def stripe_webhook(request: Request, ctx: Ctx, gateway: Gateway,
                         stripe_signature: Annotated[str | None, Header(alias="Stripe-Signature")] = None) -> JSONResponse:
    """Stripe event delivery: verified, de-duplicated on the event id, the PaymentIntent re-read
    from Stripe, the payment moved forward only, and the result signalled to the account's workflow. Refund and
    dispute events (refund.*, charge.refunded, charge.dispute.*) move o2c's refunds and chargebacks the same way."""
    payload = await request.body()
    event = stripe_webhooks.verify_event(payload, stripe_signature, ctx.settings.stripe_webhook_secret)
    result = await stripe_webhooks.handle_event(ctx.db_url, _stripe(ctx, gateway), ctx.workflows, event,
                                                chargeback_fee=Decimal(ctx.settings.chargeback_fee))
    return JSONResponse({"received": True, "eventId": result.event_id, "result": result.result,
                         "paymentId": result.payment_id, "status": result.status})
