"""A local HTTP server speaking enough of Stripe's v1 wire format to test StripeGateway with the
real SDK over real HTTP: form-encoded bodies, Bearer auth, Idempotency-Key replay/conflict,
error bodies shaped like Stripe's (type/code/decline_code/param, the PaymentIntent inside a
card error), and the objects o2c uses:

- Customers: create, retrieve, update, search by metadata (`metadata['k']:'v'`);
- PaymentMethods: retrieve, attach (a test alias such as pm_card_visa becomes a new pm_ attached
  to the customer, as in Stripe test mode; declined test cards are refused on attach except
  4000000000000341);
- SetupIntents: SEPA Direct Debit set-up confirmed with mandate_data (online needs ip_address and
  user_agent), creating the PaymentMethod and its Mandate;
- PaymentIntents: create (confirm, off_session), retrieve, list by customer, search by metadata,
  cancel; `processing` SEPA debits are finished by the test (`settle`).
- Refunds: create (of a succeeded PaymentIntent, never more than is left unrefunded: 400
  `amount_too_large` / `charge_already_refunded`), retrieve, list (by `payment_intent`); a card refund succeeds at once, a SEPA
  refund is `pending` until the test calls `settle_refund`. Emits refund.created, charge.refunded,
  refund.updated (and refund.failed).
- Disputes: retrieve; opened and closed by the test (`open_dispute`, `close_dispute`), emitting
  charge.dispute.created and charge.dispute.closed like Stripe. An early fraud inquiry opens with
  `open_dispute(..., status="warning_needs_response")` and either closes (`close_dispute`:
  warning_closed) or escalates (`escalate_dispute`: the same object moves to needs_response,
  emitting charge.dispute.funds_withdrawn and charge.dispute.updated).

Every state change emits an Event like Stripe's (`events`); `webhook_request` turns one into the
body and `Stripe-Signature` header Stripe would POST, signed by hand (HMAC-SHA256 over
"t.payload") rather than by the SDK, so the receiver is checked against the wire format.

Failure injection: `fail_next` answers an error before doing anything (like a failing load
balancer: nothing saved for the key); `drop_next_response` runs the request, saves it for its
idempotency key, then closes the connection without answering (a lost response: the client
cannot know whether it ran). `search_lag` hides new objects from search until
`index_search()`, like Stripe's search index (up to a minute behind). `expire_idempotency_keys`
forgets the saved keys, as Stripe does after 24 hours.

Outcomes follow Stripe's test instruments, taken from the sandbox's table so the sandbox and
this fake can never disagree. Everything the SDK sends is recorded for assertions.

Stdlib http.server in a daemon thread: no event loop to share with pytest-asyncio, starts in
milliseconds, and binds 127.0.0.1 on a free port.
"""
from __future__ import annotations

import copy
import hashlib
import hmac
import itertools
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from adapters.payments.sandbox import TEST_INSTRUMENTS, TestInstrument, alias_brand, alias_last4

DEFAULT_API_KEY = "sk_test_o2c_fake_0123456789"
DEFAULT_WEBHOOK_SECRET = "whsec_o2c_fake_0123456789abcdef"
API_VERSION = "2025-06-30.basil"
# Object ids are unique across resets and servers, like Stripe's: tests that share a database
# must never see the same event or intent id twice.
_RUN = secrets.token_hex(3)
_SEQUENCE = itertools.count(1)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    form: dict[str, str]  # flat Stripe keys, e.g. "metadata[invoice_id]"
    status: int  # what the fake answered (0: the connection was dropped instead)

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")


@dataclass
class _Response:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection instead of answering


class StripeErrorResponse(Exception):
    def __init__(self, status: int, **error: Any):
        self.status = status
        self.error = {k: v for k, v in error.items() if v is not None}


def sign_payload(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header value: t=<unix time>,v1=<hex HMAC-SHA256(secret, "t.payload")>."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


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
        """Forget all state (objects, events, idempotency keys, recorded requests, injections)."""
        with self._lock:
            self.requests: list[RecordedRequest] = []
            self.intents: dict[str, dict[str, Any]] = {}
            self.customers: dict[str, dict[str, Any]] = {}
            self.payment_methods: dict[str, dict[str, Any]] = {}
            self.setup_intents: dict[str, dict[str, Any]] = {}
            self.mandates: dict[str, dict[str, Any]] = {}
            self.events: list[dict[str, Any]] = []
            self.refunds: dict[str, dict[str, Any]] = {}
            self.disputes: dict[str, dict[str, Any]] = {}
            self._pm_instrument: dict[str, str] = {}  # saved pm id -> TEST_INSTRUMENTS key
            self._fates: dict[str, TestInstrument] = {}
            self._idempotency: dict[tuple[str, str], tuple[str, str, dict[str, str], _Response]] = {}
            self._fail_next: list[int] = []
            self._drop_next = 0
            self.search_lag = False
            self._unindexed: set[str] = set()

    def fail_next(self, count: int = 1, status: int = 500) -> None:
        """Answer the next `count` requests with an api_error of `status`, before doing anything."""
        with self._lock:
            self._fail_next.extend([status] * count)

    def drop_next_response(self, count: int = 1) -> None:
        """Run the next `count` requests, then close their connections without an answer."""
        with self._lock:
            self._drop_next += count

    def expire_idempotency_keys(self) -> None:
        """Stripe's idempotency window (24 h) passes: a key sent again runs its request again."""
        with self._lock:
            self._idempotency.clear()

    def index_search(self) -> None:
        """Make every object searchable (the search index caught up)."""
        with self._lock:
            self._unindexed.clear()

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and r.path == path]

    def settle(self, intent_id: str, succeed: bool | None = None) -> dict[str, Any]:
        """Finish a `processing` intent: succeed/fail as told, or as its test IBAN dictates.
        Emits payment_intent.succeeded or payment_intent.payment_failed, like Stripe."""
        with self._lock:
            intent = self.intents[intent_id]
            if intent["status"] != "processing":
                raise ValueError(f"{intent_id} is {intent['status']}, not processing")
            fate = self._fates[intent_id]
            ok = fate.result != "bounces" if succeed is None else succeed
            if ok:
                intent.update(status="succeeded", amount_received=intent["amount"])
                self._emit("payment_intent.succeeded", intent)
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
                self._emit("payment_intent.payment_failed", intent)
            return copy.deepcopy(intent)

    def settle_refund(self, refund_id: str, succeed: bool = True, failure_reason: str = "lost_or_stolen_card") -> dict[str, Any]:
        """Finish a `pending` refund (emits refund.updated, and refund.failed when it fails)."""
        with self._lock:
            refund = self.refunds[refund_id]
            if refund["status"] != "pending":
                raise ValueError(f"{refund_id} is {refund['status']}, not pending")
            if succeed:
                refund["status"] = "succeeded"
            else:
                refund.update(status="failed", failure_reason=failure_reason)
                self.intents[refund["payment_intent"]]["amount_refunded"] -= refund["amount"]
                self._emit("refund.failed", refund)
            self._emit("refund.updated", refund)
            return copy.deepcopy(refund)

    def open_dispute(self, intent_id: str, reason: str = "fraudulent", amount: int | None = None,
                     status: str = "needs_response") -> dict[str, Any]:
        """The cardholder's bank disputes a succeeded payment: emits charge.dispute.created. With a `warning_*`
        status it is an early fraud inquiry: no money is withdrawn (no balance transaction) until it escalates."""
        with self._lock:
            intent = self.intents[intent_id]
            dispute_id = self._new_id("dp")
            dispute = {
                "id": dispute_id, "object": "dispute", "created": self._created(dispute_id),
                "amount": intent["amount"] if amount is None else amount, "currency": intent["currency"],
                "charge": intent["latest_charge"], "payment_intent": intent_id, "reason": reason,
                "status": status, "is_charge_refundable": status.startswith("warning_"), "livemode": False, "metadata": {},
                "balance_transactions": [] if status.startswith("warning_") else [
                    {"object": "balance_transaction", "fee": 1500, "type": "adjustment"}],
            }
            self.disputes[dispute_id] = dispute
            self._emit("charge.dispute.created", dispute)
            return copy.deepcopy(dispute)

    def escalate_dispute(self, dispute_id: str) -> dict[str, Any]:
        """An inquiry becomes a chargeback: the same dispute moves to needs_response and the money is withdrawn."""
        with self._lock:
            dispute = self.disputes[dispute_id]
            if not dispute["status"].startswith("warning_") or dispute["status"] == "warning_closed":
                raise ValueError(f"{dispute_id} is {dispute['status']}, not an open inquiry")
            dispute.update(status="needs_response", is_charge_refundable=False,
                           balance_transactions=[{"object": "balance_transaction", "fee": 1500, "type": "adjustment"}])
            self._emit("charge.dispute.funds_withdrawn", dispute)
            self._emit("charge.dispute.updated", dispute)
            return copy.deepcopy(dispute)

    def close_dispute(self, dispute_id: str, won: bool = False) -> dict[str, Any]:
        """Closes a dispute won or lost; an inquiry closes `warning_closed` (won is then ignored)."""
        with self._lock:
            dispute = self.disputes[dispute_id]
            dispute["status"] = "warning_closed" if dispute["status"].startswith("warning_") else ("won" if won else "lost")
            self._emit("charge.dispute.closed", dispute)
            return copy.deepcopy(dispute)

    def revoke_mandate(self, mandate_id: str) -> dict[str, Any]:
        """The debtor's bank cancels the SEPA mandate: emits mandate.updated."""
        with self._lock:
            mandate = self.mandates[mandate_id]
            mandate["status"] = "inactive"
            self._emit("mandate.updated", mandate)
            return copy.deepcopy(mandate)

    def events_for(self, object_id: str, type_: str | None = None) -> list[dict[str, Any]]:
        """Events about one object (oldest first), optionally of one type."""
        with self._lock:
            return [copy.deepcopy(e) for e in self.events
                    if e["data"]["object"].get("id") == object_id and (type_ is None or e["type"] == type_)]

    def webhook_request(
        self, event: dict[str, Any], secret: str = DEFAULT_WEBHOOK_SECRET, *, timestamp: int | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers Stripe would POST to a webhook endpoint for `event`."""
        body = json.dumps(event, indent=2).encode()
        return body, {
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": sign_payload(body, secret, timestamp),
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        }

    # --- request handling (called from handler threads) ------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> _Response:
        parts = urlsplit(target)
        path = parts.path
        form = dict(parse_qsl(body.decode() if method == "POST" else parts.query, keep_blank_values=True))
        with self._lock:
            response = self._dispatch(method, path, headers, form)
            if self._drop_next and not response.drop:
                self._drop_next -= 1
                response.drop = True
            self.requests.append(RecordedRequest(method, path, headers, form, 0 if response.drop else response.status))
        response.headers.setdefault("Request-Id", self._new_id("req"))
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
        # validation failures, auth failures and injected errors are not.
        if method == "POST" and key and response.status in (200, 402):
            self._idempotency[(self.api_key, key)] = (method, path, form, response)
        if key:
            response.headers["Idempotency-Key"] = key
        return response

    def _route(self, method: str, path: str, form: dict[str, str]) -> _Response:
        if path == "/v1/payment_intents":
            if method == "POST":
                return self._create_intent(form)
            return self._list(self.intents, "/v1/payment_intents", form, customer=form.get("customer"))
        if method == "GET" and path == "/v1/payment_intents/search":
            return self._search(self.intents, path, form)
        if m := re.fullmatch(r"/v1/payment_intents/([^/]+)/cancel", path):
            return self._cancel_intent(self._get(self.intents, m.group(1), "payment_intent", "intent"), form)
        if m := re.fullmatch(r"/v1/payment_intents/([^/]+)", path):
            if method == "GET":
                return _Response(200, copy.deepcopy(self._get(self.intents, m.group(1), "payment_intent", "intent")))
        if path == "/v1/refunds" and method == "POST":
            return self._create_refund(form)
        if path == "/v1/refunds" and method == "GET":
            return self._list_refunds(form)
        if m := re.fullmatch(r"/v1/refunds/([^/]+)", path):
            if method == "GET":
                return _Response(200, copy.deepcopy(self._get(self.refunds, m.group(1), "refund", "id")))
        if m := re.fullmatch(r"/v1/mandates/([^/]+)", path):
            if method == "GET":
                return _Response(200, copy.deepcopy(self._get(self.mandates, m.group(1), "mandate", "id")))
        if m := re.fullmatch(r"/v1/disputes/([^/]+)", path):
            if method == "GET":
                return _Response(200, copy.deepcopy(self._get(self.disputes, m.group(1), "dispute", "dispute")))
        if path == "/v1/customers" and method == "POST":
            return self._create_customer(form)
        if method == "GET" and path == "/v1/customers/search":
            return self._search(self.customers, path, form)
        if m := re.fullmatch(r"/v1/customers/([^/]+)", path):
            customer = self._get(self.customers, m.group(1), "customer", "id")
            if method == "POST":
                for name in ("email", "name", "description"):
                    if name in form:
                        customer[name] = form[name] or None
                customer["metadata"].update(_nested(form, "metadata"))
            return _Response(200, copy.deepcopy(customer))
        if m := re.fullmatch(r"/v1/payment_methods/([^/]+)/attach", path):
            return self._attach(m.group(1), form)
        if m := re.fullmatch(r"/v1/payment_methods/([^/]+)", path):
            if method == "GET":
                return _Response(200, copy.deepcopy(self._get(self.payment_methods, m.group(1), "PaymentMethod", "payment_method")))
        if path == "/v1/setup_intents" and method == "POST":
            return self._create_setup_intent(form)
        if m := re.fullmatch(r"/v1/setup_intents/([^/]+)", path):
            if method == "GET":
                return _Response(200, copy.deepcopy(self._get(self.setup_intents, m.group(1), "setup_intent", "intent")))
        raise StripeErrorResponse(
            404, type="invalid_request_error", message=f"Unrecognized request URL ({method}: {path})."
        )

    # --- objects -------------------------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_fake{_RUN}{next(_SEQUENCE):06d}"

    def _created(self, object_id: str) -> int:
        if self.search_lag:
            self._unindexed.add(object_id)
        return int(time.time())

    def _emit(self, type_: str, obj: dict[str, Any]) -> None:
        self.events.append({
            "id": self._new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": type_,
            "data": {"object": copy.deepcopy(obj)},
        })

    @staticmethod
    def _get(table: dict[str, dict[str, Any]], object_id: str, name: str, param: str) -> dict[str, Any]:
        found = table.get(object_id)
        if found is None:
            raise StripeErrorResponse(
                404, type="invalid_request_error", code="resource_missing", param=param,
                message=f"No such {name}: '{object_id}'",
            )
        return found

    def _list(self, table: dict[str, dict[str, Any]], url: str, form: dict[str, str], *, customer: str | None) -> _Response:
        limit = _limit(form)
        rows = [o for o in reversed(table.values()) if customer is None or o.get("customer") == customer]
        return _Response(200, {"object": "list", "url": url, "has_more": len(rows) > limit,
                               "data": copy.deepcopy(rows[:limit])})

    def _list_refunds(self, form: dict[str, str]) -> _Response:
        """GET /v1/refunds: newest first, filtered by payment_intent, paged by limit and starting_after."""
        pid = form.get("payment_intent")
        if pid:
            self._get(self.intents, pid, "payment_intent", "payment_intent")
        rows = [r for r in reversed(self.refunds.values()) if not pid or r["payment_intent"] == pid]
        after = form.get("starting_after")
        if after:
            ids = [r["id"] for r in rows]
            if after not in ids:
                raise _invalid("starting_after", f"No such refund: '{after}'")
            rows = rows[ids.index(after) + 1:]
        limit = _limit(form)
        return _Response(200, {"object": "list", "url": "/v1/refunds", "has_more": len(rows) > limit,
                               "data": copy.deepcopy(rows[:limit])})

    def _search(self, table: dict[str, dict[str, Any]], url: str, form: dict[str, str]) -> _Response:
        clauses = _parse_query(form.get("query", ""))
        limit = _limit(form)
        rows = [o for o in reversed(table.values())
                if o["id"] not in self._unindexed and all(_field(o, f) == v for f, v in clauses)]
        return _Response(200, {"object": "search_result", "url": url, "has_more": len(rows) > limit,
                               "next_page": None, "data": copy.deepcopy(rows[:limit])})

    def _create_customer(self, form: dict[str, str]) -> _Response:
        cid = self._new_id("cus")
        customer = {
            "id": cid,
            "object": "customer",
            "created": self._created(cid),
            "email": form.get("email"),
            "name": form.get("name"),
            "description": form.get("description"),
            "metadata": _nested(form, "metadata"),
            "livemode": False,
        }
        self.customers[cid] = customer
        self._emit("customer.created", customer)
        return _Response(200, copy.deepcopy(customer))

    def _new_payment_method(self, instrument_key: str, instrument: TestInstrument, customer: str | None,
                            billing: dict[str, str]) -> dict[str, Any]:
        pm_id = self._new_id("pm")
        pm: dict[str, Any] = {
            "id": pm_id,
            "object": "payment_method",
            "type": instrument.kind,
            "created": self._created(pm_id),
            "customer": customer,
            "billing_details": {"name": billing.get("name"), "email": billing.get("email")},
            "metadata": {},
            "livemode": False,
        }
        if instrument.kind == "card":
            pm["card"] = {"brand": alias_brand(instrument_key), "last4": alias_last4(instrument_key) or "0000",
                          "exp_month": 12, "exp_year": 2034, "country": "US"}
        else:
            pm["sepa_debit"] = {"country": instrument_key[:2], "bank_code": instrument_key[4:12], "last4": instrument_key[-4:]}
        self.payment_methods[pm_id] = pm
        self._pm_instrument[pm_id] = instrument_key
        if customer is not None:
            self._emit("payment_method.attached", pm)
        return pm

    def _require_customer(self, form: dict[str, str], required: bool) -> str | None:
        customer = form.get("customer")
        if customer is None and required:
            raise _invalid("customer", "Missing required param: customer.")
        if customer is not None and customer not in self.customers:
            raise _invalid("customer", f"No such customer: '{customer}'", code="resource_missing")
        return customer

    def _attach(self, pm_id: str, form: dict[str, str]) -> _Response:
        customer = self._require_customer(form, required=True)
        saved = self.payment_methods.get(pm_id)
        if saved is not None:
            if saved["customer"] not in (None, customer):
                raise _invalid("payment_method", "The payment method you provided has already been attached to a customer.")
            saved["customer"] = customer
            return _Response(200, copy.deepcopy(saved))
        instrument = TEST_INSTRUMENTS.get(pm_id)
        if instrument is None or instrument.kind != "card" or not pm_id.startswith("pm_"):
            raise StripeErrorResponse(404, type="invalid_request_error", code="resource_missing", param="payment_method",
                                      message=f"No such PaymentMethod: '{pm_id}'")
        if not instrument.attaches:
            # Saving a card runs a check with the issuer; a declining card fails it.
            err = _error_object("card_error", instrument.code, instrument.decline_code, instrument.message)
            return _Response(402, {"error": err})
        return _Response(200, copy.deepcopy(self._new_payment_method(pm_id, instrument, customer, {})))

    def _mandate_acceptance(self, form: dict[str, str], prefix: str = "mandate_data[customer_acceptance]") -> dict[str, Any] | None:
        kind = form.get(f"{prefix}[type]")
        if kind is None:
            return None
        if kind not in ("online", "offline"):
            raise _invalid(f"{prefix}[type]", f"Invalid customer_acceptance type: {kind!r}; must be online or offline.")
        acceptance: dict[str, Any] = {"type": kind, "accepted_at": int(form.get(f"{prefix}[accepted_at]") or time.time())}
        if kind == "online":
            ip, agent = form.get(f"{prefix}[online][ip_address]"), form.get(f"{prefix}[online][user_agent]")
            if not ip or not agent:
                raise _invalid(f"{prefix}[online]", "Online mandate acceptance requires ip_address and user_agent.")
            acceptance["online"] = {"ip_address": ip, "user_agent": agent}
        else:
            acceptance["offline"] = {}
        return acceptance

    def _sepa_from_data(self, form: dict[str, str]) -> tuple[str, TestInstrument]:
        iban = form.get("payment_method_data[sepa_debit][iban]", "")
        instrument = TEST_INSTRUMENTS.get(iban)
        if instrument is None or instrument.kind != "sepa_debit":
            raise _invalid("payment_method_data[sepa_debit][iban]", "The IBAN you provided is invalid.",
                           code="invalid_bank_account_iban")
        if not form.get("payment_method_data[billing_details][name]"):
            raise _invalid(
                "payment_method_data[billing_details][name]",
                "Missing required param: payment_method_data[billing_details][name].",
            )
        return iban, instrument

    def _create_setup_intent(self, form: dict[str, str]) -> _Response:
        customer = self._require_customer(form, required=False)
        types = _array(form, "payment_method_types") or ["card"]
        if form.get("payment_method_data[type]") != "sepa_debit" or "sepa_debit" not in types:
            raise _invalid("payment_method_data[type]", "This fake sets up sepa_debit payment methods only; attach cards.")
        iban, instrument = self._sepa_from_data(form)
        confirm = form.get("confirm") == "true"
        acceptance = self._mandate_acceptance(form)
        if confirm and acceptance is None:
            raise _invalid("mandate_data", "A mandate is required to confirm a sepa_debit SetupIntent: send mandate_data.")
        seti_id = self._new_id("seti")
        billing = {"name": form.get("payment_method_data[billing_details][name]", ""),
                   "email": form.get("payment_method_data[billing_details][email]", "")}
        pm = self._new_payment_method(iban, instrument, customer, billing)
        setup: dict[str, Any] = {
            "id": seti_id,
            "object": "setup_intent",
            "created": self._created(seti_id),
            "customer": customer,
            "payment_method": pm["id"],
            "payment_method_types": types,
            "usage": form.get("usage", "off_session"),
            "status": "requires_confirmation",
            "mandate": None,
            "last_setup_error": None,
            "metadata": _nested(form, "metadata"),
            "livemode": False,
        }
        self.setup_intents[seti_id] = setup
        if confirm:
            mandate_id = self._new_id("mandate")
            self.mandates[mandate_id] = {
                "id": mandate_id, "object": "mandate", "payment_method": pm["id"], "status": "active",
                "type": "multi_use", "customer_acceptance": acceptance,
                "payment_method_details": {"type": "sepa_debit", "sepa_debit": {"reference": mandate_id.upper()}},
            }
            setup.update(status="succeeded", mandate=mandate_id)
            self._emit("setup_intent.succeeded", setup)
        return _Response(200, copy.deepcopy(setup))

    def _create_intent(self, form: dict[str, str]) -> _Response:
        amount = form.get("amount", "")
        if not amount.isdigit() or int(amount) <= 0:
            raise _invalid("amount", "Amount must be a positive integer in the smallest currency unit.")
        currency = form.get("currency", "")
        if not re.fullmatch(r"[a-z]{3}", currency):
            raise _invalid("currency", "Currency must be a lower-case three-letter ISO code.")
        customer = self._require_customer(form, required=False)

        pm_id, instrument = self._resolve_payment_method(form, customer)
        types = _array(form, "payment_method_types") or ["card"]
        if instrument is not None and instrument.kind not in types:
            raise _invalid(
                "payment_method",
                f"The PaymentMethod provided ({instrument.kind}) is not allowed for this PaymentIntent.",
                code="payment_intent_incompatible_payment_method",
            )

        pid = self._new_id("pi")
        intent: dict[str, Any] = {
            "id": pid,
            "object": "payment_intent",
            "created": self._created(pid),
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
            "latest_charge": None,
            "next_action": None,
            "cancellation_reason": None,
            "livemode": False,
        }
        self.intents[pid] = intent
        self._emit("payment_intent.created", intent)
        if instrument is None or form.get("confirm") != "true":
            return _Response(200, copy.deepcopy(intent))

        off_session = form.get("off_session") == "true"
        if instrument.result == "succeeded":
            intent.update(status="succeeded", amount_received=int(amount), latest_charge=f"ch_fake_{pid[7:]}")
            self._emit("payment_intent.succeeded", intent)
            return _Response(200, copy.deepcopy(intent))
        if instrument.result in ("settles", "bounces"):
            intent.update(status="processing", latest_charge=f"py_fake_{pid[7:]}")
            self._fates[pid] = instrument
            self._emit("payment_intent.processing", intent)
            return _Response(200, copy.deepcopy(intent))
        if instrument.result == "requires_action" and not off_session:
            intent.update(status="requires_action", next_action={"type": "use_stripe_sdk"})
            self._emit("payment_intent.requires_action", intent)
            return _Response(200, copy.deepcopy(intent))
        # A failed confirmation: the intent stays usable with another method, and the API
        # answers 402 with the error and the intent inside it.
        err = _error_object("card_error", instrument.code, instrument.decline_code, instrument.message)
        intent.update(status="requires_payment_method", last_payment_error=err)
        self._emit("payment_intent.payment_failed", intent)
        return _Response(402, {"error": {**err, "payment_intent": copy.deepcopy(intent)}})

    def _create_refund(self, form: dict[str, str]) -> _Response:
        pid = form.get("payment_intent")
        if not pid:
            raise _invalid("payment_intent", "Missing required param: payment_intent (this fake refunds PaymentIntents only).")
        intent = self._get(self.intents, pid, "payment_intent", "payment_intent")
        if intent["status"] != "succeeded":
            raise _invalid("payment_intent", f"This PaymentIntent ({pid}) does not have a successful charge to refund.",
                           code="charge_not_refundable")
        refunded = intent.get("amount_refunded", 0)
        left = intent["amount"] - refunded
        raw = form.get("amount")
        if raw is not None and (not raw.isdigit() or int(raw) <= 0):
            raise _invalid("amount", "Amount must be a positive integer in the smallest currency unit.")
        amount = int(raw) if raw is not None else left
        if left <= 0:
            raise _invalid("amount", f"Charge {intent['latest_charge']} has already been refunded.", code="charge_already_refunded")
        if amount > left:
            raise _invalid("amount", f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})",
                           code="amount_too_large")
        reason = form.get("reason")
        if reason is not None and reason not in ("duplicate", "fraudulent", "requested_by_customer"):
            raise _invalid("reason", f"Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer")
        refund_id = self._new_id("re")
        sepa = "sepa_debit" in (intent.get("payment_method_types") or [])
        refund = {
            "id": refund_id, "object": "refund", "created": self._created(refund_id), "amount": amount,
            "currency": intent["currency"], "charge": intent["latest_charge"], "payment_intent": pid,
            "reason": reason, "status": "pending" if sepa else "succeeded", "failure_reason": None,
            "metadata": _nested(form, "metadata"),
        }
        self.refunds[refund_id] = refund
        intent["amount_refunded"] = refunded + amount
        self._emit("refund.created", refund)
        charge = {"id": intent["latest_charge"], "object": "charge", "payment_intent": pid, "amount": intent["amount"],
                  "amount_refunded": intent["amount_refunded"], "currency": intent["currency"],
                  "refunded": intent["amount_refunded"] >= intent["amount"]}
        self._emit("charge.refunded", charge)
        return _Response(200, copy.deepcopy(refund))

    def _cancel_intent(self, intent: dict[str, Any], form: dict[str, str]) -> _Response:
        cancelable = ("requires_payment_method", "requires_capture", "requires_confirmation", "requires_action")
        if intent["status"] not in cancelable:
            raise StripeErrorResponse(
                400, type="invalid_request_error", code="payment_intent_unexpected_state",
                message=f"You cannot cancel this PaymentIntent because it has a status of {intent['status']}. "
                f"Only a PaymentIntent with one of the following statuses may be canceled: {', '.join(cancelable)}.",
            )
        intent.update(status="canceled", cancellation_reason=form.get("cancellation_reason"))
        self._emit("payment_intent.canceled", intent)
        return _Response(200, copy.deepcopy(intent))

    def _resolve_payment_method(self, form: dict[str, str], customer: str | None) -> tuple[str | None, TestInstrument | None]:
        pm = form.get("payment_method")
        if pm:
            saved = self.payment_methods.get(pm)
            if saved is not None:
                if saved["customer"] is not None and saved["customer"] != customer:
                    raise _invalid(
                        "payment_method",
                        f"The provided PaymentMethod {pm} is attached to a Customer; pass that Customer "
                        "(customer) with the PaymentIntent.",
                    )
                instrument = TEST_INSTRUMENTS[self._pm_instrument[pm]]
                if instrument.kind == "sepa_debit" and form.get("confirm") == "true":
                    has_mandate = any(m["payment_method"] == pm for m in self.mandates.values())
                    if not has_mandate and self._mandate_acceptance(form) is None:
                        raise _invalid("mandate_data", "A mandate is required to confirm a sepa_debit PaymentIntent.")
                return pm, instrument
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
        iban, instrument = self._sepa_from_data(form)
        if form.get("confirm") == "true" and self._mandate_acceptance(form) is None:
            raise _invalid("mandate_data", "A mandate is required to confirm a sepa_debit PaymentIntent.")
        billing = {"name": form.get("payment_method_data[billing_details][name]", ""),
                   "email": form.get("payment_method_data[billing_details][email]", "")}
        return self._new_payment_method(iban, instrument, None, billing)["id"], instrument


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
        if response.drop:
            self.close_connection = True  # the request ran; its answer is lost
            return
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


_CLAUSE = re.compile(r"\s*(metadata\['([^'\]]+)'\]|[a-z_]+):'((?:[^'\\]|\\.)*)'\s*")


def _parse_query(query: str) -> list[tuple[str, str]]:
    """Stripe search clauses `field:'value'` joined by AND; field is a name or metadata['key']."""
    clauses = []
    for part in re.split(r"\s+AND\s+", query.strip()) if query.strip() else []:
        m = _CLAUSE.fullmatch(part)
        if m is None:
            raise _invalid("query", f"This fake cannot parse the search clause {part!r}.", code="parsing_error")
        name = f"metadata.{m.group(2)}" if m.group(2) else m.group(1)
        clauses.append((name, re.sub(r"\\(.)", r"\1", m.group(3))))
    if not clauses:
        raise _invalid("query", "Missing required param: query.")
    return clauses


def _field(obj: dict[str, Any], name: str) -> Any:
    if name.startswith("metadata."):
        return (obj.get("metadata") or {}).get(name[len("metadata."):])
    return obj.get(name)


def _limit(form: dict[str, str]) -> int:
    raw = form.get("limit", "10")
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise _invalid("limit", "limit must be between 1 and 100.")
    return int(raw)


def _array(form: dict[str, str], name: str) -> list[str]:
    return [v for k, v in sorted(form.items(), key=lambda kv: kv[0]) if re.fullmatch(rf"{re.escape(name)}\[\d+\]", k)]


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
