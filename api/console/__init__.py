"""The staff console (/console, server-rendered, docs/console.md) and the customer audit API."""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import Response

STATIC = Path(__file__).resolve().parent / "static"


def install(app: FastAPI) -> None:
    from api.console import audit_api, routes

    app.include_router(audit_api.router)
    app.include_router(routes.router)
    routes.install_handlers(app)
    css = (STATIC / "console.css").read_bytes()

    @app.get("/console/static/console.css", include_in_schema=False)
    async def console_css() -> Response:
        return Response(css, media_type="text/css", headers={"Cache-Control": "public, max-age=300"})
