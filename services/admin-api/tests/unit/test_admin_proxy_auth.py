"""The App Proxy check: signature first, then freshness, table-driven."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from restock_admin.storefront.proxy_auth import ProxyVerdict, check_proxy_request
from restock_common.signatures import app_proxy_signature

SECRET = "proxy-secret"
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def signed(timestamp: str | None, secret: str = SECRET, **extra: str) -> list[tuple[str, str]]:
    params = [("shop", "demo.myshopify.com"), ("logged_in_customer_id", ""), ("path_prefix", "/apps/restock")]
    if timestamp is not None:
        params.append(("timestamp", timestamp))
    params.extend(extra.items())
    return [*params, ("signature", app_proxy_signature(secret, params))]


def at(delta: timedelta) -> str:
    return str(int((NOW + delta).timestamp()))


@pytest.mark.parametrize(
    ("params", "verdict"),
    [
        (signed(at(timedelta(0))), ProxyVerdict.AUTHENTIC),
        (signed(at(-timedelta(minutes=4, seconds=59))), ProxyVerdict.AUTHENTIC),
        (signed(at(timedelta(seconds=59))), ProxyVerdict.AUTHENTIC),
        (signed(at(-timedelta(minutes=5, seconds=1))), ProxyVerdict.STALE),
        (signed(at(timedelta(minutes=1, seconds=1))), ProxyVerdict.STALE),
        (signed(None), ProxyVerdict.STALE),
        (signed("yesterday"), ProxyVerdict.STALE),
        (signed(at(timedelta(0)), secret="someone-else"), ProxyVerdict.INVALID),
        (signed(at(timedelta(0)))[:-1], ProxyVerdict.INVALID),
        ([*signed(at(timedelta(0))), ("signature", "0" * 64)], ProxyVerdict.INVALID),
        ([("shop", "other.myshopify.com"), *signed(at(timedelta(0)))[1:]], ProxyVerdict.INVALID),
        ([*signed(at(timedelta(0))), ("extra", "added-after-signing")], ProxyVerdict.INVALID),
        # A forged old timestamp is caught by the signature before its age is even read.
        (
            [(k, at(-timedelta(hours=1)) if k == "timestamp" else v) for k, v in signed(at(timedelta(0)))],
            ProxyVerdict.INVALID,
        ),
    ],
)
def test_verdict(params: list[tuple[str, str]], verdict: ProxyVerdict) -> None:
    assert check_proxy_request(SECRET, params, NOW) is verdict


def test_verdict_values_are_the_reasons_given_to_callers() -> None:
    assert ProxyVerdict.INVALID.value == "invalid signature"
    assert ProxyVerdict.STALE.value == "stale signature"
