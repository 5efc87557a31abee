"""The ``retention`` and ``privacy`` commands' arguments."""

from __future__ import annotations

import pytest

from restock_admin.cli import parse_args


def test_retention_run() -> None:
    args = parse_args(["retention", "run"])
    assert (args.command, args.retention_command) == ("retention", "run")


def test_privacy_export() -> None:
    args = parse_args(
        ["privacy", "export", "--shop", "demo.myshopify.com", "--phone", "0612345678", "--country", "FR"]
    )
    assert (args.command, args.privacy_command, args.shop) == ("privacy", "export", "demo.myshopify.com")
    assert (args.email, args.phone, args.country, args.actor) == (None, "0612345678", "FR", "cli")


@pytest.mark.parametrize(
    "argv",
    [
        ["retention"],
        ["privacy", "export", "--shop", "demo.myshopify.com"],  # a contact is required
        ["privacy", "export", "--shop", "demo.myshopify.com", "--email", "a@b.co", "--phone", "+14155552671"],
        ["privacy", "export", "--shop", "demo.com", "--email", "a@b.co"],
        ["privacy", "export", "--shop", "demo.myshopify.com", "--email", "a@b.co", "--actor", " "],
    ],
)
def test_invalid_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err
