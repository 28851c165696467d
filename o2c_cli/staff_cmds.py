"""`o2c staff add|list|disable|enable|passwd`: staff accounts for the console (docs/access-control.md).

The password is asked for twice at the terminal, or read from standard input with --password-stdin
(one line), so it never appears in the shell history or the process list."""
from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

ROLES = ("support", "finance", "admin", "crm", "oss")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("staff", help="manage staff accounts for the console")
    parser.add_argument("--database-url", default=None, help="default: O2C_DATABASE_URL")
    sub = parser.add_subparsers(dest="staff_command", required=True)

    add = sub.add_parser("add", help="create a staff account")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--name", dest="display_name", default=None, help="display name (default: the username)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.add_argument("--reason", default=None, help="why (kept in the audit log)")
    add.set_defaults(func=_add)

    sub.add_parser("list", help="list staff accounts").set_defaults(func=_list)

    for name, active in (("disable", False), ("enable", True)):
        cmd = sub.add_parser(name, help=f"{name} a staff account ({'ends its sessions' if not active else 'allows sign-in again'})")
        cmd.add_argument("username")
        cmd.add_argument("--reason", default=None)
        cmd.set_defaults(func=_set_active, active=active)

    passwd = sub.add_parser("passwd", help="set a staff account's password")
    passwd.add_argument("username")
    passwd.add_argument("--password-stdin", action="store_true")
    passwd.set_defaults(func=_passwd)


def _db_url(args: argparse.Namespace) -> str:
    from config.settings import get_settings
    from persistence.db import migrate

    url = args.database_url or get_settings().database_url
    migrate(url)
    return url


def _cli_actor():
    import getpass as _getpass

    from services.audit import Actor

    try:
        who = _getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in a container
        who = "unknown"
    return Actor(kind="cli", id=who, role="admin", name=f"o2c staff (OS user {who})")


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        raise SystemExit("the passwords differ; nothing was changed")
    return first


def _run(url: str, fn):
    from services.errors import ServiceError
    from services.query import in_transaction

    try:
        return in_transaction(url, fn)
    except ServiceError as exc:
        raise SystemExit(f"o2c staff: {exc.message}") from None


def _add(args: argparse.Namespace) -> None:
    from services import staff

    url = _db_url(args)
    password = _password(args)
    user = _run(url, lambda s: staff.create_staff(s, _cli_actor(), username=args.username, display_name=args.display_name or args.username,
                                                  role=args.role, password=password, reason=args.reason))
    print(f"staff user {user.username} ({user.role}) created")


def _list(args: argparse.Namespace) -> None:
    from services import staff

    url = _db_url(args)
    for user in _run(url, staff.list_staff):
        print(f"{user.username}\t{user.role}\t{'active' if user.active else 'disabled'}\t{user.display_name}")


def _set_active(args: argparse.Namespace) -> None:
    from services import staff

    url = _db_url(args)
    user = _run(url, lambda s: staff.set_active(s, _cli_actor(), args.username, args.active, args.reason))
    print(f"staff user {user.username} {'enabled' if user.active else 'disabled'}")


def _passwd(args: argparse.Namespace) -> None:
    from services import staff

    url = _db_url(args)
    password = _password(args)
    _run(url, lambda s: staff.set_password(s, _cli_actor(), args.username, password))
    print(f"password of {args.username} changed")
