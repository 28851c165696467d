"""Jinja2 for the console: autoescaped templates from api/console/templates. Imported on first use, so
the API starts (and serves everything else) even where the console's template engine is missing."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from starlette.responses import HTMLResponse

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _dt(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if value is None:
        return "–"
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime(fmt) + " UTC"


def _cents(value: int | None, currency: str = "EUR") -> str:
    if value is None:
        return "–"
    sign = "-" if value < 0 else ""
    value = abs(value)
    return f"{sign}{value // 100:,}.{value % 100:02d} {currency}".replace(",", " ")


def _micros(value: int | None) -> str:
    if value is None:
        return "–"
    return f"{(Decimal(value) / Decimal(1_000_000)).quantize(Decimal('0.01'))} EUR"


@lru_cache(maxsize=1)
def environment() -> Any:
    try:
        import jinja2
    except ImportError as exc:  # pragma: no cover - the dependency is pinned; this names it when it is not installed
        raise RuntimeError("the staff console needs the jinja2 package (pip install jinja2)") from exc
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=jinja2.select_autoescape(("html",)),
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["dt"] = _dt
    env.filters["cents"] = _cents
    env.filters["micros"] = _micros
    return env


def render(name: str, status_code: int = 200, headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    html = environment().get_template(name).render(**context)
    response = HTMLResponse(html, status_code=status_code, headers=headers)
    # The console shows personal data: never cached, never framed, no sniffing.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Content-Security-Policy"] = ("default-src 'self'; style-src 'self'; img-src 'self' data:; script-src 'none'; "
                                                   "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
    return response
