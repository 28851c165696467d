"""The port o2c uses to talk to an OSS (service ordering), independent of transport."""

from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel

Barring = Literal["none", "outgoing", "full"]


class ServiceOrderRef(BaseModel):
    id: str
    external_id: str
    state: str  # TMF641 ServiceOrderStateType, e.g. acknowledged, inProgress, completed, failed


class LineState(BaseModel):
    """A line as the OSS's service inventory (TMF638) has it."""

    msisdn: str
    state: str  # inactive | active | terminated
    barring: Barring
    # Roaming data barred (the EU roaming data cap's cut-off): a partial barring beside `barring`, not a suspension.
    roaming_data_barred: bool = False


class OssRejected(Exception):
    """The OSS refused the request on business grounds (4xx). Retrying will not help."""

    def __init__(self, code: str, reason: str, *, status_code: int | None = None) -> None:
        # args stay (code, reason) so the exception survives pickling and copying.
        super().__init__(code, reason)
        self.code = code
        self.reason = reason
        self.status_code = status_code

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"


class OssNotFound(OssRejected):
    """The OSS does not know the service order (404)."""


class OssUnavailable(Exception):
    """The OSS could not be reached or failed (transport error, timeout, 5xx). Retry later."""


@runtime_checkable
class OssClient(Protocol):
    """Every write is idempotent: repeating a call with the same external_id (or order id) is safe."""

    async def submit_activation(
        self, *, external_id: str, msisdn: str, product_offering_id: str, customer_id: str
    ) -> ServiceOrderRef: ...

    async def get_service_order(self, service_order_id: str) -> ServiceOrderRef: ...

    async def cancel_service_order(self, *, service_order_id: str, reason: str) -> None: ...

    async def set_barring(self, *, external_id: str, msisdn: str, barring: Barring) -> ServiceOrderRef: ...

    async def set_roaming_data_barring(self, *, external_id: str, msisdn: str, barred: bool) -> ServiceOrderRef:
        """Bars or lifts mobile data while roaming only (the roaming data cap's cut-off); leaves `barring` as it is."""
        ...

    async def terminate_service(self, *, external_id: str, msisdn: str) -> ServiceOrderRef: ...

    async def get_line(self, msisdn: str) -> LineState:
        """The line's state and barring in the OSS's inventory (read-only); OssNotFound when it has none."""
        ...
