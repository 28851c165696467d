"""Delivers ServiceOrderStateChangeEvents to o2c, retrying briefly, then giving up.

Giving up is safe because o2c polls the order as a fallback. Retries reuse the same
eventId, so the receiver can drop duplicates.
"""

import asyncio
import logging
import uuid

import httpx

from oss_sim.clock import utc_now_iso
from oss_sim.settings import SimSettings

log = logging.getLogger(__name__)

EVENT_TYPE = "ServiceOrderStateChangeEvent"


def state_change_event(*, order_id: str, href: str, external_id: str | None, state: str) -> dict[str, object]:
    return {
        "eventId": str(uuid.uuid4()),
        "eventTime": utc_now_iso(),
        "eventType": EVENT_TYPE,
        "event": {"serviceOrder": {"id": order_id, "href": href, "externalId": external_id, "state": state}},
    }


class CallbackSender:
    def __init__(self, settings: SimSettings) -> None:
        self._settings = settings

    def _headers(self) -> dict[str, str]:
        if self._settings.callback_api_key:
            return {"X-API-Key": self._settings.callback_api_key}
        return {}

    async def deliver(self, url: str, event: dict[str, object]) -> bool:
        """POST the event; True once the receiver answered 2xx."""
        pause_s = self._settings.callback_backoff_s
        async with httpx.AsyncClient(timeout=self._settings.callback_timeout_s) as client:
            for attempt in range(1, self._settings.callback_attempts + 1):
                try:
                    response = await client.post(url, json=event, headers=self._headers())
                except httpx.TransportError as exc:
                    log.info("callback %s attempt %d failed: %r", event["eventId"], attempt, exc)
                else:
                    if response.is_success:
                        return True
                    # A 4xx means the receiver understood and refused; repeating will not help.
                    if response.status_code < 500:
                        log.warning("callback %s refused with %d", event["eventId"], response.status_code)
                        return False
                    log.info("callback %s attempt %d got %d", event["eventId"], attempt, response.status_code)
                if attempt < self._settings.callback_attempts:
                    await asyncio.sleep(pause_s)
                    pause_s *= 2
        log.warning("callback %s given up after %d attempts", event["eventId"], self._settings.callback_attempts)
        return False
