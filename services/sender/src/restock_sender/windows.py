"""Send windows: the local hours a shop allows messages on a channel, and the next opening when closed.

Theory of operation
-------------------
A shop's rules may give each channel a window, ``{"start": "09:00", "end": "20:00"}``, read in the
*shopper's* local time. The zone is the phone number's when it names exactly one
(``phonenumbers.timezone``: a French number has one zone, a US number usually several), else the shop's
(``tenants.timezone``), else UTC when that name is unknown.

- ``start < end``: open from ``start`` (inclusive) to ``end`` (exclusive) on every local day.
- ``start > end``: the window crosses midnight (``22:00``-``06:00``): open late and early.
- ``start == end``: always open (a window that would never open drops nothing, so it is refused).

A send outside the window is deferred to the next local ``start``. Wall times are resolved by
``zoneinfo`` (PEP 495): a ``start`` inside a spring-forward gap (02:30 on the night clocks jump 02:00 ->
03:00) is read with the offset before the jump, so it opens at 03:30 new time; in the autumn repeat the
first occurrence counts. A malformed window
is reported by ``parse_window`` (``ValueError``) and treated by callers as no window: a typo in a rule
must never stop delivery.

Pure: no I/O, the instant is an input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_timezones

_HH_MM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_UNKNOWN_ZONE = "Etc/Unknown"


@dataclass(frozen=True)
class SendWindow:
    """Local opening hours: ``start`` inclusive, ``end`` exclusive; crosses midnight when start > end."""

    start: time
    end: time

    def is_open_at(self, local: time) -> bool:
        """Whether the window is open at this local wall time."""
        if self.start == self.end:
            return True
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


def parse_time(text: str) -> time:
    """``HH:MM`` (24 h) as a time; ``ValueError`` otherwise."""
    match = _HH_MM.match(text.strip())
    if match is None:
        raise ValueError(f"not an HH:MM time: {text!r}")
    return time(int(match[1]), int(match[2]))


def parse_window(start: str, end: str) -> SendWindow:
    """A window from its rule's strings; ``ValueError`` when either is not ``HH:MM``."""
    return SendWindow(parse_time(start), parse_time(end))


def zone_named(name: str | None) -> ZoneInfo:
    """The IANA zone ``name``, or UTC when it is missing or unknown."""
    try:
        return ZoneInfo(name) if name else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def shopper_zone(phone: str | None, shop_zone: str | None) -> ZoneInfo:
    """The phone number's zone when it names exactly one, else the shop's (see the module's rules)."""
    if phone:
        try:
            zones = phone_timezones.time_zones_for_number(phonenumbers.parse(phone, None))
        except phonenumbers.NumberParseException:
            zones = ()
        if len(zones) == 1 and zones[0] != _UNKNOWN_ZONE:
            return zone_named(zones[0])
    return zone_named(shop_zone)


def next_opening(window: SendWindow, now: datetime, zone: ZoneInfo) -> datetime | None:
    """``None`` when the window is open at ``now`` (aware); else the UTC instant it next opens."""
    local = now.astimezone(zone)
    if window.is_open_at(local.time().replace(tzinfo=None)):
        return None
    day = local.date()
    for _ in range(3):  # today's start, or tomorrow's (a DST day can shift a wall time past "now")
        opening = datetime.combine(day, window.start, tzinfo=zone).astimezone(UTC)
        if opening > now:
            return opening
        day += timedelta(days=1)
    raise AssertionError("a window start always comes within two days")  # pragma: no cover
