"""Console sign-in state: the session cookie, CSRF checks for form posts, and the signed-in staff member.

The session cookie holds a random token (the database keeps its SHA-256); it is HttpOnly, SameSite=Lax,
scoped to /console and Secure when O2C_CONSOLE_COOKIE_SECURE is set. Every form post carries the
session's CSRF token (the login form a double-submit token of its own), and a post whose Origin header
names another site is refused."""
from __future__ import annotations

import hmac
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

from urllib.parse import quote

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from api.deps import audit_draft, get_context
from services import staff
from services.query import in_transaction

SESSION_COOKIE = "o2c_console"
LOGIN_CSRF_COOKIE = "o2c_login_csrf"
FLASH_COOKIE = "o2c_flash"
COOKIE_PATH = "/console"


class NotSignedIn(Exception):
    """Raised by console routes; answered with a redirect to the login page."""


class CsrfFailure(Exception):
    pass


def access_settings(request: Request):
    return request.app.state.access


def set_session_cookie(request: Request, response: Response, token: str, ttl: timedelta) -> None:
    response.set_cookie(SESSION_COOKIE, token, max_age=int(ttl.total_seconds()), path=COOKIE_PATH, httponly=True, samesite="lax",
                        secure=access_settings(request).console_cookie_secure)


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="lax", secure=access_settings(request).console_cookie_secure)


def set_login_csrf(request: Request, response: Response, token: str) -> None:
    """The login form's double-submit token, in an HttpOnly cookie (the form carries the same value)."""
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, path=COOKIE_PATH, httponly=True, samesite="strict",
                        secure=access_settings(request).console_cookie_secure)


async def current_session(request: Request) -> staff.ConsoleSession | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    ctx = get_context(request)
    found = await run_in_threadpool(in_transaction, ctx.db_url, lambda s: staff.resolve_session(s, token))
    if found is not None:
        request.state.actor = found.actor
        draft = audit_draft(request)
        if draft is not None:
            draft.actor = found.actor
    return found


async def require_session(request: Request) -> staff.ConsoleSession:
    found = await current_session(request)
    if found is None:
        raise NotSignedIn()
    return found


def same_origin(request: Request) -> bool:
    """A browser sends Origin with a cross-site POST; when it is there it must be this site."""
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser, or an old one: the CSRF token and SameSite still apply
    if origin == "null":
        return False
    parts = urlsplit(origin)
    return parts.netloc == request.headers.get("host", "") or parts.netloc == request.url.netloc


async def form_data(request: Request) -> dict[str, str]:
    """The posted form (application/x-www-form-urlencoded), first value of each field."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return {name: values[0] for name, values in parse_qs(body, keep_blank_values=True).items()}


def check_csrf(request: Request, form: dict[str, str], expected: str | None) -> None:
    supplied = form.get("csrf_token", "")
    if not same_origin(request) or not expected or not supplied or not hmac.compare_digest(supplied.encode(), expected.encode()):
        raise CsrfFailure()


def login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    next_param = target if request.method == "GET" and target.startswith("/console") else "/console"
    return RedirectResponse(f"/console/login?next={quote(next_param, safe='/')}", status_code=303)


def safe_next(value: str | None) -> str:
    """Only a console path (never another site) may be the place to go after login."""
    if not value or not value.startswith("/console") or value.startswith("//") or "\\" in value:
        return "/console"
    return value


def set_flash(request: Request, response: Response, message: str) -> None:
    response.set_cookie(FLASH_COOKIE, message[:300].encode("utf-8").hex(), max_age=60, path=COOKIE_PATH, httponly=True, samesite="lax",
                        secure=access_settings(request).console_cookie_secure)


def read_flash(request: Request) -> str | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        return bytes.fromhex(raw).decode("utf-8")
    except ValueError:
        return None


def clear_flash(response: Response) -> None:
    response.delete_cookie(FLASH_COOKIE, path=COOKIE_PATH)
