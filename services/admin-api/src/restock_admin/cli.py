"""The command line: ``python -m restock_admin [serve]``, ``shops add|remove ...``, ``jobs replay ...``,
``staff grant|revoke ...``, ``retention run``, ``privacy export ...``.

Subcommands so more can be added (``shops list`` ...). Invalid arguments exit with
code 2 and a one-line reason, argparse's convention.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from restock_admin.shops.domains import InvalidShop, shop_domain, timezone_name
from restock_admin.staff.roles import Role
from restock_admin.staff.session_token import USER_ID


def _checked(validate: Callable[[str], str]) -> Callable[[str], str]:
    """An argparse type from a domain validator (argparse reports its message and exits 2)."""

    def convert(value: str) -> str:
        try:
            return validate(value)
        except InvalidShop as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert


def _job_id(value: str) -> int:
    """A job id: a positive integer."""
    try:
        job_id = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a job id: {value!r}") from None
    if job_id < 1:
        raise argparse.ArgumentTypeError(f"not a job id: {value!r}")
    return job_id


def _actor(value: str) -> str:
    """Who acts, for the audit log: not blank."""
    if not value.strip():
        raise argparse.ArgumentTypeError("the actor must not be blank")
    return value.strip()


def _add_jobs(commands: Any) -> None:
    jobs = commands.add_parser("jobs", help="operate on notification jobs")
    job_commands = jobs.add_subparsers(dest="jobs_command", required=True, metavar="{replay}")
    replay = job_commands.add_parser(
        "replay", help="move dead-letter / indeterminate jobs back to pending (audited); prints JSON"
    )
    replay.add_argument(
        "--job", dest="job_ids", type=_job_id, action="append", required=True, help="a job id (repeatable)"
    )
    replay.add_argument("--actor", type=_actor, required=True, help="who does it, for the audit log")
    replay.add_argument("--reason", default="", help="why, for the audit log")


def _user_id(value: str) -> str:
    """A Shopify staff user id (the session token's ``sub``)."""
    if not USER_ID.fullmatch(value):
        raise argparse.ArgumentTypeError(f"not a staff user id: {value!r}")
    return value


def _add_staff(commands: Any) -> None:
    staff = commands.add_parser("staff", help="who of a shop's staff may use the admin API (audited)")
    staff_commands = staff.add_subparsers(dest="staff_command", required=True, metavar="{grant,revoke}")
    grant = staff_commands.add_parser("grant", help="give (or change) a staff user's role at a shop")
    grant.add_argument("shop", type=_checked(shop_domain), help="<shop>.myshopify.com")
    grant.add_argument("user_id", type=_user_id, help="the Shopify staff user id (the session token's sub)")
    grant.add_argument("role", choices=[role.value for role in Role], help="viewer: reads; operator: replays")
    grant.add_argument("--actor", type=_actor, default="cli", help="who does it, for the audit log")
    revoke = staff_commands.add_parser("revoke", help="take a staff user's role at a shop away")
    revoke.add_argument("shop", type=_checked(shop_domain), help="<shop>.myshopify.com")
    revoke.add_argument("user_id", type=_user_id, help="the Shopify staff user id")
    revoke.add_argument("--actor", type=_actor, default="cli", help="who does it, for the audit log")


def _add_privacy(commands: Any) -> None:
    retention = commands.add_parser("retention", help="the personal data retention job")
    retention_commands = retention.add_subparsers(dest="retention_command", required=True, metavar="{run}")
    retention_commands.add_parser("run", help="one retention pass over every shop now; prints JSON counts")
    privacy = commands.add_parser("privacy", help="privacy requests")
    privacy_commands = privacy.add_subparsers(dest="privacy_command", required=True, metavar="{export}")
    export = privacy_commands.add_parser(
        "export", help="one contact's data at one shop as JSON (customers/data_request); audited"
    )
    export.add_argument("--shop", type=_checked(shop_domain), required=True, help="<shop>.myshopify.com")
    contact = export.add_mutually_exclusive_group(required=True)
    contact.add_argument("--email", help="the contact's email address")
    contact.add_argument("--phone", help="the contact's phone number (E.164, or national with --country)")
    export.add_argument("--country", default=None, help="ISO country code to read a national --phone in")
    export.add_argument("--actor", type=_actor, default="cli", help="who asks, for the audit log")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command."""
    parser = argparse.ArgumentParser(prog="python -m restock_admin", description="Restock admin-api.")
    commands = parser.add_subparsers(dest="command", metavar="{serve,shops,jobs,staff,retention,privacy}")
    commands.add_parser("serve", help="serve the HTTP API (the default)")
    shops = commands.add_parser("shops", help="manage shops (tenants)")
    shop_commands = shops.add_subparsers(dest="shops_command", required=True, metavar="{add,remove}")
    add = shop_commands.add_parser("add", help="register (or update) a shop; prints its tenant id")
    add.add_argument("shop", type=_checked(shop_domain), help="<shop>.myshopify.com")
    add.add_argument("--access-token", required=True, help="the shop's Admin API access token")
    add.add_argument(
        "--timezone", type=_checked(timezone_name), default="UTC", help="IANA name, e.g. Europe/Paris"
    )
    remove = shop_commands.add_parser(
        "remove", help="delete a shop and every row of its data (audited); asks for --yes"
    )
    remove.add_argument("shop", type=_checked(shop_domain), help="<shop>.myshopify.com")
    remove.add_argument("--yes", action="store_true", required=True, help="confirm the deletion")
    remove.add_argument("--actor", default="cli", help="who does it, for the audit log")
    _add_jobs(commands)
    _add_staff(commands)
    _add_privacy(commands)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The parsed command line; no subcommand means ``serve``."""
    args = build_parser().parse_args(argv)
    if args.command is None:
        args.command = "serve"
    return args
