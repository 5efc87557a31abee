"""The command line: default command, ``shops add`` arguments, and exit code 2 on invalid input."""

from __future__ import annotations

import pytest

from restock_admin.cli import parse_args
from restock_admin.shops.domains import InvalidShop, shop_domain


def test_no_subcommand_means_serve() -> None:
    assert parse_args([]).command == "serve"
    assert parse_args(["serve"]).command == "serve"


def test_shops_add() -> None:
    args = parse_args(
        ["shops", "add", "demo-1.myshopify.com", "--access-token", "shpat_x", "--timezone", "Europe/Paris"]
    )
    assert (args.command, args.shops_command) == ("shops", "add")
    assert (args.shop, args.access_token, args.timezone) == (
        "demo-1.myshopify.com",
        "shpat_x",
        "Europe/Paris",
    )
    assert parse_args(["shops", "add", "demo.myshopify.com", "--access-token", "t"]).timezone == "UTC"


@pytest.mark.parametrize(
    "argv",
    [
        ["shops", "add", "Demo.myshopify.com", "--access-token", "t"],
        ["shops", "add", "demo.com", "--access-token", "t"],
        ["shops", "add", "-demo.myshopify.com", "--access-token", "t"],
        ["shops", "add", "demo.myshopify.com.evil.com", "--access-token", "t"],
        ["shops", "add", "demo.myshopify.com"],
        ["shops", "add", "demo.myshopify.com", "--access-token", "t", "--timezone", "Mars/Olympus"],
        ["shops"],
        ["unknown"],
    ],
)
def test_invalid_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("domain", ["demo.myshopify.com", "a.myshopify.com", "my-shop-2.myshopify.com"])
def test_valid_domains(domain: str) -> None:
    assert shop_domain(domain) == domain


@pytest.mark.parametrize(
    "domain", ["", "myshopify.com", "shop.myshopify.co", "sh op.myshopify.com", "a_b.myshopify.com"]
)
def test_invalid_domains(domain: str) -> None:
    with pytest.raises(InvalidShop):
        shop_domain(domain)
