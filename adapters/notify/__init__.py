"""Customer notifications: e-mail over SMTP, plus an embedded SMTP sink for local runs."""
from adapters.notify.email import (
    EmailMessageSpec,
    NotificationError,
    NotificationRejected,
    NotificationUnavailable,
    SmtpNotifier,
    message_id_for,
)
from adapters.notify.mail_sink import MailSink

__all__ = [
    "EmailMessageSpec",
    "MailSink",
    "NotificationError",
    "NotificationRejected",
    "NotificationUnavailable",
    "SmtpNotifier",
    "message_id_for",
]
