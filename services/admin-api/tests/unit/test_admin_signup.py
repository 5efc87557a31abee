"""Signup rules: channel, email and phone validation and normalisation, consent, IP choice and hashing."""

from __future__ import annotations

from datetime import UTC, datetime

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from restock_admin.consent import Event
from restock_admin.storefront.schemas import SubscribeRequest
from restock_admin.storefront.signup import (
    ConsentMissing,
    SignupRejected,
    build_signup,
    client_ip,
    hash_ip,
    normalise_email,
    normalise_phone,
)
from restock_common.signatures import contact_hash

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
SECRET = "app-secret"


def form(**fields: object) -> SubscribeRequest:
    return SubscribeRequest(**{"variant_id": 42, "email": "Ada@Example.COM", **fields})  # type: ignore[arg-type]


def sms(**fields: object) -> SubscribeRequest:
    base = {"variant_id": 42, "channel": "sms", "phone": "+1 415 555 2671", "consent": True}
    return SubscribeRequest(**{**base, **fields})  # type: ignore[arg-type]


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


@pytest.mark.parametrize(
    ("raw", "country", "e164"),
    [
        ("+1 415 555 2671", None, "+14155552671"),
        ("(415) 555-2671", "US", "+14155552671"),
        ("(415) 555-2671", "us", "+14155552671"),
        ("06 12 34 56 78", "FR", "+33612345678"),
        ("+33 6 12 34 56 78", "US", "+33612345678"),  # an explicit +code wins over the region hint
        ("07400 123456", "GB", "+447400123456"),
    ],
)
def test_valid_phones_become_e164(raw: str, country: str | None, e164: str) -> None:
    assert normalise_phone(raw, country) == e164


@pytest.mark.parametrize(
    ("raw", "country"),
    [
        ("(415) 555-2671", None),  # national format and no region: cannot tell
        ("+1 555 0100", None),
        ("12", "US"),
        ("not a number", "US"),
        ("+999 123 456 789", None),
    ],
)
def test_invalid_phones_are_rejected_with_a_reason(raw: str, country: str | None) -> None:
    with pytest.raises(SignupRejected, match="invalid phone number"):
        normalise_phone(raw, country)


def test_an_email_signup_follows_the_double_opt_in_rule_with_its_contact_hash() -> None:
    ip = hash_ip("203.0.113.9", SECRET)
    signup = build_signup(7, form(locale="fr", quantity=2), "off", ip, NOW)
    assert (signup.tenant_id, signup.variant_id, signup.email, signup.phone) == (
        7,
        42,
        "Ada@example.com",
        None,
    )
    assert signup.contact_hash == contact_hash("ada@example.com")
    assert (signup.event, signup.subscribed_at) == (Event.SIGNUP, NOW)
    assert (signup.locale, signup.quantity, signup.channel, signup.ip_hash) == ("fr", 2, "email", ip)
    assert build_signup(7, form(), "email", None, NOW).event is Event.SIGNUP_TO_CONFIRM


def test_an_sms_signup_stores_e164_and_hashes_it() -> None:
    signup = build_signup(7, sms(), "email+sms", None, NOW)
    assert (signup.channel, signup.email, signup.phone) == ("sms", None, "+14155552671")
    assert signup.contact_hash == contact_hash("+14155552671")
    assert signup.event is Event.SIGNUP_TO_CONFIRM
    assert build_signup(7, sms(), "email", None, NOW).event is Event.SIGNUP


@pytest.mark.parametrize("consent", [None, False])
def test_sms_needs_explicit_consent(consent: bool | None) -> None:
    with pytest.raises(ConsentMissing, match="consent"):
        build_signup(1, sms(consent=consent), "off", None, NOW)


def test_refused_consent_is_refused_on_email_too() -> None:
    with pytest.raises(ConsentMissing, match="consent was refused"):
        build_signup(1, form(consent=False), "off", None, NOW)
    assert build_signup(1, form(consent=True), "off", None, NOW).email == "Ada@example.com"


@pytest.mark.parametrize(
    ("request_form", "reason"),
    [
        (SubscribeRequest(variant_id=1, channel="sms", consent=True), "phone is required"),
        (SubscribeRequest(variant_id=1), "email is required"),
        (SubscribeRequest(variant_id=1, channel="sms", phone="+1 555", consent=True), "invalid phone"),
    ],
)
def test_missing_or_bad_contact_is_rejected(request_form: SubscribeRequest, reason: str) -> None:
    with pytest.raises(SignupRejected, match=reason):
        build_signup(1, request_form, "off", None, NOW)


def test_same_address_in_another_case_has_the_same_contact_hash() -> None:
    first = build_signup(1, form(email="ADA@example.com"), "off", None, NOW)
    second = build_signup(1, form(email="ada@EXAMPLE.com"), "off", None, NOW)
    assert first.contact_hash == second.contact_hash


@pytest.mark.parametrize(
    ("forwarded", "peer", "hops", "expected"),
    [
        ("203.0.113.7", "10.0.0.1", 1, "203.0.113.7"),
        ("6.6.6.6, 203.0.113.7", "10.0.0.1", 1, "203.0.113.7"),  # the client forged the left entry
        ("6.6.6.6, 203.0.113.7, 10.1.1.1", "10.0.0.2", 2, "203.0.113.7"),  # one ingress of ours in front
        ("", "10.0.0.1", 1, "10.0.0.1"),
        ("203.0.113.7", "10.0.0.1", 2, "10.0.0.1"),  # shorter than the trusted chain: the peer
        ("203.0.113.7", "10.0.0.1", 0, "10.0.0.1"),
        (" , ", None, 1, None),
    ],
)
def test_client_ip_trusts_only_the_known_hops(
    forwarded: str, peer: str | None, hops: int, expected: str | None
) -> None:
    assert client_ip(forwarded, peer, hops) == expected


def test_ip_hash_is_keyed_and_not_the_ip() -> None:
    hashed = hash_ip("203.0.113.9", SECRET)
    assert hashed is not None
    assert len(hashed) == 64
    assert "203.0.113.9" not in hashed
    assert hashed != hash_ip("203.0.113.9", "another-secret")
    assert hashed != hash_ip("203.0.113.10", SECRET)
    assert hash_ip(None, SECRET) is None


@given(
    st.sampled_from(["US", "FR", "GB", "DE", "JP", "BR", "IN", "AU"]),
    st.booleans(),
)
def test_example_mobile_numbers_round_trip_through_e164(region: str, hinted: bool) -> None:
    """A region's example mobile number, written nationally or internationally, normalises to one E.164."""
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
    national = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.NATIONAL)
    international = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    assert normalise_phone(national, region) == e164
    assert normalise_phone(international, None) == e164
    assert normalise_phone(e164, "US" if hinted else None) == e164
