"""Shopify session tokens (``restock_admin.staff.session_token``): one row per rule, no I/O, a fixed clock."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest

from restock_admin.staff.session_token import LEEWAY_SECONDS, Refusal, StaffToken, bearer_token, verify

SECRET = "shpss_0123456789abcdef0123456789abcdef"  # as long as Shopify's client secrets
API_KEY = "restock-test-app"
NOW = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)
T = int(NOW.timestamp())
SHOP_URL = "https://a-shop.myshopify.com"


def claims(**changes: Any) -> dict[str, Any]:
    """A valid token's claims, as Shopify sends them, with ``changes`` (None: the claim left out)."""
    valid = {
        "iss": f"{SHOP_URL}/admin",
        "dest": SHOP_URL,
        "aud": API_KEY,
        "sub": "42",
        "exp": T + 60,
        "nbf": T - 5,
        "iat": T - 5,
        "jti": "00000000-0000-0000-0000-000000000000",
        "sid": "session",
    }
    return {key: value for key, value in {**valid, **changes}.items() if value is not None}


def signed(payload: dict[str, Any], secret: str = SECRET, algorithm: str = "HS256") -> str:
    return "Bearer " + jwt.encode(payload, secret, algorithm=algorithm)


def unsigned(payload: dict[str, Any]) -> str:
    """``alg: none``, no signature: what an attacker sends hoping the verifier trusts the header."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"Bearer {part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


CASES = [
    ("valid", signed(claims()), StaffToken("a-shop.myshopify.com", "42")),
    (
        "scheme any case",
        signed(claims()).replace("Bearer", "bEARER"),
        StaffToken("a-shop.myshopify.com", "42"),
    ),
    (
        "within leeway after exp",
        signed(claims(exp=T - LEEWAY_SECONDS)),
        StaffToken("a-shop.myshopify.com", "42"),
    ),
    ("wrong signature", signed(claims(), secret=SECRET[::-1]), Refusal.BAD_SIGNATURE),
    ("alg none", unsigned(claims()), Refusal.ALGORITHM_NOT_ALLOWED),
    ("alg HS512", signed(claims(), algorithm="HS512"), Refusal.ALGORITHM_NOT_ALLOWED),
    ("expired", signed(claims(exp=T - LEEWAY_SECONDS - 1)), Refusal.EXPIRED),
    ("not yet valid", signed(claims(nbf=T + LEEWAY_SECONDS + 1)), Refusal.NOT_YET_VALID),
    ("no exp", signed(claims(exp=None)), Refusal.MISSING_CLAIM),
    ("no nbf", signed(claims(nbf=None)), Refusal.MISSING_CLAIM),
    ("exp not a number", signed(claims(exp="soon")), Refusal.MALFORMED_TOKEN),
    ("wrong aud", signed(claims(aud="another-app")), Refusal.WRONG_AUDIENCE),
    ("no aud", signed(claims(aud=None)), Refusal.MISSING_CLAIM),
    (
        "iss of another shop",
        signed(claims(iss="https://b-shop.myshopify.com/admin")),
        Refusal.ISSUER_MISMATCH,
    ),
    ("iss without /admin", signed(claims(iss=SHOP_URL)), Refusal.ISSUER_MISMATCH),
    (
        "dest not myshopify",
        signed(claims(dest="https://a-shop.example.com", iss="https://a-shop.example.com/admin")),
        Refusal.DEST_NOT_A_SHOP,
    ),
    (
        "dest over http",
        signed(claims(dest="http://a-shop.myshopify.com", iss="http://a-shop.myshopify.com/admin")),
        Refusal.DEST_NOT_A_SHOP,
    ),
    (
        "dest with a path",
        signed(claims(dest=f"{SHOP_URL}/x", iss=f"{SHOP_URL}/x/admin")),
        Refusal.DEST_NOT_A_SHOP,
    ),
    ("missing sub", signed(claims(sub=None)), Refusal.MISSING_CLAIM),
    ("sub not an id", signed(claims(sub="a b\x00")), Refusal.MALFORMED_TOKEN),
    ("no header", None, Refusal.MISSING_TOKEN),
    ("blank header", "  ", Refusal.MISSING_TOKEN),
    ("basic scheme", "Basic dXNlcjpwYXNz", Refusal.MALFORMED_AUTHORIZATION),
    ("bearer without token", "Bearer", Refusal.MALFORMED_AUTHORIZATION),
    ("token without scheme", signed(claims()).removeprefix("Bearer "), Refusal.MALFORMED_AUTHORIZATION),
    ("two segments", "Bearer abc.def", Refusal.MALFORMED_AUTHORIZATION),
    ("oversized", "Bearer " + "a" * 5000 + ".b.c", Refusal.MALFORMED_AUTHORIZATION),
    ("not a jwt", "Bearer abc.def.ghi", Refusal.MALFORMED_TOKEN),
]


@pytest.mark.parametrize(
    ("authorization", "expected"), [case[1:] for case in CASES], ids=[c[0] for c in CASES]
)
def test_verify(authorization: str | None, expected: StaffToken | Refusal) -> None:
    assert verify(authorization, SECRET, API_KEY, NOW) == expected


def test_the_clock_is_the_one_passed_in() -> None:
    token = signed(claims())
    assert verify(token, SECRET, API_KEY, datetime(2030, 1, 1, tzinfo=UTC)) is Refusal.EXPIRED
    assert verify(token, SECRET, API_KEY, datetime(2020, 1, 1, tzinfo=UTC)) is Refusal.NOT_YET_VALID


def test_bearer_token_takes_the_token_out_of_the_header() -> None:
    assert bearer_token("Bearer a.b.c") == "a.b.c"
