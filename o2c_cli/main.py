"""The `o2c` command: run the whole embedded stack, or one part of it, or the demo."""
from __future__ import annotations

import argparse
import logging
import sys


def _api(_: argparse.Namespace) -> None:
    import uvicorn

    from api.app import create_app
    from config.settings import get_settings

    settings = get_settings()
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_level="info")


def _worker(_: argparse.Namespace) -> None:
    import worker

    worker.main()


def _oss_sim(_: argparse.Namespace) -> None:
    from config.settings import get_settings
    from oss_sim.server import run

    settings = get_settings()
    run(settings.oss_sim_host, settings.oss_sim_port)


def _mail_sink(_: argparse.Namespace) -> None:
    import signal
    import threading

    from adapters.notify.mail_sink import MailSink
    from config.settings import get_settings

    settings = get_settings()
    sink = MailSink(settings.var_dir / "mail", port=settings.smtp_port)
    sink.start()
    print(f"mail sink: smtp://127.0.0.1:{sink.port} -> {settings.var_dir / 'mail'}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    sink.stop()


def _sms_sink(_: argparse.Namespace) -> None:
    from adapters.notify.sms_sink import run
    from config.settings import get_settings

    settings = get_settings()
    print(f"SMS sink: http://{settings.sms_sink_host}:{settings.sms_sink_port} (GET /messages)", flush=True)
    run(settings.sms_sink_host, settings.sms_sink_port)


def _up(_: argparse.Namespace) -> None:
    from o2c_cli.stack import run_stack

    sys.exit(run_stack())


def _demo(args: argparse.Namespace) -> None:
    from o2c_cli.demo import run_demo

    # The demo prints its own story; per-request HTTP logs would drown it.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sys.exit(run_demo(args.api, args.oss, args.api_key))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="o2c", description="o2c: durable order-to-cash for telecom operators")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="run the embedded stack (Temporal dev server, OSS simulator, mail sink, worker, API)").set_defaults(func=_up)
    sub.add_parser("api", help="run the HTTP API").set_defaults(func=_api)
    sub.add_parser("worker", help="run the Temporal worker").set_defaults(func=_worker)
    sub.add_parser("oss-sim", help="run the OSS simulator").set_defaults(func=_oss_sim)
    sub.add_parser("mail-sink", help="run a local SMTP server that stores mail under var/mail").set_defaults(func=_mail_sink)
    sub.add_parser("sms-sink", help="run a local SMS gateway that keeps messages (GET /messages)").set_defaults(func=_sms_sink)
    demo = sub.add_parser("demo", help="drive one customer through order-to-cash against a running `o2c up`")
    demo.add_argument("--api", default="http://127.0.0.1:8000")
    demo.add_argument("--oss", default="http://127.0.0.1:8100")
    demo.add_argument("--api-key", default="dev-admin-key")
    demo.set_defaults(func=_demo)
    from o2c_cli import mediation_cmds  # import-cdrs, mediate

    mediation_cmds.register(sub)
    from o2c_cli import hub_cmds  # hub-dispatcher

    hub_cmds.register(sub)
    from o2c_cli import verify_invoices  # verify-invoices

    verify_invoices.register(sub)
    from o2c_cli import staff_cmds  # staff add|list|disable|enable|passwd

    staff_cmds.register(sub)
    from o2c_cli import reconcile_cmds  # reconcile-oss

    reconcile_cmds.register(sub)
    from o2c_cli import refund_cmds  # poll-refunds

    refund_cmds.register(sub)
    from o2c_cli import retention_cmds  # erase-traffic-data

    retention_cmds.register(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
