"""Shopify session tokens: which staff user of which shop calls the admin API. Pure: no I/O, clock passed in.

The embedded admin (App Bridge) sends ``Authorization: Bearer <jwt>``, a token Shopify signs with the app's
secret for the signed-in staff user, valid about a minute. Rules, each refusal a short reason for the 401:
- The header is ``Bearer <token>`` (scheme case-insensitive), the token three base64url segments and at most
  ``MAX_TOKEN_LENGTH`` characters: ``malformed-authorization`` (``missing-token`` when absent).
- HS256 only, under the app secret: ``alg`` ``none`` or any other algorithm is ``algorithm-not-allowed``,
  whatever the token says; a wrong signature is ``bad-signature``; unreadable is ``malformed-token``.
- ``aud`` is the app's client id (``wrong-audience``).
- ``exp`` and ``nbf`` are required numbers and hold at ``now`` within ``LEEWAY_SECONDS`` of clock skew:
  ``expired`` / ``not-yet-valid``.
- ``dest`` is ``https://<shop>.myshopify.com`` (``dest-not-a-shop``) and ``iss`` is ``<dest>/admin``
  (``issuer-mismatch``): the shop is the tenant every request is scoped to.
- ``sub``, the staff user id, is required (``missing-claim``, like any other required claim): an offline
  token names no user, and permissions are per user. It is an id (``USER_ID``), else ``malformed-token``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt

from restock_admin.shops.domains import SHOP_DOMAIN

ALGORITHMS = ["HS256"]
LEEWAY_SECONDS = 10
MAX_TOKEN_LENGTH = 4096
REQUIRED_CLAIMS = ["aud", "dest", "exp", "iss", "nbf", "sub"]
_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*)")
_SHOP_URL = re.compile(r"https://(?P<shop>[^/?#]+)")
USER_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # Shopify's are numeric; a bound for the grants' column


class Refusal(enum.StrEnum):
    """Why a request is not authenticated (the 401's detail)."""

    MISSING_TOKEN = "missing-token"  # noqa: S105 - a reason, not a secret
    MALFORMED_AUTHORIZATION = "malformed-authorization"
    MALFORMED_TOKEN = "malformed-token"  # noqa: S105 - a reason, not a secret
    ALGORITHM_NOT_ALLOWED = "algorithm-not-allowed"
    BAD_SIGNATURE = "bad-signature"
    WRONG_AUDIENCE = "wrong-audience"
    MISSING_CLAIM = "missing-claim"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    DEST_NOT_A_SHOP = "dest-not-a-shop"
    ISSUER_MISMATCH = "issuer-mismatch"
    UNKNOWN_SHOP = "unknown-shop"  # a valid token of a shop that is not (or no longer) installed: the guard's


@dataclass(frozen=True)
class StaffToken:
    """A verified token: the shop (``<shop>.myshopify.com``) and its staff user id."""

    shop: str
    user_id: str


def bearer_token(authorization: str | None) -> str | Refusal:
    """The token of an ``Authorization: Bearer <token>`` header."""
    if authorization is None or not authorization.strip():
        return Refusal.MISSING_TOKEN
    if len(authorization) > MAX_TOKEN_LENGTH:
        return Refusal.MALFORMED_AUTHORIZATION
    match = _BEARER.fullmatch(authorization.strip())
    return match.group(1) if match else Refusal.MALFORMED_AUTHORIZATION


def _claims(token: str, secret: str, api_key: str) -> dict[str, Any] | Refusal:
    """The token's claims once its algorithm, signature, audience and required claims hold. Time is checked
    by ``verify`` against the injected clock, not here (PyJWT would read the system clock)."""
    options: Any = {"require": REQUIRED_CLAIMS, "verify_exp": False, "verify_nbf": False, "verify_iat": False}
    try:
        return jwt.decode(token, secret, algorithms=ALGORITHMS, audience=api_key, options=options)
    except jwt.InvalidAlgorithmError:
        return Refusal.ALGORITHM_NOT_ALLOWED
    except jwt.InvalidSignatureError:
        return Refusal.BAD_SIGNATURE
    except jwt.InvalidAudienceError:
        return Refusal.WRONG_AUDIENCE
    except jwt.MissingRequiredClaimError:
        return Refusal.MISSING_CLAIM
    except jwt.PyJWTError:
        return Refusal.MALFORMED_TOKEN


def _timely(claims: dict[str, Any], now: datetime) -> Refusal | None:
    expires, not_before = claims["exp"], claims["nbf"]
    if not all(
        isinstance(value, int | float) and not isinstance(value, bool) for value in (expires, not_before)
    ):
        return Refusal.MALFORMED_TOKEN
    instant = now.timestamp()
    if instant > expires + LEEWAY_SECONDS:
        return Refusal.EXPIRED
    if instant < not_before - LEEWAY_SECONDS:
        return Refusal.NOT_YET_VALID
    return None


def _staff(claims: dict[str, Any]) -> StaffToken | Refusal:
    dest, issuer, user = claims["dest"], claims["iss"], claims["sub"]
    match = _SHOP_URL.fullmatch(dest) if isinstance(dest, str) else None
    if match is None or not SHOP_DOMAIN.fullmatch(match["shop"]):
        return Refusal.DEST_NOT_A_SHOP
    if issuer != f"{dest}/admin":
        return Refusal.ISSUER_MISMATCH
    if not isinstance(user, str) or not USER_ID.fullmatch(user):
        return Refusal.MALFORMED_TOKEN
    return StaffToken(shop=match["shop"], user_id=user)


def verify(authorization: str | None, secret: str, api_key: str, now: datetime) -> StaffToken | Refusal:
    """Who the request's ``Authorization`` header authenticates at ``now``, or why it does not."""
    token = bearer_token(authorization)
    if isinstance(token, Refusal):
        return token
    claims = _claims(token, secret, api_key)
    if isinstance(claims, Refusal):
        return claims
    return _timely(claims, now) or _staff(claims)
