"""Send customer e-mails over plain SMTP (stdlib smtplib, run in a worker thread).

SMTP has no idempotency keys, so retries are made safe the only way the protocol allows:
the Message-ID is derived from the business idempotency key. A retried send produces the
same Message-ID and the receiving side (MTA, mail sink, mail client) can drop the duplicate.
"""
from __future__ import annotations

import asyncio
import hashlib
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "EmailMessageSpec",
    "NotificationError",
    "NotificationRejected",
    "NotificationUnavailable",
    "SmtpNotifier",
    "message_id_for",
]

MESSAGE_ID_DOMAIN = "o2c.local"
# EHLO name; passed explicitly because smtplib's default calls socket.getfqdn(),
# which can block for seconds on hosts with slow reverse DNS.
_EHLO_NAME = "o2c.local"


class EmailMessageSpec(BaseModel):
    # Base64 in JSON: this model crosses Temporal's JSON payload converter, and PDF bytes are
    # not valid UTF-8 (pydantic's default for bytes in JSON).
    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    to: str
    subject: str
    body_text: str
    idempotency_key: str = Field(min_length=1)
    attachments: list[tuple[str, str, bytes]] = []  # (filename, mime type, content)


class NotificationError(Exception):
    """Base class for failures to hand an e-mail to the SMTP server."""


class NotificationUnavailable(NotificationError):
    """The mail server could not be reached or answered with a transient (4xx) error.
    Retrying later with the same idempotency key is safe."""


class NotificationRejected(NotificationError):
    """The message or the configuration was refused for good (5xx, bad address, login
    failure). Retrying the same message will not help."""


def message_id_for(idempotency_key: str) -> str:
    digest = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:32]
    return f"<{digest}@{MESSAGE_ID_DOMAIN}>"


class SmtpNotifier:
    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        timeout_s: float = 10.0,
        starttls: bool = False,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("username and password must be given together")
        self._host = host
        self._port = port
        self._sender = sender
        self._timeout_s = timeout_s
        self._starttls = starttls
        self._username = username
        self._password = password

    async def send(self, msg: EmailMessageSpec) -> str:
        """Deliver ``msg`` to the SMTP server and return its (deterministic) Message-ID."""
        email_msg = self.build_message(msg)
        # smtplib blocks; a worker thread keeps the event loop (Temporal worker, API) free.
        await asyncio.to_thread(self._deliver, email_msg, msg.to)
        return str(email_msg["Message-ID"])

    def build_message(self, msg: EmailMessageSpec) -> EmailMessage:
        email_msg = EmailMessage()
        try:
            email_msg["From"] = self._sender
            email_msg["To"] = msg.to
            email_msg["Subject"] = msg.subject
        except ValueError as exc:  # CR/LF in a header value: header injection attempt
            raise NotificationRejected(f"invalid header value: {exc}") from exc
        email_msg["Message-ID"] = message_id_for(msg.idempotency_key)
        email_msg["Date"] = formatdate(localtime=False, usegmt=True)
        email_msg.set_content(msg.body_text)
        for filename, mime_type, content in msg.attachments:
            maintype, _, subtype = mime_type.partition("/")
            if not maintype or not subtype:
                raise NotificationRejected(f"attachment {filename!r}: bad mime type {mime_type!r}")
            email_msg.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
        return email_msg

    def _deliver(self, email_msg: EmailMessage, to: str) -> None:
        try:
            with smtplib.SMTP(
                self._host, self._port, local_hostname=_EHLO_NAME, timeout=self._timeout_s
            ) as smtp:
                if self._starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self._username is not None and self._password is not None:
                    smtp.login(self._username, self._password)
                smtp.send_message(email_msg, from_addr=self._sender, to_addrs=[to])
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise _by_code(min(codes, default=550), f"recipient refused: {exc.recipients}") from exc
        except smtplib.SMTPAuthenticationError as exc:
            raise NotificationRejected(f"SMTP login failed: {exc.smtp_code}") from exc
        except smtplib.SMTPResponseException as exc:
            raise _by_code(exc.smtp_code, f"SMTP error {exc.smtp_code}: {exc.smtp_error!r}") from exc
        except smtplib.SMTPNotSupportedError as exc:  # e.g. STARTTLS/AUTH not offered
            raise NotificationRejected(f"SMTP server lacks a required feature: {exc}") from exc
        except (smtplib.SMTPException, OSError) as exc:
            # Connection refused, timeouts, DNS failures, dropped connections, TLS failures.
            raise NotificationUnavailable(
                f"SMTP server {self._host}:{self._port} unavailable: {exc!r}"
            ) from exc


def _by_code(code: int, text: str) -> NotificationError:
    # RFC 5321: 4xx is transient (try again later), 5xx is permanent.
    if 400 <= code < 500:
        return NotificationUnavailable(text)
    return NotificationRejected(text)
