"""``python -m restock_sender --channel email|sms``: send notification jobs on one channel."""

from __future__ import annotations

import argparse

from restock_sender import app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="restock_sender", description="Send notification jobs.")
    parser.add_argument("--channel", choices=("email", "sms"), required=True)
    args = parser.parse_args(argv)
    app.main(args.channel)


if __name__ == "__main__":
    main()
