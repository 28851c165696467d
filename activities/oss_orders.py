"""One OSS service order from inside an activity, the way every barring / termination loop handles it: the OSS
being down fails the attempt (a retryable ApplicationError `OssUnavailable`: Temporal retries with the same
externalId, which the OSS replays), a refusal is the caller's to report, and an order not yet completed fails
the attempt as `OssPending` (the retry replays it until the OSS has completed it)."""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from temporalio.exceptions import ApplicationError

from adapters.oss.port import OssRejected, OssUnavailable, ServiceOrderRef


async def place_order(order: Callable[[], Awaitable[ServiceOrderRef]], what: str = "order") -> OssRejected | None:
    """Places `order` (a call of the OSS client keyed by its externalId). Returns None once the OSS completed it,
    or the OssRejected when the OSS refused it; raises ApplicationError OssUnavailable / OssPending otherwise."""
    try:
        ref = await order()
    except OssUnavailable as error:
        raise ApplicationError(f"OSS unavailable: {error}", type="OssUnavailable") from error
    except OssRejected as error:
        return error
    if ref.state != "completed":
        raise ApplicationError(f"{what} {ref.id} is {ref.state}; retrying until it is completed", type="OssPending")
    return None
