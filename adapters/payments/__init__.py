"""Payment gateway port and its adapters (Stripe, embedded sandbox)."""
from adapters.payments.factory import build_gateway
from adapters.payments.port import (
    GatewayConfigError,
    GatewayError,
    GatewayRequestRejected,
    GatewayUnavailable,
    IdempotencyConflict,
    PaymentGateway,
    PaymentMethodRejected,
    PaymentNotFound,
)
from adapters.payments.sandbox import SandboxGateway
from adapters.payments.stripe_gateway import StripeGateway

__all__ = [
    "GatewayConfigError",
    "GatewayError",
    "GatewayRequestRejected",
    "GatewayUnavailable",
    "IdempotencyConflict",
    "PaymentGateway",
    "PaymentMethodRejected",
    "PaymentNotFound",
    "SandboxGateway",
    "StripeGateway",
    "build_gateway",
]
