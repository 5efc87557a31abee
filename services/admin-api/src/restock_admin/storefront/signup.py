"""What a storefront "Notify me" form becomes. Pure: the clock's reading and the secret are passed in.

Rules:
- Email is the only channel for now; SMS (and its phone validation) comes with a later task, so an
  ``sms`` signup is refused with a reason rather than stored half-supported.
- The address is checked for syntax only (no DNS lookup: the storefront must answer fast, and a mistyped
  domain simply bounces), then normalised (domain lower-cased, internationalised domains encoded).
  ``contact_hash`` of the normalised address is what dedup, lookups and logs use.
- Double opt-in is off by default (a later task adds the rule): a signup is ``confirmed`` at once, with
  ``confirmed_at = subscribed_at``.
- The shopper's IP is kept only as evidence that can be matched, never read back: HMAC-SHA256 keyed with
  the app secret (the keyed form of "sha256 of IP + secret").
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime

from email_validator import EmailNotValidError, validate_email

from restock_admin.storefront.schemas import SubscribeRequest
from restock_common.signatures import contact_hash

SUPPORTED_CHANNELS = ("email",)
INITIAL_STATE = "confirmed"  # double opt-in off: see the rules above


class SignupRejected(ValueError):
    """The form cannot become a subscription; the message is the reason shown to the shopper."""


@dataclass(frozen=True)
class Signup:
    """A validated signup, ready to store."""

    tenant_id: int
    variant_id: int
    product_id: int | None
    channel: str
    email: str
    contact_hash: str
    locale: str
    quantity: int
    consent_text_version: str
    ip_hash: str | None
    state: str
    subscribed_at: datetime
    confirmed_at: datetime | None


def normalise_email(raw: str) -> str:
    """The normalised address, or ``SignupRejected`` with the validator's reason."""
    try:
        return validate_email(raw.strip(), check_deliverability=False).normalized
    except EmailNotValidError as error:
        raise SignupRejected(f"invalid email: {error}") from None


def hash_ip(ip: str | None, secret: str) -> str | None:
    """The keyed hash of a client IP (None when unknown)."""
    if not ip:
        return None
    return hmac.new(secret.encode(), ip.encode(), hashlib.sha256).hexdigest()


def build_signup(
    tenant_id: int, form: SubscribeRequest, client_ip: str | None, secret: str, now: datetime
) -> Signup:
    """The subscription a valid form asks for, or ``SignupRejected``."""
    if form.channel not in SUPPORTED_CHANNELS:
        raise SignupRejected(f"channel {form.channel} not supported yet")
    email = normalise_email(form.email)
    return Signup(
        tenant_id=tenant_id,
        variant_id=form.variant_id,
        product_id=form.product_id,
        channel=form.channel,
        email=email,
        contact_hash=contact_hash(email),
        locale=form.locale,
        quantity=form.quantity,
        consent_text_version=form.consent_text_version,
        ip_hash=hash_ip(client_ip, secret),
        state=INITIAL_STATE,
        subscribed_at=now,
        confirmed_at=now if INITIAL_STATE == "confirmed" else None,
    )
