"""What can go wrong in a service, independent of HTTP. The API maps each class to a status code
(api.errors); a CLI or a file import can map them to its own output."""
from __future__ import annotations

from domain.orders import FieldError


class ServiceError(Exception):
    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class NotFound(ServiceError):
    code = "not_found"

    def __init__(self, resource: str, resource_id: str) -> None:
        super().__init__(f"no {resource} with id {resource_id!r}")
        self.resource = resource
        self.resource_id = resource_id


class Invalid(ServiceError):
    """The request is well-formed but refers to things that do not exist or may not be combined."""

    code = "invalid_request"

    def __init__(self, errors: list[FieldError], message: str | None = None, *, code: str | None = None) -> None:
        super().__init__(message or "; ".join(f"{e.field}: {e.message}" for e in errors), code=code)
        self.errors = errors


class Conflict(ServiceError):
    code = "conflict"


class Unavailable(ServiceError):
    """A dependency (Temporal) could not be reached; the caller may retry."""

    code = "unavailable"


class TooLarge(ServiceError):
    code = "too_large"


def field_error(field: str, code: str, message: str) -> FieldError:
    return FieldError(field=field, code=code, message=message)
