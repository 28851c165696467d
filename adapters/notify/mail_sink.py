"""An embedded SMTP server that stores every received message as an .eml file.

Used by ``o2c up`` so local runs need no mail server, and by tests as a real SMTP peer.
Messages are filed by Message-ID, so a retried send with the same Message-ID (see
``adapters.notify.email.message_id_for``) is stored once: the sink deduplicates the way a
careful receiver would.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import Awaitable
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

__all__ = ["MailSink"]


class _EmlWriter:
    """aiosmtpd handler: write the raw DATA of each message to
    ``<directory>/<receive time ns>-<Message-ID hash>.eml``; the time prefix keeps arrival
    order (file mtimes are too coarse for that), the hash makes duplicates findable."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._last_ns = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw: bytes = envelope.original_content or envelope.content
        headers = BytesParser(policy=policy.default).parsebytes(raw, headersonly=True)
        message_id = headers.get("Message-ID")
        key = (
            hashlib.sha256(str(message_id).strip().encode()).hexdigest()[:32]
            if message_id
            else f"no-id-{uuid.uuid4().hex}"
        )
        # No lock needed: aiosmtpd runs handlers on one loop thread and this block never
        # awaits, so check-then-write cannot interleave with another delivery.
        if next(self._directory.glob(f"*-{key}.eml"), None) is None:
            self._last_ns = max(time.time_ns(), self._last_ns + 1)
            target = self._directory / f"{self._last_ns:020d}-{key}.eml"
            # Write-then-rename so a reader never sees half a message.
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(raw)
            os.replace(tmp, target)
        return "250 Message accepted for delivery"


class _BoundPortController(Controller):
    """Controller that can listen on port 0 and learn the port the OS picked.

    aiosmtpd's Controller connects to ``self.port`` after startup, so with port 0 it would
    fail; binding first and recording the real port avoids guessing a free port (racy).
    """

    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        async def create() -> asyncio.AbstractServer:
            server = await self.loop.create_server(
                self._factory_invoker, host=self.hostname, port=self.port, ssl=self.ssl_context
            )
            self.port = server.sockets[0].getsockname()[1]
            return server

        return create()


class MailSink:
    def __init__(
        self, directory: Path = Path("var/mail"), *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.directory = Path(directory)
        self.host = host
        self._requested_port = port  # 0: let the OS choose a free port
        self._controller: _BoundPortController | None = None

    @property
    def port(self) -> int:
        if self._controller is None:
            raise RuntimeError("mail sink is not running")
        return self._controller.port

    def start(self) -> int:
        """Start listening (idempotent) and return the port."""
        if self._controller is not None:
            return self._controller.port
        self.directory.mkdir(parents=True, exist_ok=True)
        controller = _BoundPortController(
            _EmlWriter(self.directory),
            hostname=self.host,
            port=self._requested_port,
            # Fixed name: the default is socket.getfqdn(), which can hang on slow DNS.
            server_hostname="o2c-mail-sink",
        )
        controller.start()
        self._controller = controller
        return controller.port

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def messages(self) -> list[EmailMessage]:
        """All stored messages, oldest first."""
        if not self.directory.exists():
            return []
        files = sorted(self.directory.glob("*.eml"))  # names start with the receive time
        parser = BytesParser(policy=policy.default)
        # Files keep the SMTP wire format (CRLF); parse with local line endings so text
        # parts read back as the sender wrote them.
        return [parser.parsebytes(p.read_bytes().replace(b"\r\n", b"\n")) for p in files]

    def clear(self) -> None:
        """Delete the stored messages (tests, or a fresh local run)."""
        for p in self.directory.glob("*.eml"):
            p.unlink(missing_ok=True)

    def __enter__(self) -> MailSink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
