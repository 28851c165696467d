"""The o2c HTTP API: TM Forum Open APIs over o2c's services.

Start-up fails fast: a bad catalog, billing profile file or API key list stops the process before
it serves anything, and the database schema is brought up to date. Temporal is connected on first
use so the API can serve reads while Temporal is down."""
from __future__ import annotations

import logging

from fastapi import FastAPI

from adapters.temporal.client import WorkflowGateway, connect
from api import errors
from api.auth import AccessSettings, KeyRing, KeyStore
from api.deps import AppContext, AuditMiddleware
from api.routers import billing_accounts, bills, catalog, customers, health, orders, oss_callback, payments, products, rejected_usage, usage
from api.routers import hub
from api.routers import stripe_webhooks
from api.routers import refunds as refunds_router
from api.routers import dunning as dunning_router
from api.routers import admin_keys
from api import console
from config.catalog_loader import load_catalog
from config.profiles import load_billing_profiles
from config.tariff_loader import check_offerings, load_tariff_book
from config.settings import Settings, get_settings
from persistence.db import migrate
from services.workflows import LazyWorkflows

log = logging.getLogger(__name__)

ROUTERS = (health, customers, billing_accounts, catalog, orders, products, oss_callback, usage, rejected_usage, bills, payments)


def create_app(settings: Settings | None = None, *, workflows: WorkflowGateway | None = None) -> FastAPI:
    settings = settings or get_settings()
    catalog_ = load_catalog(settings.catalog_path)
    tariffs = load_tariff_book()
    check_offerings(catalog_, tariffs)
    profiles = load_billing_profiles()
    keys = KeyRing(settings.api_keys)
    migrate(settings.database_url)

    async def _connect() -> WorkflowGateway:
        client = await connect(settings.temporal_address, settings.temporal_namespace)
        return WorkflowGateway(client, settings.task_queue)

    lazy = LazyWorkflows(gateway=workflows) if workflows is not None else LazyWorkflows(connect=_connect)

    app = FastAPI(
        title="o2c",
        version="0.1.0",
        description="Order-to-cash for telecom operators: TM Forum Open API v4 (TMF620, 622, 629, 635, 637, 641 listener, 666, 676, 678). "
        "Every route except /health and the docs needs an X-API-Key header.",
    )
    access = AccessSettings()  # access control: key store (keys hashed in the database), audit, console (docs/access-control.md)
    store = KeyStore(settings.database_url, keys, cache_s=access.api_key_cache_s)
    store.seed()
    app.state.access = access
    app.state.o2c = AppContext(settings=settings, catalog=catalog_, profiles=profiles, keys=store, workflows=lazy, tariffs=tariffs)
    app.add_middleware(AuditMiddleware)  # every non-GET request is audited (docs/access-control.md)
    errors.install(app)
    for module in ROUTERS:
        app.include_router(module.router)
    app.include_router(hub.router)  # TMF event hubs (docs/events.md)
    app.include_router(refunds_router.router)  # TMF676 refund (finance)
    app.include_router(stripe_webhooks.router)  # POST /webhooks/stripe (signed by Stripe, no API key)
    app.include_router(dunning_router.router)  # staff steering of dunning episodes (docs/dunning.md)
    app.include_router(admin_keys.router)  # /admin/v1/apiKey: create, rotate, revoke (docs/access-control.md)
    console.install(app)  # /console staff console and the customer audit API (docs/console.md)
    log.info("o2c API ready: catalog %s, %d billing profiles", catalog_.version, len(profiles))
    return app
