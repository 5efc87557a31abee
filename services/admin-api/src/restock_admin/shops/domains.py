"""What a shop registration may contain. Pure: no I/O.

Rules:
- A shop is named by its permanent ``<handle>.myshopify.com`` domain (never a custom domain): lower-case
  letters, digits and hyphens, starting with a letter or digit. Anything else is refused, not corrected.
- A shop's timezone is an IANA name (``Europe/Paris``), because send windows are computed in local time.
"""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

SHOP_DOMAIN = re.compile(r"^[a-z0-9][a-z0-9-]*\.myshopify\.com$")


class InvalidShop(ValueError):
    """The registration names no valid shop domain or timezone."""


def shop_domain(value: str) -> str:
    """The domain itself when it is a valid ``*.myshopify.com`` domain."""
    if not SHOP_DOMAIN.fullmatch(value):
        raise InvalidShop(f"invalid shop domain {value!r}: expected <shop>.myshopify.com (lower-case)")
    return value


def timezone_name(value: str) -> str:
    """The name itself when it is a known IANA timezone."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidShop(f"unknown timezone {value!r}: expected an IANA name such as Europe/Paris") from None
    return value
