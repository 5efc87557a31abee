"""``python -m restock_detector``: receive Shopify webhooks, detect restocks, relay the outbox."""

from __future__ import annotations

import argparse
import asyncio
import sys

from restock_common.settings import Settings
from restock_common.telemetry import setup_logging
from restock_detector import app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="restock_detector",
        description="Receive Shopify webhooks, detect 0 -> 1+ restocks and publish restock.detected.",
    )
    commands = parser.add_subparsers(dest="command")
    sync = commands.add_parser("sync", help="reconcile one shop's inventory with the Admin API now")
    sync.add_argument("shop", help="the shop's domain, e.g. demo-shop.myshopify.com")
    args = parser.parse_args(argv)
    if args.command != "sync":
        app.main()
        return
    setup_logging("detector")
    report = asyncio.run(app.sync_once(Settings(), args.shop))
    if report is None:
        print(f"no installed shop {args.shop!r}", file=sys.stderr)
        sys.exit(2)
    print(
        f"{report.outcome}: {report.variants} variants, {report.restocks} restocks"
        + (f" ({report.error})" if report.error else "")
    )
    sys.exit(0 if report.outcome == "synced" else 1)


if __name__ == "__main__":
    main()
