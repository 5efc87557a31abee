"""``python -m restock_dispatcher``: consume ``restock.detected`` and publish job batches."""

from __future__ import annotations

import argparse

from restock_dispatcher import app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="restock_dispatcher", description="Freeze restock targets into jobs and publish them."
    )
    parser.parse_args(argv)
    app.main()


if __name__ == "__main__":
    main()
