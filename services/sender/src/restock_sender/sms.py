"""SMS text rules: segments (GSM-7 / UCS-2), the opt-out sentence, E.164 numbers.

Rules
-----
- A body whose every character is in the GSM 03.38 alphabet travels as GSM-7: a single message holds 160
  septets, a concatenated one 153 per segment (the User Data Header takes 7). Characters of the extension
  table (``^{}\\[~]|€`` and form feed) cost two septets (an escape, then the character), and an escape pair
  is never split across segments.
- Any other character makes the whole body UCS-2: 70 UTF-16 code units in a single message, 67 per
  segment when concatenated, and a surrogate pair (an emoji) is never split.
- The opt-out sentence (a rule, e.g. "Reply STOP to opt out.") is appended on its own line unless the
  body already carries it (compared case-insensitively, whitespace collapsed).
- Numbers are sent in E.164 (``+`` then 2 to 15 digits, no leading zero), and must be a valid number
  for their country (``phonenumbers``); anything else is refused before the provider is called.

Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import phonenumbers

Encoding = Literal["GSM-7", "UCS-2"]

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")

SINGLE_LIMIT: dict[Encoding, int] = {"GSM-7": 160, "UCS-2": 70}
SEGMENT_LIMIT: dict[Encoding, int] = {"GSM-7": 153, "UCS-2": 67}

_E164 = re.compile(r"^\+[1-9]\d{1,14}$")


@dataclass(frozen=True)
class Segmentation:
    """How a body travels: its encoding, its length in units of that encoding, and its segment count."""

    encoding: Encoding
    units: int
    segments: int


def encoding_of(body: str) -> Encoding:
    """GSM-7 when every character is in the GSM alphabet (basic or extension table), else UCS-2."""
    if all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in body):
        return "GSM-7"
    return "UCS-2"


def _unit_costs(body: str, encoding: Encoding) -> list[int]:
    """The cost of each indivisible piece of the body, in septets (GSM-7) or UTF-16 code units (UCS-2)."""
    if encoding == "GSM-7":
        return [2 if char in GSM7_EXTENSION else 1 for char in body]
    return [2 if ord(char) > 0xFFFF else 1 for char in body]


def segments(body: str) -> Segmentation:
    """The segment count of ``body`` (an empty body is still one message)."""
    encoding = encoding_of(body)
    costs = _unit_costs(body, encoding)
    units = sum(costs)
    if units <= SINGLE_LIMIT[encoding]:
        return Segmentation(encoding, units, 1)
    count, used, limit = 1, 0, SEGMENT_LIMIT[encoding]
    for cost in costs:
        if used + cost > limit:  # pieces are never split: the next segment starts with this one
            count, used = count + 1, 0
        used += cost
    return Segmentation(encoding, units, count)


def _normalised(text: str) -> str:
    return " ".join(text.split()).casefold()


def with_opt_out(body: str, opt_out_text: str) -> str:
    """The body with the opt-out sentence appended on its own line, unless it already has it."""
    sentence = opt_out_text.strip()
    if not sentence or _normalised(sentence) in _normalised(body):
        return body
    return f"{body.rstrip()}\n{sentence}"


def is_e164(number: str) -> bool:
    """True for a valid number written in E.164 (what Twilio's ``To`` takes)."""
    if not _E164.match(number):
        return False
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(parsed)
