"""A local HTTP server speaking enough of Stripe's v1 wire format to test StripeGateway with the
real SDK over real HTTP: form-encoded bodies, Bearer auth, Idempotency-Key replay/conflict,
PaymentIntents created with confirm=true, and error bodies shaped like Stripe's.

Outcomes follow Stripe's test instruments, taken from the sandbox's table so the sandbox and
this fake can never disagree. Everything the SDK sends is recorded for assertions.

Stdlib http.server in a daemon thread: no event loop to share with pytest-asyncio, starts in
milliseconds, and binds 127.0.0.1 on a free port.
"""
from __future__ import annotations

import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from adapters.payments.sandbox import TEST_INSTRUMENTS, TestInstrument

DEFAULT_API_KEY = "sk_test_o2c_fake_0123456789"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    form: dict[str, str]  # flat Stripe keys, e.g. "metadata[invoice_id]"
    status: int  # what the fake answered

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")


@dataclass
class _Response:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class StripeErrorResponse(Exception):
    def __init__(self, status: int, **error: Any):
        self.status = status
        self.error = {k: v for k, v in error.items() if v is not None}


class FakeStripeServer:
    """Start with `with FakeStripeServer() as s:` or start()/stop(); point the SDK at `s.url`."""

    def __init__(self, api_key: str = DEFAULT_API_KEY):
        self.api_key = api_key
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.reset()

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeStripeServer:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        httpd.block_on_close = False  # keep-alive connections must not block stop()
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), name="fake-stripe", daemon=True)
        self._thread.start()  # poll 0.05 s (above) so stop() returns quickly
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeStripeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # --- test controls ---------------------------------------------------------------------

    def reset(self) -> None:
        """Forget all state (intents, customers, idempotency keys, recorded requests)."""
        with self._lock:
            self.requests: list[RecordedRequest] = []
            self.intents: dict[str, dict[str, Any]] = {}
            self.customers: dict[str, dict[str, Any]] = {}
            self._fates: dict[str, TestInstrument] = {}
            self._idempotency: dict[tuple[str, str], tuple[str, str, dict[str, str], _Response]] = {}
            self._ids = itertools.count(1)
            self._fail_next: list[int] = []

    def fail_next(self, count: int = 1, status: int = 500) -> None:
        """Answer the next `count` requests with an api_error of `status`, before doing anything."""
        with self._lock:
            self._fail_next.extend([status] * count)

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and r.path == path]

    def settle(self, intent_id: str, succeed: bool | None = None) -> dict[str, Any]:
        """Finish a `processing` intent: succeed/fail as told, or as its test IBAN dictates."""
        with self._lock:
            intent = self.intents[intent_id]
            if intent["status"] != "processing":
                raise ValueError(f"{intent_id} is {intent['status']}, not processing")
            fate = self._fates[intent_id]
            ok = fate.result != "bounces" if succeed is None else succeed
            if ok:
                intent.update(status="succeeded", amount_received=intent["amount"])
            else:
                intent.update(
                    status="requires_payment_method",
                    last_payment_error=_error_object(
                        "card_error",
                        fate.code or "debit_not_authorized",
                        fate.decline_code or "debit_not_authorized",
                        fate.message or "The debit failed.",
                    ),
                )
            return dict(intent)

    # --- request handling (called from handler threads) ------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> _Response:
        parts = urlsplit(target)
        path = parts.path
        form = dict(parse_qsl(body.decode() if method == "POST" else parts.query, keep_blank_values=True))
        with self._lock:
            response = self._dispatch(method, path, headers, form)
            self.requests.append(RecordedRequest(method, path, headers, form, response.status))
        response.headers.setdefault("Request-Id", f"req_fake_{next(self._ids):06d}")
        return response

    def _dispatch(self, method: str, path: str, headers: dict[str, str], form: dict[str, str]) -> _Response:
        if self._fail_next:
            status = self._fail_next.pop(0)
            return _Response(status, {"error": {"type": "api_error", "message": "Injected server error."}})
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return _error_response(401, type="invalid_request_error", message="You did not provide an API key.")
        if auth[len("Bearer ") :] != self.api_key:
            return _error_response(
                401, type="invalid_request_error", message=f"Invalid API Key provided: {_mask(auth[7:])}"
            )
        key = headers.get("idempotency-key")
        if method == "POST" and key:
            if len(key) > 255:
                return _error_response(
                    400, type="invalid_request_error", message="Idempotency-Key is too long (max 255)."
                )
            seen = self._idempotency.get((self.api_key, key))
            if seen is not None:
                s_method, s_path, s_form, s_response = seen
                if (s_method, s_path, s_form) != (method, path, form):
                    return _error_response(
                        400,
                        type="idempotency_error",
                        message=(
                            "Keys for idempotent requests can only be used with the same parameters "
                            f"they were first used with. Try using a key other than '{key}' if you "
                            "meant to execute a different request."
                        ),
                    )
                return _Response(
                    s_response.status, s_response.body, {"Idempotent-Replayed": "true", "Idempotency-Key": key}
                )
        try:
            response = self._route(method, path, form)
        except StripeErrorResponse as exc:
            response = _Response(exc.status, {"error": exc.error})
        # Like Stripe: results of requests that ran (success or card error) are saved for replay;
        # validation failures, auth failures and server errors are not.
        if method == "POST" and key and response.status in (200, 402):
            self._idempotency[(self.api_key, key)] = (method, path, form, response)
        if key:
            response.headers["Idempotency-Key"] = key
        return response

    def _route(self, method: str, path: str, form: dict[str, str]) -> _Response:
        if method == "POST" and path == "/v1/payment_intents":
            return self._create_intent(form)
        if method == "POST" and path == "/v1/customers":
            return self._create_customer(form)
        m = re.fullmatch(r"/v1/payment_intents/([^/]+)", path)
        if method == "GET" and m:
            intent = self.intents.get(m.group(1))
            if intent is None:
                raise StripeErrorResponse(
                    404,
                    type="invalid_request_error",
                    code="resource_missing",
                    param="intent",
                    message=f"No such payment_intent: '{m.group(1)}'",
                )
            return _Response(200, dict(intent))
        raise StripeErrorResponse(
            404, type="invalid_request_error", message=f"Unrecognized request URL ({method}: {path})."
        )

    def _create_customer(self, form: dict[str, str]) -> _Response:
        cid = f"cus_fake{next(self._ids):06d}"
        customer = {
            "id": cid,
            "object": "customer",
            "email": form.get("email"),
            "name": form.get("name"),
            "metadata": _nested(form, "metadata"),
            "livemode": False,
        }
        self.customers[cid] = customer
        return _Response(200, customer)

    def _create_intent(self, form: dict[str, str]) -> _Response:
        amount = form.get("amount", "")
        if not amount.isdigit() or int(amount) <= 0:
            raise _invalid("amount", "Amount must be a positive integer in the smallest currency unit.")
        currency = form.get("currency", "")
        if not re.fullmatch(r"[a-z]{3}", currency):
            raise _invalid("currency", "Currency must be a lower-case three-letter ISO code.")
        customer = form.get("customer")
        if customer is not None and customer not in self.customers:
            raise _invalid("customer", f"No such customer: '{customer}'", code="resource_missing")

        pm_id, instrument = self._resolve_payment_method(form)
        types = [v for k, v in sorted(form.items()) if k.startswith("payment_method_types[")] or ["card"]
        if instrument is not None and instrument.kind not in types:
            raise _invalid(
                "payment_method",
                f"The PaymentMethod provided ({instrument.kind}) is not allowed for this PaymentIntent.",
                code="payment_intent_incompatible_payment_method",
            )

        pid = f"pi_fake{next(self._ids):06d}"
        intent: dict[str, Any] = {
            "id": pid,
            "object": "payment_intent",
            "amount": int(amount),
            "amount_received": 0,
            "currency": currency,
            "customer": customer,
            "description": form.get("description"),
            "metadata": _nested(form, "metadata"),
            "payment_method": pm_id,
            "payment_method_types": types,
            "capture_method": "automatic",
            "confirmation_method": "automatic",
            "status": "requires_payment_method" if instrument is None else "requires_confirmation",
            "last_payment_error": None,
            "next_action": None,
            "cancellation_reason": None,
            "livemode": False,
        }
        self.intents[pid] = intent
        if instrument is None or form.get("confirm") != "true":
            return _Response(200, dict(intent))

        off_session = form.get("off_session") == "true"
        if instrument.result == "succeeded":
            intent.update(status="succeeded", amount_received=int(amount), latest_charge=f"ch_fake_{pid[7:]}")
            return _Response(200, dict(intent))
        if instrument.result in ("settles", "bounces"):
            intent["status"] = "processing"
            self._fates[pid] = instrument
            return _Response(200, dict(intent))
        if instrument.result == "requires_action" and not off_session:
            intent.update(status="requires_action", next_action={"type": "use_stripe_sdk"})
            return _Response(200, dict(intent))
        # A failed confirmation: the intent stays usable with another method, and the API
        # answers 402 with the error and the intent inside it.
        err = _error_object("card_error", instrument.code, instrument.decline_code, instrument.message)
        intent.update(status="requires_payment_method", last_payment_error=err)
        return _Response(402, {"error": {**err, "payment_intent": dict(intent)}})

    def _resolve_payment_method(self, form: dict[str, str]) -> tuple[str | None, TestInstrument | None]:
        pm = form.get("payment_method")
        if pm:
            instrument = TEST_INSTRUMENTS.get(pm)
            if instrument is None or not pm.startswith("pm_"):
                raise _invalid("payment_method", f"No such PaymentMethod: '{pm}'", code="resource_missing")
            return pm, instrument
        pm_type = form.get("payment_method_data[type]")
        if pm_type is None:
            return None, None
        if pm_type != "sepa_debit":
            raise _invalid(
                "payment_method_data[type]",
                "Sending raw payment details is not supported by this fake; use a pm_ id or alias.",
            )
        iban = form.get("payment_method_data[sepa_debit][iban]", "")
        instrument = TEST_INSTRUMENTS.get(iban)
        if instrument is None or instrument.kind != "sepa_debit":
            raise _invalid(
                "payment_method_data[sepa_debit][iban]", "The IBAN you provided is invalid.",
                code="invalid_bank_account_iban",
            )
        if not form.get("payment_method_data[billing_details][name]"):
            raise _invalid(
                "payment_method_data[billing_details][name]",
                "Missing required param: payment_method_data[billing_details][name].",
            )
        if form.get("confirm") == "true" and not form.get("mandate_data[customer_acceptance][type]"):
            raise _invalid("mandate_data", "A mandate is required to confirm a sepa_debit PaymentIntent.")
        return f"pm_fake_sepa_{iban[-4:]}", instrument


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeStripeServer
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API; requires Content-Length
    # Headers and body go out in two writes; with Nagle on, the second waits ~40 ms for a
    # delayed ACK on every response.
    disable_nagle_algorithm = True

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        response = self.server_fake.handle(self.command, self.path, headers, body)
        payload = json.dumps(response.body).encode()
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _serve
    do_POST = _serve
    do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # keep test output clean; tests read `requests` instead


def _error_object(type_: str, code: str | None, decline_code: str | None, message: str | None) -> dict[str, Any]:
    err = {"type": type_, "code": code, "decline_code": decline_code, "message": message}
    return {k: v for k, v in err.items() if v is not None}


def _error_response(status: int, **error: Any) -> _Response:
    return _Response(status, {"error": error})


def _invalid(param: str, message: str, code: str | None = None) -> StripeErrorResponse:
    return StripeErrorResponse(400, type="invalid_request_error", param=param, message=message, code=code)


def _nested(form: dict[str, str], name: str) -> dict[str, str]:
    prefix = f"{name}["
    return {k[len(prefix) : -1]: v for k, v in form.items() if k.startswith(prefix) and k.endswith("]")}


def _mask(key: str) -> str:
    return ("*" * max(len(key) - 4, 0)) + key[-4:]
