"""What the routes get injected: the application context, the caller's role, paging."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader

from api.auth import KeyRing, Principal, allowed
from api.errors import ApiError
from config.settings import Settings
from domain.billing_profile import BillingProfile
from domain.catalog import Catalog
from domain.tariff import TariffBook
from services.query import Page, run_tx
from services.workflows import LazyWorkflows

R = TypeVar("R")


@dataclass
class AppContext:
    settings: Settings
    catalog: Catalog
    profiles: dict[str, BillingProfile]
    keys: KeyRing
    workflows: LazyWorkflows
    tariffs: TariffBook | None = None  # rating tariffs; None: catalog/tariffs.yaml (config.tariff_loader)

    @property
    def db_url(self) -> str:
        return self.settings.database_url

    async def tx(self, fn: Callable[..., R], *args: Any) -> R:
        """fn(session, *args) in one transaction, off the event loop."""
        return await run_tx(self.db_url, fn, *args)


def get_context(request: Request) -> AppContext:
    return request.app.state.o2c


Ctx = Annotated[AppContext, Depends(get_context)]

_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="o2c API key; its role decides what it may do")


def require(resource: str, action: str) -> Callable[..., Principal]:
    """Dependency: the caller's key must exist (else 401) and its role must allow action on resource (else 403)."""

    def check(request: Request, key: str | None = Security(_api_key)) -> Principal:
        role = get_context(request).keys.role_for(key)
        if role is None:
            raise ApiError(401, "unauthorized", "a valid X-API-Key header is required", headers={"WWW-Authenticate": "ApiKey"})
        if not allowed(role, resource, action):
            raise ApiError(403, "forbidden", f"role {role!r} may not {action} {resource}")
        return Principal(role=role)

    return check


def reader(resource: str) -> Any:
    return Depends(require(resource, "read"))


def writer(resource: str) -> Any:
    return Depends(require(resource, "write"))


@dataclass(frozen=True)
class Paging:
    limit: int
    offset: int


def paging(
    limit: Annotated[int, Query(ge=1, le=1000, description="page size")] = 100,
    offset: Annotated[int, Query(ge=0, description="items to skip")] = 0,
) -> Paging:
    return Paging(limit=limit, offset=offset)


PagingDep = Annotated[Paging, Depends(paging)]


def list_response(page: Page, serialise: Callable[[Any], dict[str, Any]]) -> JSONResponse:
    """A TMF list: a JSON array, with the total in X-Total-Count and the page size in X-Result-Count."""
    items = [serialise(item) for item in page.items]
    return JSONResponse(items, headers={"X-Total-Count": str(page.total), "X-Result-Count": str(len(items))})
