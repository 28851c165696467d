"""OssClient over TMF641 Service Ordering HTTP (the OSS simulator or a real OSS).

A fresh httpx.AsyncClient per call keeps the adapter free of event-loop-bound state, so one
instance can be shared by Temporal activities and tests alike.
"""

from typing import Any

import httpx
from pydantic import ValidationError

from adapters.oss.port import Barring, LineState, OssNotFound, OssRejected, OssUnavailable, ServiceOrderRef

SERVICE_ORDERING_PATH = "/tmf-api/serviceOrdering/v4"
SERVICE_INVENTORY_PATH = "/tmf-api/serviceInventory/v4"

# These 4xx statuses mean "not now" rather than "never", so they are retried like a 5xx.
RETRYABLE_CLIENT_STATUSES = frozenset({408, 425, 429})


class HttpOssClient:
    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        callback_url: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`base_url` is the server root (the TMF641 base path is added unless present); `transport` is for tests."""
        root = base_url.rstrip("/").removesuffix(SERVICE_ORDERING_PATH)
        self._base_url = root + SERVICE_ORDERING_PATH
        self._inventory_url = root + SERVICE_INVENTORY_PATH
        self._timeout = httpx.Timeout(timeout_s)
        self._callback_url = callback_url
        self._transport = transport

    async def submit_activation(
        self, *, external_id: str, msisdn: str, product_offering_id: str, customer_id: str
    ) -> ServiceOrderRef:
        return await self._submit(
            external_id,
            "add",
            {"msisdn": msisdn, "productOfferingId": product_offering_id, "customerId": customer_id},
        )

    async def set_barring(self, *, external_id: str, msisdn: str, barring: Barring) -> ServiceOrderRef:
        return await self._submit(external_id, "modify", {"msisdn": msisdn, "barring": barring})

    async def set_roaming_data_barring(self, *, external_id: str, msisdn: str, barred: bool) -> ServiceOrderRef:
        return await self._submit(external_id, "modify", {"msisdn": msisdn, "roamingDataBarred": "true" if barred else "false"})

    async def terminate_service(self, *, external_id: str, msisdn: str) -> ServiceOrderRef:
        return await self._submit(external_id, "delete", {"msisdn": msisdn})

    async def get_service_order(self, service_order_id: str) -> ServiceOrderRef:
        body = await self._request("GET", f"/serviceOrder/{service_order_id}")
        return _order_ref(body)

    async def get_line(self, msisdn: str) -> LineState:
        body = await self._request("GET", f"/service/{msisdn}", base=self._inventory_url)
        try:
            values = {c["name"]: c["value"] for c in body.get("serviceCharacteristic") or []}
            return LineState(msisdn=values.get("msisdn", msisdn), state=body["state"], barring=values.get("barring", "none"),
                             roaming_data_barred=_flag(values.get("roamingDataBarred", False)))
        except (AttributeError, KeyError, TypeError, ValidationError) as exc:
            raise OssUnavailable(f"unreadable service in response: {str(body)[:200]}") from exc

    async def cancel_service_order(self, *, service_order_id: str, reason: str) -> None:
        # The OSS treats cancelling a cancelled order as success, which makes this safe to repeat.
        await self._request(
            "POST",
            "/cancelServiceOrder",
            json={
                "serviceOrder": {"id": service_order_id, "@referredType": "ServiceOrder"},
                "cancellationReason": reason,
                "@type": "CancelServiceOrder",
            },
        )

    async def _submit(self, external_id: str, action: str, characteristics: dict[str, str]) -> ServiceOrderRef:
        """POST a one-item service order; the externalId makes a retried POST return the same order."""
        order: dict[str, Any] = {
            "externalId": external_id,
            "serviceOrderItem": [
                {
                    "id": "1",
                    "action": action,
                    "service": {
                        "serviceCharacteristic": [{"name": k, "value": v} for k, v in characteristics.items()],
                        "@type": "Service",
                    },
                    "@type": "ServiceOrderItem",
                }
            ],
            "@type": "ServiceOrder",
        }
        if self._callback_url is not None:
            order["callbackUrl"] = self._callback_url  # simulator extension, ignored by TMF servers
        return _order_ref(await self._request("POST", "/serviceOrder", json=order))

    async def _request(self, method: str, path: str, *, json: Any = None, base: str | None = None) -> Any:
        try:
            async with httpx.AsyncClient(timeout=self._timeout, transport=self._transport) as client:
                response = await client.request(method, (base or self._base_url) + path, json=json)
        except httpx.HTTPError as exc:
            raise OssUnavailable(f"{method} {path}: {exc!r}") from exc
        if response.status_code >= 500 or response.status_code in RETRYABLE_CLIENT_STATUSES:
            raise OssUnavailable(f"{method} {path}: HTTP {response.status_code}: {response.text[:500]}")
        if response.status_code >= 400:
            raise _rejection(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise OssUnavailable(f"{method} {path}: response is not JSON") from exc


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise TypeError(f"not a boolean: {value!r}")


def _rejection(response: httpx.Response) -> OssRejected:
    code, reason = f"http{response.status_code}", response.text[:500]
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        if "code" in body or "reason" in body:
            code = str(body.get("code", code))
            reason = str(body.get("reason", reason))
        elif "detail" in body:  # FastAPI's 422 validation error
            code, reason = "invalidRequest", str(body["detail"])
    error_type = OssNotFound if response.status_code == 404 else OssRejected
    return error_type(code, reason, status_code=response.status_code)


def _order_ref(body: Any) -> ServiceOrderRef:
    try:
        if not isinstance(body, dict):
            raise TypeError("not an object")
        return ServiceOrderRef(id=body["id"], external_id=body.get("externalId") or "", state=body["state"])
    except (KeyError, TypeError, ValidationError) as exc:
        # An answer o2c cannot read is treated like no answer: the call is retried later.
        raise OssUnavailable(f"unreadable service order in response: {str(body)[:200]}") from exc
