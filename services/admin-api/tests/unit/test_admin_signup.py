"""Signup rules: channel, email validation and normalisation, consent state, IP hashing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from restock_admin.storefront.schemas import SubscribeRequest
from restock_admin.storefront.signup import SignupRejected, build_signup, hash_ip, normalise_email
from restock_common.signatures import contact_hash

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
SECRET = "app-secret"


def form(**fields: object) -> SubscribeRequest:
    return SubscribeRequest(**{"variant_id": 42, "email": "Ada@Example.COM", **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("ada@example.com", "ada@example.com"),
        ("  Ada@Example.COM ", "Ada@example.com"),
        ("ada+restock@sub.example.co.uk", "ada+restock@sub.example.co.uk"),
    ],
)
def test_valid_emails_are_normalised(raw: str, normalised: str) -> None:
    assert normalise_email(raw) == normalised


@pytest.mark.parametrize(
    "raw",
    [
        "not-an-email",
        "ada@",
        "@example.com",
        "ada@@example.com",
        "ada@example",
        "ada@localhost",
        "a b@example.com",
    ],
)
def test_invalid_emails_are_rejected_with_a_reason(raw: str) -> None:
    with pytest.raises(SignupRejected, match="invalid email"):
        normalise_email(raw)


def test_a_signup_is_confirmed_at_once_with_its_contact_hash() -> None:
    signup = build_signup(7, form(locale="fr", quantity=2), "203.0.113.9", SECRET, NOW)
    assert signup.tenant_id == 7
    assert signup.variant_id == 42
    assert signup.email == "Ada@example.com"
    assert signup.contact_hash == contact_hash("ada@example.com")
    assert (signup.state, signup.subscribed_at, signup.confirmed_at) == ("confirmed", NOW, NOW)
    assert (signup.locale, signup.quantity, signup.channel) == ("fr", 2, "email")
    assert signup.ip_hash == hash_ip("203.0.113.9", SECRET)


def test_same_address_in_another_case_has_the_same_contact_hash() -> None:
    first = build_signup(1, form(email="ADA@example.com"), None, SECRET, NOW)
    second = build_signup(1, form(email="ada@EXAMPLE.com"), None, SECRET, NOW)
    assert first.contact_hash == second.contact_hash


def test_sms_is_not_supported_yet() -> None:
    with pytest.raises(SignupRejected, match=r"^channel sms not supported yet$"):
        build_signup(1, form(channel="sms"), None, SECRET, NOW)


def test_ip_hash_is_keyed_and_not_the_ip() -> None:
    hashed = hash_ip("203.0.113.9", SECRET)
    assert hashed is not None
    assert len(hashed) == 64
    assert "203.0.113.9" not in hashed
    assert hashed != hash_ip("203.0.113.9", "another-secret")
    assert hashed != hash_ip("203.0.113.10", SECRET)
    assert hash_ip(None, SECRET) is None
