"""``python -m restock_sender --channel email``: send notification jobs on one channel."""

from __future__ import annotations

import argparse
import sys

from restock_sender import app

EXIT_CHANNEL_UNAVAILABLE = 2


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="restock_sender", description="Send notification jobs.")
    parser.add_argument("--channel", choices=("email", "sms"), required=True)
    args = parser.parse_args(argv)
    if args.channel == "sms":
        print("restock_sender: sms channel not available yet", file=sys.stderr)
        raise SystemExit(EXIT_CHANNEL_UNAVAILABLE)
    app.main()


if __name__ == "__main__":
    main()
