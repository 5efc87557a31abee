"""``python -m restock_admin``: parse the command line and run it."""

from restock_admin import app, cli

if __name__ == "__main__":
    raise SystemExit(app.main(cli.parse_args()))
