"""A CRM-side TMF listener, run as a process of its own (`python -m uvicorn tests.support.listener_app:app`),
for the hub tests: it verifies each delivery's X-O2C-Signature exactly as docs/events.md tells a CRM
to (its own code, not o2c's), records every request, and can be told to fail the next N deliveries.

Several listeners share one process as "mounts": a mount `crm1` has the callback `{url}/crm1`, so
events arrive at `{url}/crm1/listener/<eventType>`. State (mounts, recorded requests) lives in files
under $LISTENER_STATE_DIR, so it survives stopping and starting the process.

Control API (tests only): PUT /_control/{mount} {"secret", "failNext", "failStatus"};
GET /_control/{mount}/events; GET /health."""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

TOLERANCE_S = 300

app = FastAPI(title="test CRM listener")


def _state_dir() -> Path:
    path = Path(os.environ["LISTENER_STATE_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    return path


def _mounts() -> dict[str, dict[str, Any]]:
    file = _state_dir() / "mounts.json"
    return json.loads(file.read_text()) if file.exists() else {}


def _save_mounts(mounts: dict[str, dict[str, Any]]) -> None:
    file = _state_dir() / "mounts.json"
    tmp = file.with_suffix(".tmp")
    tmp.write_text(json.dumps(mounts))
    tmp.replace(file)


def _record(mount: str, entry: dict[str, Any]) -> None:
    with (_state_dir() / f"events-{mount}.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")


def verify(secret: str, body: bytes, header: str | None, now: float) -> str | None:
    """None when the signature is good, else why not."""
    if not header:
        return "no signature"
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return "no timestamp"
    if abs(now - timestamp) > TOLERANCE_S:
        return "timestamp outside tolerance"
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, candidate) for candidate in fields.get("v1", [])):
        return "signature mismatch"
    return None


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "up"}


@app.put("/_control/{mount}")
async def configure(mount: str, request: Request) -> dict[str, Any]:
    body = await request.json()
    mounts = _mounts()
    current = mounts.get(mount, {"secret": None, "failNext": 0, "failStatus": 503})
    current.update({k: body[k] for k in ("secret", "failNext", "failStatus") if k in body})
    mounts[mount] = current
    _save_mounts(mounts)
    return current


@app.get("/_control/{mount}/events")
async def events(mount: str) -> list[dict[str, Any]]:
    file = _state_dir() / f"events-{mount}.jsonl"
    if not file.exists():
        return []
    return [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]


@app.post("/{mount}/listener/{event_name}")
async def listen(mount: str, event_name: str, request: Request) -> JSONResponse:
    raw = await request.body()
    config = _mounts().get(mount)
    if config is None:
        return JSONResponse({"error": "unknown mount"}, status_code=404)
    problem = verify(config["secret"] or "", raw, request.headers.get("X-O2C-Signature"), time.time())
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    entry = {
        "path": event_name,
        "eventId": (body or {}).get("eventId"),
        "eventType": (body or {}).get("eventType"),
        "sequence": request.headers.get("X-O2C-Sequence"),
        "deliveryId": request.headers.get("X-O2C-Delivery-Id"),
        "signatureValid": problem is None,
        "signatureProblem": problem,
        "body": body,
        "receivedAt": datetime.now(timezone.utc).isoformat(),
    }
    if problem is not None:
        entry["answered"] = 401
        _record(mount, entry)
        return JSONResponse({"error": problem}, status_code=401)
    expected_path = (body or {}).get("eventType", "")
    if event_name != expected_path[:1].lower() + expected_path[1:]:
        entry["answered"] = 400
        _record(mount, entry)
        return JSONResponse({"error": "path does not match eventType"}, status_code=400)
    if config.get("failNext", 0) > 0:
        config["failNext"] -= 1
        mounts = _mounts()
        mounts[mount] = config
        _save_mounts(mounts)
        entry["answered"] = config.get("failStatus", 503)
        _record(mount, entry)
        return JSONResponse({"error": "told to fail"}, status_code=entry["answered"])
    entry["answered"] = 201
    _record(mount, entry)
    return JSONResponse({"received": entry["eventId"]}, status_code=201)


# --- running it as a process, for the tests --------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ListenerProcess:
    """The app above under uvicorn in a separate process, on a loopback port that stays the same
    across stop() and start(), so a listener can be 'down' for a while."""

    def __init__(self, state_dir: Path, port: int | None = None) -> None:
        self.state_dir = state_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 30.0) -> "ListenerProcess":
        import httpx

        env = dict(os.environ, LISTENER_STATE_DIR=str(self.state_dir))
        log = open(self.state_dir / "uvicorn.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "tests.support.listener_app:app", "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"listener exited with {self.process.returncode}; see {self.state_dir / 'uvicorn.log'}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("listener did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def callback(self, name: str) -> str:
        return f"{self.url}/{name}"

    def mount(self, name: str, secret: str, fail_next: int = 0, fail_status: int = 503) -> str:
        """Creates or changes a mount; returns its callback URL."""
        import httpx

        response = httpx.put(f"{self.url}/_control/{name}", json={"secret": secret, "failNext": fail_next, "failStatus": fail_status})
        response.raise_for_status()
        return f"{self.url}/{name}"

    def configure(self, name: str, **fields: Any) -> None:
        import httpx

        httpx.put(f"{self.url}/_control/{name}", json=fields).raise_for_status()

    def events(self, name: str) -> list[dict[str, Any]]:
        import httpx

        response = httpx.get(f"{self.url}/_control/{name}/events")
        response.raise_for_status()
        return response.json()

    def accepted(self, name: str) -> list[dict[str, Any]]:
        """The deliveries this mount accepted (answered 201), in arrival order."""
        return [e for e in self.events(name) if e["answered"] == 201]
