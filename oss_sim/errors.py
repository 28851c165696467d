"""Errors the simulator answers with, in the TMF Error shape {code, reason, status}."""

from fastapi import Request
from fastapi.responses import JSONResponse


class SimError(Exception):
    """A request the simulator refuses; `code` is the machine-readable reason."""

    def __init__(self, status_code: int, code: str, reason: str, **extra: object) -> None:
        super().__init__(reason)
        self.status_code = status_code
        self.code = code
        self.reason = reason
        self.extra = extra

    def body(self) -> dict[str, object]:
        return {"code": self.code, "reason": self.reason, "status": str(self.status_code), **self.extra}


async def sim_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SimError)
    return JSONResponse(status_code=exc.status_code, content=exc.body())
