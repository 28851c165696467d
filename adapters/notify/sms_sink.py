"""A local SMS gateway for development and tests: speaks the JSON REST protocol of adapters/notify/sms.py
and keeps every message in memory instead of sending it.

    POST   /sms        {to, text, idempotencyKey} -> 201 {id}; the same key again -> 200 {id} of the first
                       (another text under a used key -> 409); a number that is not E.164 -> 422
    GET    /messages   every stored message, oldest first (?to=+49... filters by recipient)
    DELETE /messages   forgets them all

Run with `o2c sms-sink` (port O2C_SMS_SINK_PORT, default 8026); `o2c up` starts it."""
from __future__ import annotations

import argparse
import re
import threading
import uuid
from datetime import UTC, datetime

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

E164 = re.compile(r"^\+?[1-9][0-9]{6,14}$")


class SmsIn(BaseModel):
    to: str
    text: str = Field(min_length=1, max_length=1600)
    idempotencyKey: str = Field(min_length=1, max_length=300)  # noqa: N815 - the wire name


def create_app() -> FastAPI:
    app = FastAPI(title="o2c SMS sink")
    lock = threading.Lock()
    messages: list[dict] = []
    by_key: dict[str, dict] = {}

    @app.post("/sms", status_code=201)
    def send(body: SmsIn, response: Response):
        if not E164.match(body.to):
            return JSONResponse(status_code=422, content={"code": "invalid_msisdn", "message": f"{body.to!r} is not an E.164 number"})
        with lock:
            earlier = by_key.get(body.idempotencyKey)
            if earlier is not None:
                if (earlier["to"], earlier["text"]) != (body.to, body.text):
                    return JSONResponse(status_code=409, content={"code": "idempotency_key_reused",
                                                                  "message": "this idempotencyKey was used for another message"})
                response.status_code = 200
                return {"id": earlier["id"]}
            message = {"id": f"sms-{uuid.uuid4()}", "to": body.to, "text": body.text, "idempotencyKey": body.idempotencyKey,
                       "receivedAt": datetime.now(UTC).isoformat()}
            messages.append(message)
            by_key[body.idempotencyKey] = message
            return {"id": message["id"]}

    @app.get("/messages")
    def list_messages(to: str | None = None) -> list[dict]:
        with lock:
            return [m for m in messages if to is None or m["to"] == to]

    @app.delete("/messages", status_code=204)
    def clear() -> None:
        with lock:
            messages.clear()
            by_key.clear()

    return app


def run(host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(create_app(), host=host, port=port, log_level="warning")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="o2c SMS sink")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8026)
    args = parser.parse_args()
    run(args.host, args.port)
