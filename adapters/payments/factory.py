"""Pick the payment gateway from configuration: Stripe when a key is set, else the sandbox."""
from __future__ import annotations

from adapters.payments.port import PaymentGateway
from adapters.payments.sandbox import SandboxGateway
from adapters.payments.stripe_gateway import StripeGateway


def build_gateway(
    stripe_api_key: str | None,
    stripe_api_base: str | None = None,
    sepa_settle_delay_s: float = 5.0,
) -> PaymentGateway:
    # A blank key (e.g. `O2C_STRIPE_API_KEY=` in an env file) means "not configured", not
    # "configured with an empty key".
    if stripe_api_key and stripe_api_key.strip():
        return StripeGateway(stripe_api_key.strip(), api_base=stripe_api_base or None)
    return SandboxGateway(sepa_settle_delay_s=sepa_settle_delay_s)
