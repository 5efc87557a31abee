"""How many SMS segments a body costs, as carriers (and Twilio's ``num_segments``) count them. Pure.

Rules:
- A body made only of GSM 03.38 characters is sent as GSM-7: 160 septets fit one message; a longer one
  is split into segments of 153 septets (7 go to the concatenation header). A character of the extension
  table (``^{}\\[~]|€`` and form feed) costs two septets (escape + character) and is never split across
  two segments.
- Any other character makes the whole body UCS-2: 70 UTF-16 code units fit one message, else segments of
  67; a surrogate pair (an emoji) is never split.
- An empty body is one segment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")

# (single-message capacity, per-segment capacity when concatenated), in septets or UTF-16 code units.
CAPACITY: dict[Encoding, tuple[int, int]] = {"GSM-7": (160, 153), "UCS-2": (70, 67)}


@dataclass(frozen=True)
class Segmentation:
    """A body's encoding and segment count."""

    encoding: Encoding
    segments: int
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)


def encoding_of(body: str) -> Encoding:
    """GSM-7 when every character is in the GSM 03.38 tables, else UCS-2."""
    return "GSM-7" if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in body) else "UCS-2"


def _unit_cost(char: str, encoding: Encoding) -> int:
    if encoding == "GSM-7":
        return 2 if char in GSM7_EXTENSION else 1
    return 2 if ord(char) > 0xFFFF else 1  # outside the BMP: a surrogate pair


def segment(body: str) -> Segmentation:
    """The segmentation of ``body`` (see the module's rules)."""
    encoding = encoding_of(body)
    costs = [_unit_cost(c, encoding) for c in body]
    single, per_segment = CAPACITY[encoding]
    total = sum(costs)
    if total <= single:
        return Segmentation(encoding, 1, total)
    segments, used = 1, 0
    for cost in costs:  # greedy: a character that does not fit whole opens the next segment
        if used + cost > per_segment:
            segments, used = segments + 1, 0
        used += cost
    return Segmentation(encoding, segments, total)
