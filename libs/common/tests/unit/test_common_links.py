"""Signed public links: round trip, purpose separation, expiry, tampering."""

from __future__ import annotations

import time

import pytest

from restock_common.links import ExpiredLink, InvalidLink, LinkSigner, confirm_url, token_id, unsubscribe_url


def test_a_token_round_trips_to_its_subscription() -> None:
    signer = LinkSigner("secret")
    token = signer.token("unsubscribe", 42)
    claims = signer.verify("unsubscribe", token)
    assert claims.subscription_id == 42
    assert claims.token_id == token_id(token)


def test_each_token_is_fresh() -> None:
    signer = LinkSigner("secret")
    assert signer.token("confirm", 1) != signer.token("confirm", 1)


def test_a_confirmation_token_is_not_an_unsubscribe_token() -> None:
    signer = LinkSigner("secret")
    with pytest.raises(InvalidLink):
        signer.verify("unsubscribe", signer.token("confirm", 1))


@pytest.mark.parametrize(
    "mutate",
    [
        # A character of the payload changed (not the signature's last one: base64's unused low bits
        # there can leave the decoded signature unchanged).
        lambda t: t[:2] + ("A" if t[2] != "A" else "B") + t[3:],
        lambda t: t.rsplit(".", 1)[0] + "." + "A" * len(t.rsplit(".", 1)[1]),
        lambda t: "x" + t,
        lambda t: "",
        lambda t: "a.b.c",
    ],
)
def test_a_tampered_token_is_refused(mutate) -> None:  # type: ignore[no-untyped-def]
    signer = LinkSigner("secret")
    with pytest.raises(InvalidLink):
        signer.verify("confirm", mutate(signer.token("confirm", 7)))


def test_a_token_under_another_secret_is_refused() -> None:
    with pytest.raises(InvalidLink):
        LinkSigner("other").verify("confirm", LinkSigner("secret").token("confirm", 7))


def test_an_old_confirmation_token_expires() -> None:
    signer = LinkSigner("secret")
    token = signer.token("confirm", 7)
    time.sleep(1.1)
    with pytest.raises(ExpiredLink):
        signer.verify("confirm", token, max_age_seconds=0)


def test_urls_live_on_the_public_base() -> None:
    assert confirm_url("https://a.example/", "tok") == "https://a.example/c/tok"
    assert unsubscribe_url("https://a.example", "tok") == "https://a.example/u/tok"
