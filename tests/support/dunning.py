"""The real dunning activities, wired as the worker wires them, for tests that run them directly or on their own worker."""
from __future__ import annotations

from activities.dunning import DunningActivities
from adapters.notify.email import SmtpNotifier
from adapters.oss.http_client import HttpOssClient
from adapters.payments.sandbox import SandboxGateway
from config.dunning_loader import load_dunning_config


def dunning_activities(settings, **extra) -> DunningActivities:
    """Sandbox gateway, the OSS simulator over HTTP and SMTP from `settings`; `extra` (e.g. `sms=`) passed on."""
    return DunningActivities(settings, load_dunning_config(), SandboxGateway(), HttpOssClient(settings.oss_base_url),
                             SmtpNotifier(settings.smtp_host, settings.smtp_port, settings.mail_from), **extra)
