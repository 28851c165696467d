"""The SMS gateway client: a simple JSON REST gateway (the sink of adapters/notify/sms_sink.py speaks it).

    POST {base}/sms  {"to": "+4915112345678", "text": "...", "idempotencyKey": "..."}  ->  201/200 {"id": "..."}

The gateway is idempotent on `idempotencyKey`: sending the same key again answers with the first message's
id and sends nothing. A text longer than one SMS goes out as parts (domain.sms_text), each with its own key
`<key>:part-<n>/<total>`; the ids of all parts are returned, joined by commas. The gateway being down, slow or
answering 5xx / 429 is NotificationUnavailable (retry with the same key); any other 4xx is
NotificationRejected (the number or the text is refused: retrying changes nothing)."""
from __future__ import annotations

import httpx

from adapters.notify.email import NotificationRejected, NotificationUnavailable
from domain.sms_text import sms_parts


class HttpSmsSender:
    def __init__(self, base_url: str, *, timeout_s: float = 10.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.transport = transport

    async def send(self, *, to: str, text: str, idempotency_key: str) -> str:
        parts = sms_parts(text)
        ids = []
        async with httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout_s, transport=self.transport) as client:
            for number, part in enumerate(parts, start=1):
                key = idempotency_key if len(parts) == 1 else f"{idempotency_key}:part-{number}/{len(parts)}"
                ids.append(await self._post(client, to, part, key))
        return ",".join(ids)

    async def _post(self, client: httpx.AsyncClient, to: str, text: str, key: str) -> str:
        try:
            response = await client.post("/sms", json={"to": to, "text": text, "idempotencyKey": key})
        except httpx.HTTPError as error:
            raise NotificationUnavailable(f"SMS gateway {self.base_url} unreachable: {error}") from error
        if response.status_code >= 500 or response.status_code == 429:
            raise NotificationUnavailable(f"SMS gateway answered {response.status_code}: {response.text[:200]}")
        if response.status_code >= 400:
            raise NotificationRejected(f"SMS gateway refused the message to {to} ({response.status_code}): {response.text[:200]}")
        return str(response.json()["id"])
