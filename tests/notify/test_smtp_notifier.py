from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.notify import (
    EmailMessageSpec,
    MailSink,
    NotificationRejected,
    NotificationUnavailable,
    SmtpNotifier,
    message_id_for,
)
from adapters.notify.mail_sink import _BoundPortController

SENDER = "billing@o2c.example"
# Every byte value, so a lossy transfer encoding would show up.
PDF_BYTES = b"%PDF-1.4\n" + bytes(range(256)) * 4 + b"\n%%EOF\n"


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[MailSink]:
    with MailSink(tmp_path / "mail") as s:
        yield s


@pytest.fixture
def notifier(sink: MailSink) -> SmtpNotifier:
    return SmtpNotifier("127.0.0.1", sink.port, SENDER, timeout_s=5)


def invoice_mail(key: str = "invoice-INV-2026-000123-email", **overrides: object) -> EmailMessageSpec:
    fields: dict[str, object] = dict(
        to="kunde@example.com",
        subject="Ihre Rechnung INV-2026-000123 für November – 1.465,69 €",
        body_text="Guten Tag Herr Müller,\n\nanbei Ihre Rechnung.\n",
        idempotency_key=key,
        attachments=[("INV-2026-000123.pdf", "application/pdf", PDF_BYTES)],
    )
    fields.update(overrides)
    return EmailMessageSpec(**fields)


async def test_sends_message_with_pdf_attachment(sink: MailSink, notifier: SmtpNotifier) -> None:
    message_id = await notifier.send(invoice_mail())

    [received] = sink.messages()
    assert message_id == message_id_for("invoice-INV-2026-000123-email")
    assert received["Message-ID"] == message_id
    assert received["From"] == SENDER
    assert received["To"] == "kunde@example.com"
    assert received["Subject"] == "Ihre Rechnung INV-2026-000123 für November – 1.465,69 €"
    assert received["Date"]
    body = received.get_body(preferencelist=("plain",))
    assert body is not None
    assert body.get_content() == "Guten Tag Herr Müller,\n\nanbei Ihre Rechnung.\n"
    [attachment] = list(received.iter_attachments())
    assert attachment.get_filename() == "INV-2026-000123.pdf"
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == PDF_BYTES


async def test_message_without_attachments_is_plain_text(sink: MailSink, notifier: SmtpNotifier) -> None:
    await notifier.send(invoice_mail(key="welcome-C-100042", attachments=[], body_text="Willkommen!\n"))

    [received] = sink.messages()
    assert received.get_content_type() == "text/plain"
    assert received.get_content() == "Willkommen!\n"


def test_spec_with_binary_attachment_survives_json_round_trip() -> None:
    # Temporal carries activity inputs as JSON.
    spec = invoice_mail()
    assert EmailMessageSpec.model_validate_json(spec.model_dump_json()) == spec


def test_message_id_is_deterministic_per_idempotency_key() -> None:
    a = message_id_for("invoice-INV-1-email")
    assert a == message_id_for("invoice-INV-1-email")
    assert a != message_id_for("invoice-INV-2-email")
    assert a.startswith("<") and a.endswith("@o2c.local>")


async def test_retried_send_keeps_message_id_and_is_stored_once(
    sink: MailSink, notifier: SmtpNotifier
) -> None:
    first = await notifier.send(invoice_mail())
    retry = await notifier.send(invoice_mail())
    other = await notifier.send(invoice_mail(key="invoice-INV-2026-000124-email"))

    assert first == retry != other
    assert [m["Message-ID"] for m in sink.messages()] == [first, other]
    assert len(list(sink.directory.glob("*.eml"))) == 2


async def test_unreachable_server_raises_unavailable() -> None:
    # A bound but not listening socket: connections to it are refused, and no one else can
    # take the port while the test runs.
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
        notifier = SmtpNotifier("127.0.0.1", port, SENDER, timeout_s=2)
        with pytest.raises(NotificationUnavailable, match=f"127.0.0.1:{port}"):
            await notifier.send(invoice_mail())


async def test_header_injection_is_rejected(notifier: SmtpNotifier, sink: MailSink) -> None:
    with pytest.raises(NotificationRejected):
        await notifier.send(invoice_mail(subject="Rechnung\r\nBcc: victim@example.com"))
    assert sink.messages() == []


class _RefusingServer:
    """A real SMTP server whose RCPT reply the test chooses."""

    def __init__(self) -> None:
        self.reply = "550 5.1.1 no such mailbox"
        self.port = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:  # noqa: ANN001
        return self.reply


@pytest.fixture
def refusing_server() -> Iterator[_RefusingServer]:
    handler = _RefusingServer()
    controller = _BoundPortController(handler, hostname="127.0.0.1", port=0, server_hostname="test")
    controller.start()
    handler.port = controller.port
    yield handler
    controller.stop()


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("550 5.1.1 no such mailbox", NotificationRejected),  # permanent: do not retry
        ("451 4.3.0 try again later", NotificationUnavailable),  # transient: retry
    ],
)
async def test_smtp_reply_codes_map_to_retryable_or_not(
    refusing_server: _RefusingServer, reply: str, error: type[Exception]
) -> None:
    refusing_server.reply = reply
    notifier = SmtpNotifier("127.0.0.1", refusing_server.port, SENDER, timeout_s=5)
    with pytest.raises(error, match=reply.split()[0]):
        await notifier.send(invoice_mail())


def test_sink_restarts_and_still_lists_earlier_messages(tmp_path: Path) -> None:
    sink = MailSink(tmp_path / "mail")
    port = sink.start()
    assert sink.start() == port  # idempotent
    sink.stop()
    sink.stop()  # idempotent too
    (tmp_path / "mail" / "00000000000000000001-x.eml").write_bytes(b"Message-ID: <x@o2c.local>\r\nSubject: hi\r\n\r\nbody\r\n")
    assert [m["Subject"] for m in sink.messages()] == ["hi"]
    sink.clear()
    assert sink.messages() == []
