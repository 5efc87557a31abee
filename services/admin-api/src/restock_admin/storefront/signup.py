"""What a storefront "Notify me" form becomes. Pure: the clock's reading and the secret are passed in.

Rules:
- ``email``: the address is checked for syntax only (no DNS lookup: the storefront must answer fast, and a
  mistyped domain simply bounces), then normalised (domain lower-cased, internationalised domains encoded).
- ``sms``: the number is parsed with phonenumbers in the form's ``country`` (the storefront's country) when
  it has no ``+`` prefix, must be a valid number, and is stored as E.164. SMS needs the shopper's explicit
  consent (``consent: true``), as the TCPA and the carriers' rules ask; without it: ``ConsentMissing``.
- An explicit ``consent: false`` is refused on every channel.
- ``contact_hash`` of the normalised contact is what dedup, lookups and logs use.
- The signup's consent event (``consent.signup_event``) follows the shop's ``double_opt_in`` rule; the
  store turns it into a state with the consent table (a returning contact may already be confirmed).
- The shopper's IP is kept only as evidence that can be matched, never read back: HMAC-SHA256 keyed with
  the app secret (the keyed form of "sha256 of IP + secret"). Which address is the shopper's: see
  ``client_ip``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from restock_admin.consent import Event, signup_event
from restock_admin.storefront.schemas import SubscribeRequest
from restock_common.signatures import contact_hash


class SignupRejected(ValueError):
    """The form cannot become a subscription; the message is the reason shown to the shopper."""


class ConsentMissing(SignupRejected):
    """The form lacks the consent its channel needs."""


@dataclass(frozen=True)
class Signup:
    """A validated signup, ready to store."""

    tenant_id: int
    variant_id: int
    product_id: int | None
    channel: str
    email: str | None
    phone: str | None
    contact_hash: str
    locale: str
    quantity: int
    consent_text_version: str
    ip_hash: str | None
    event: Event
    subscribed_at: datetime


def normalise_email(raw: str) -> str:
    """The normalised address, or ``SignupRejected`` with the validator's reason."""
    try:
        return validate_email(raw.strip(), check_deliverability=False).normalized
    except EmailNotValidError as error:
        raise SignupRejected(f"invalid email: {error}") from None


def normalise_phone(raw: str, country: str | None) -> str:
    """The number in E.164, or ``SignupRejected`` with a reason."""
    try:
        number = phonenumbers.parse(raw.strip(), country.upper() if country else None)
    except phonenumbers.NumberParseException:
        hint = "" if country else " (write it with its +country code)"
        raise SignupRejected(f"invalid phone number{hint}") from None
    if not phonenumbers.is_valid_number(number):
        raise SignupRejected("invalid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def hash_ip(ip: str | None, secret: str) -> str | None:
    """The keyed hash of a client IP (None when unknown)."""
    if not ip:
        return None
    return hmac.new(secret.encode(), ip.encode(), hashlib.sha256).hexdigest()


def client_ip(forwarded_for: str, peer: str | None, trusted_hops: int) -> str | None:
    """The shopper's address. Shopify's App Proxy appends the address it saw to ``X-Forwarded-For``, and each
    ingress of ours appends one more; anything to their left was written by the client and can be forged,
    so the address is the ``trusted_hops``-th from the right (0 or a shorter header: the peer's)."""
    entries = [entry.strip() for entry in forwarded_for.split(",") if entry.strip()]
    if trusted_hops < 1 or len(entries) < trusted_hops:
        return peer
    return entries[-trusted_hops]


def _contact(form: SubscribeRequest) -> tuple[str | None, str | None]:
    """(email, phone) of the form's channel, normalised."""
    if form.channel == "sms":
        if form.phone is None:
            raise SignupRejected("phone is required for sms")
        if form.consent is not True:
            raise ConsentMissing("sms needs the shopper's explicit consent (consent: true)")
        return None, normalise_phone(form.phone, form.country)
    if form.email is None:
        raise SignupRejected("email is required for email")
    return normalise_email(form.email), None


def build_signup(
    tenant_id: int,
    form: SubscribeRequest,
    double_opt_in: str,
    ip_hash: str | None,
    now: datetime,
) -> Signup:
    """The subscription a valid form asks for, or ``SignupRejected`` / ``ConsentMissing``."""
    if form.consent is False:
        raise ConsentMissing("consent was refused (consent: false)")
    email, phone = _contact(form)
    contact = email if email is not None else phone
    assert contact is not None
    return Signup(
        tenant_id=tenant_id,
        variant_id=form.variant_id,
        product_id=form.product_id,
        channel=form.channel,
        email=email,
        phone=phone,
        contact_hash=contact_hash(contact),
        locale=form.locale,
        quantity=form.quantity,
        consent_text_version=form.consent_text_version,
        ip_hash=ip_hash,
        event=signup_event(form.channel, double_opt_in),
        subscribed_at=now,
    )
