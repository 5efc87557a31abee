"""The command line: ``python -m restock_admin [serve]`` and ``python -m restock_admin shops add ...``.

Subcommands so more can be added (``shops list``, ``jobs replay`` ...). Invalid arguments exit with
code 2 and a one-line reason, argparse's convention.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from restock_admin.shops.domains import InvalidShop, shop_domain, timezone_name


def _checked(validate: Callable[[str], str]) -> Callable[[str], str]:
    """An argparse type from a domain validator (argparse reports its message and exits 2)."""

    def convert(value: str) -> str:
        try:
            return validate(value)
        except InvalidShop as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command."""
    parser = argparse.ArgumentParser(prog="python -m restock_admin", description="Restock admin-api.")
    commands = parser.add_subparsers(dest="command", metavar="{serve,shops}")
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
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The parsed command line; no subcommand means ``serve``."""
    args = build_parser().parse_args(argv)
    if args.command is None:
        args.command = "serve"
    return args
