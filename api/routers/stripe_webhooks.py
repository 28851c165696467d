"""POST /webhooks/stripe: Stripe's webhook endpoint (no API key: Stripe signs each delivery).

Answers 200 for every genuine event, including ones already seen and ones o2c does not act on,
so Stripe stops retrying; 400 with a code for a delivery whose signature or body is wrong; 503
while Stripe cannot be re-read or webhooks are not configured, so Stripe delivers it again. The
logic is in services.stripe_webhooks."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from adapters.payments.port import PaymentGateway
from api.deps import Ctx
from services import stripe_webhooks

router = APIRouter(tags=["Stripe webhooks"])


def _gateway(request: Request, ctx: Ctx) -> PaymentGateway:
    # Built on first use and kept with the app: the API holds no gateway otherwise.
    settings = ctx.settings
    key = (settings.stripe_api_key, settings.stripe_api_base)
    cached = getattr(request.app.state, "stripe_webhook_gateway", None)
    if cached is None or cached[0] != key:
        cached = (key, stripe_webhooks.webhook_gateway(settings))
        request.app.state.stripe_webhook_gateway = cached
    return cached[1]


@router.post(
    "/webhooks/stripe",
    responses={400: {"description": "bad signature (signature_missing, signature_invalid, signature_expired) or not an event"},
               503: {"description": "Stripe not reachable or webhooks not configured; Stripe retries"}},
)
async def stripe_webhook(request: Request, ctx: Ctx,
                         stripe_signature: Annotated[str | None, Header(alias="Stripe-Signature")] = None) -> JSONResponse:
    """Stripe event delivery: verified, de-duplicated on the event id, the PaymentIntent re-read
    from Stripe, the payment moved forward only, and the result signalled to the account's workflow."""
    payload = await request.body()
    event = stripe_webhooks.verify_event(payload, stripe_signature, ctx.settings.stripe_webhook_secret)
    result = await stripe_webhooks.handle_event(ctx.db_url, _gateway(request, ctx), ctx.workflows, event)
    return JSONResponse({"received": True, "eventId": result.event_id, "result": result.result,
                         "paymentId": result.payment_id, "status": result.status})
