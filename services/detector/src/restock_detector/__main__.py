"""``python -m restock_detector``: receive Shopify webhooks, detect restocks, relay the outbox."""

from __future__ import annotations

import argparse

from restock_detector import app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="restock_detector",
        description="Receive Shopify webhooks, detect 0 -> 1+ restocks and publish restock.detected.",
    )
    parser.parse_args(argv)
    app.main()


if __name__ == "__main__":
    main()
