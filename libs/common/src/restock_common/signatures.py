"""Signatures Shopify and Twilio put on their requests, computed and verified in constant time.

Pure functions: the secret is passed in. Used by the services to verify and by the sandbox to sign,
so both sides share one definition of each algorithm.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping


def shopify_webhook_hmac(secret: str, body: bytes) -> str:
    """``X-Shopify-Hmac-Sha256``: base64 of HMAC-SHA256 over the raw request body."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify_shopify_webhook(secret: str, body: bytes, header: str | None) -> bool:
    """True when the header is the body's HMAC under the app secret."""
    if not header:
        return False
    return hmac.compare_digest(shopify_webhook_hmac(secret, body).encode(), header.strip().encode())


def app_proxy_signature(secret: str, params: Iterable[tuple[str, str]]) -> str:
    """The App Proxy ``signature`` query parameter: hex HMAC-SHA256 over the sorted ``key=value`` pairs
    (values of a repeated key joined by commas), concatenated with no separator, ``signature`` excluded."""
    grouped: dict[str, list[str]] = {}
    for key, value in params:
        if key != "signature":
            grouped.setdefault(key, []).append(value)
    message = "".join(f"{key}={','.join(values)}" for key, values in sorted(grouped.items()))
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def verify_app_proxy(secret: str, params: Iterable[tuple[str, str]]) -> bool:
    """True when the query's ``signature`` matches the other parameters under the app secret."""
    pairs = list(params)
    given = [value for key, value in pairs if key == "signature"]
    if len(given) != 1:
        return False
    return hmac.compare_digest(app_proxy_signature(secret, pairs).encode(), given[0].encode())


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """``X-Twilio-Signature``: base64 HMAC-SHA1 over the full URL followed by each POST parameter's
    name and value, sorted by name."""
    message = url + "".join(f"{key}{params[key]}" for key in sorted(params))
    digest = hmac.new(auth_token.encode(), message.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def verify_twilio(auth_token: str, url: str, params: Mapping[str, str], header: str | None) -> bool:
    """True when the header is Twilio's signature of this request."""
    if not header:
        return False
    return hmac.compare_digest(twilio_signature(auth_token, url, params).encode(), header.encode())


def contact_hash(contact: str) -> str:
    """A stable, non-reversible id of a normalised email or E.164 phone, for lookups and logs."""
    return hashlib.sha256(contact.strip().lower().encode()).hexdigest()
