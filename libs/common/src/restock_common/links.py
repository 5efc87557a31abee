"""Signed public links: the double opt-in confirmation and the one-click unsubscribe.

The sender writes them into messages (``List-Unsubscribe``, the confirmation email); the admin-api
verifies them on ``GET/POST /c/{token}`` and ``/u/{token}``. One definition, so both sides agree.

A token is itsdangerous' URL-safe timed serializer over ``[subscription_id, nonce]``, salted per purpose
(a confirmation token is never accepted as an unsubscribe token, and the reverse). Confirmation links
expire (``max_age``); unsubscribe links never do, because a shopper may click an old email and RFC 8058
requires the link to keep working. ``token_id`` is a digest of the token, so a used confirmation link can
be recorded (``consumed_tokens``) without storing the token itself.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

Purpose = Literal["confirm", "unsubscribe"]


class InvalidLink(ValueError):
    """The token was forged, altered, or made for another purpose."""


class ExpiredLink(InvalidLink):
    """The token is genuine but older than its purpose allows."""


@dataclass(frozen=True)
class LinkClaims:
    """What a verified token says."""

    subscription_id: int
    nonce: str
    token_id: str


class LinkSigner:
    """Makes and verifies the tokens of public links under one secret."""

    def __init__(self, secret: str) -> None:
        self._serializers = {
            purpose: URLSafeTimedSerializer(secret, salt=f"restock.{purpose}")
            for purpose in ("confirm", "unsubscribe")
        }

    def token(self, purpose: Purpose, subscription_id: int) -> str:
        """A fresh token for one subscription (a new nonce each call)."""
        return str(self._serializers[purpose].dumps([subscription_id, secrets.token_urlsafe(8)]))

    def verify(self, purpose: Purpose, token: str, max_age_seconds: int | None = None) -> LinkClaims:
        """The claims of a genuine token of this purpose; raises ``ExpiredLink`` or ``InvalidLink``."""
        try:
            payload = self._serializers[purpose].loads(token, max_age=max_age_seconds)
        except SignatureExpired as exc:
            raise ExpiredLink("the link has expired") from exc
        except BadSignature as exc:
            raise InvalidLink("the link is not valid") from exc
        if (
            not isinstance(payload, list)
            or len(payload) != 2
            or not isinstance(payload[0], int)
            or not isinstance(payload[1], str)
        ):
            raise InvalidLink("the link is not valid")
        return LinkClaims(payload[0], payload[1], token_id(token))


def token_id(token: str) -> str:
    """A digest that names a token without storing it."""
    return hashlib.sha256(token.encode()).hexdigest()


def confirm_url(public_base_url: str, token: str) -> str:
    """The double opt-in link: ``GET /c/{token}`` on the admin-api's public surface."""
    return f"{public_base_url.rstrip('/')}/c/{token}"


def unsubscribe_url(public_base_url: str, token: str) -> str:
    """The one-click unsubscribe link (``List-Unsubscribe``): ``GET`` shows a page, ``POST`` unsubscribes."""
    return f"{public_base_url.rstrip('/')}/u/{token}"
