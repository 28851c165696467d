"""The fake Stripe server (tests/fakes/stripe_server.py) as its own OS process, so its record of charges
outlives any worker the test kills. Run: `python tests/reliability/stripe_process.py`; it prints its base URL
on the first line of stdout.

Control endpoints (not Stripe's; under /__control):
- POST /__control/hold  {"phase": "before" | "after", "seconds": s}: the next POST /v1/payment_intents is held
  for up to s seconds, either before it runs (the request reached the gateway, nothing is committed yet) or after
  it ran (the charge is committed, its answer not sent yet). POST /__control/release ends a hold early.
- GET /__control/state: whether a held request arrived / was committed, every intent (id, status, metadata) and
  every POST /v1/payment_intents (idempotency key, status answered, whether it replayed an earlier result).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fakes.stripe_server import FakeStripeServer, _Response  # noqa: E402

CHARGE_PATH = "/v1/payment_intents"


class HoldingStripeServer(FakeStripeServer):
    def reset(self) -> None:
        super().reset()
        self._hold: dict[str, Any] | None = None
        self._arrived = threading.Event()
        self._committed = threading.Event()
        self._release = threading.Event()
        self.charge_log: list[dict[str, Any]] = []

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> _Response:
        if target.startswith("/__control/"):
            return self._control(method, target, body)
        hold = self._take_hold() if (method, target.split("?")[0]) == ("POST", CHARGE_PATH) else None
        if hold is not None:
            self._arrived.set()
            if hold["phase"] == "before":
                self._release.wait(hold["seconds"])
        before = len(self.requests)
        response = super().handle(method, target, headers, body)
        if (method, target.split("?")[0]) == ("POST", CHARGE_PATH):
            with self._lock:
                self.charge_log.append({"idempotencyKey": headers.get("idempotency-key"), "status": response.status,
                                        "replayed": response.headers.get("Idempotent-Replayed") == "true", "index": before})
        if hold is not None and hold["phase"] == "after":
            self._committed.set()
            self._release.wait(hold["seconds"])
        return response

    def _take_hold(self) -> dict[str, Any] | None:
        with self._lock:
            hold, self._hold = self._hold, None
            return hold

    def _control(self, method: str, target: str, body: bytes) -> _Response:
        if target == "/__control/hold" and method == "POST":
            data = json.loads(body or b"{}")
            with self._lock:
                self._hold = {"phase": data.get("phase", "after"), "seconds": float(data.get("seconds", 10))}
                self._arrived.clear()
                self._committed.clear()
                self._release.clear()
            return _Response(200, {"held": self._hold})
        if target == "/__control/release" and method == "POST":
            self._release.set()
            return _Response(200, {"released": True})
        if target == "/__control/state":
            with self._lock:
                intents = [{"id": i["id"], "status": i["status"], "amount": i["amount"], "metadata": i["metadata"]} for i in self.intents.values()]
                return _Response(200, {"arrived": self._arrived.is_set(), "committed": self._committed.is_set(), "intents": intents,
                                       "charges": list(self.charge_log)})
        return _Response(404, {"error": {"type": "invalid_request_error", "message": f"no control endpoint {target}"}})


def main() -> None:
    server = HoldingStripeServer().start()
    print(server.url, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    server.stop()
    os._exit(0)


if __name__ == "__main__":
    main()
