"""One error shape for every 4xx/5xx (TMF Error plus a per-field `errors` list), and the mapping
from service errors to HTTP status codes."""
from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from domain.orders import FieldError
from services.errors import Conflict, Invalid, NotFound, ServiceError, TooLarge, Unavailable

log = logging.getLogger(__name__)


class CodedValueError(ValueError):
    """Raised by request-model validators; pydantic wraps it and we read the code back out."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, errors: list[FieldError] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors or []
        self.headers = headers


def error_response(status: int, code: str, message: str, errors: list[FieldError] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {
        "@type": "Error",
        "code": code,
        "reason": HTTPStatus(status).phrase,
        "message": message,
        "status": str(status),
    }
    if errors:
        body["errors"] = [e.model_dump() for e in errors]
    return JSONResponse(body, status_code=status, headers=headers)


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """('body', 'productOrderItem', 0, 'productOffering', 'id') -> 'productOrderItem[0].productOffering.id'."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif str(part).startswith("function-") or str(part) in ("tagged-union",):
            continue  # pydantic's internal validator names say nothing to a client
        else:
            path += ("." if path else "") + str(part)
    return path or "body"


# pydantic error types -> our codes; others pass through unchanged (they are already snake_case).
_PYDANTIC_CODES = {"missing": "required", "extra_forbidden": "unknown_field", "value_error": "invalid", "assertion_error": "invalid"}


def pydantic_errors(raw: list[dict[str, Any]]) -> list[FieldError]:
    out = []
    for err in raw:
        code = _PYDANTIC_CODES.get(err.get("type", ""), err.get("type", "invalid"))
        message = str(err.get("msg", "invalid value"))
        # Our validators raise CodedValueError to give the client a precise code.
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, CodedValueError):
            code, message = ctx_error.code, ctx_error.message
        out.append(FieldError(field=field_path(err.get("loc", ())), code=code, message=message))
    return out


async def _validation_handler(_request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = pydantic_errors(list(exc.errors()))
    if any(e.code == "json_invalid" for e in errors):
        return error_response(400, "malformed_json", "the request body is not valid JSON", errors)
    return error_response(422, "invalid_request", "the request is not valid; see errors", errors)


async def _api_error_handler(_request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message, exc.errors, exc.headers)


async def _service_error_handler(_request: Request, exc: ServiceError) -> JSONResponse:
    if isinstance(exc, NotFound):
        return error_response(404, exc.code, exc.message)
    if isinstance(exc, Invalid):
        return error_response(422, exc.code, exc.message, exc.errors)
    if isinstance(exc, Conflict):
        return error_response(409, exc.code, exc.message)
    if isinstance(exc, TooLarge):
        return error_response(413, exc.code, exc.message)
    if isinstance(exc, Unavailable):
        return error_response(503, exc.code, exc.message, headers={"Retry-After": "5"})
    return error_response(400, exc.code, exc.message)


_HTTP_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed", 406: "not_acceptable", 415: "unsupported_media_type"}


async def _http_handler(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    return error_response(exc.status_code, code, message, headers=getattr(exc, "headers", None))


async def _unexpected_handler(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "an unexpected error occurred; it has been logged")


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(ApiError, _api_error_handler)
    app.add_exception_handler(ServiceError, _service_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(Exception, _unexpected_handler)
