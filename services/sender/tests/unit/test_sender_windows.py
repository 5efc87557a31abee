"""Send windows: open or closed, the next opening (DST, midnight, zones), and whose zone counts."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from restock_sender.windows import SendWindow, next_opening, parse_window, shopper_zone

DAY = parse_window("09:00", "20:00")
NIGHT = parse_window("22:00", "06:00")
NY, PARIS = ZoneInfo("America/New_York"), ZoneInfo("Europe/Paris")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("window", "now", "zone", "expected"),
    [
        # Open: no deferral (start inclusive).
        (DAY, utc(2026, 11, 25, 14, 0), NY, None),  # 09:00 EST
        # Before the start: today's opening.
        (DAY, utc(2026, 11, 25, 13, 59), NY, utc(2026, 11, 25, 14, 0)),
        # At the end (exclusive) and after: tomorrow's opening.
        (DAY, utc(2026, 11, 26, 1, 0), NY, utc(2026, 11, 26, 14, 0)),  # 20:00 EST
        (DAY, utc(2026, 11, 25, 23, 30), PARIS, utc(2026, 11, 26, 8, 0)),  # 00:30 CET next day
        # Crossing midnight: open late and early, closed in between.
        (NIGHT, utc(2026, 11, 25, 22, 30), UTC, None),
        (NIGHT, utc(2026, 11, 25, 5, 59), UTC, None),
        (NIGHT, utc(2026, 11, 25, 6, 0), UTC, utc(2026, 11, 25, 22, 0)),
        (NIGHT, utc(2026, 11, 25, 12, 0), PARIS, utc(2026, 11, 25, 21, 0)),  # 22:00 CET
        # DST, spring forward (NY 2026-03-08 02:00 -> 03:00): 09:00 EDT is 13:00 UTC, one hour earlier.
        (DAY, utc(2026, 3, 8, 6, 0), NY, utc(2026, 3, 8, 13, 0)),
        (DAY, utc(2026, 3, 7, 6, 0), NY, utc(2026, 3, 7, 14, 0)),
        # DST, fall back (NY 2026-11-01 02:00 -> 01:00): 09:00 EST is 14:00 UTC again.
        (DAY, utc(2026, 11, 1, 5, 0), NY, utc(2026, 11, 1, 14, 0)),
        # A start inside the spring-forward gap reads with the offset before the jump: 02:30 EST = 03:30 EDT.
        (parse_window("02:30", "04:00"), utc(2026, 3, 8, 5, 0), NY, utc(2026, 3, 8, 7, 30)),
        # A start in the autumn repeat opens at its first occurrence (EDT).
        (parse_window("01:30", "02:00"), utc(2026, 11, 1, 4, 0), NY, utc(2026, 11, 1, 5, 30)),
        # start == end: always open.
        (parse_window("09:00", "09:00"), utc(2026, 11, 25, 3, 0), NY, None),
    ],
)
def test_next_opening(window: SendWindow, now: datetime, zone: ZoneInfo, expected: datetime | None) -> None:
    assert next_opening(window, now, zone) == expected


@pytest.mark.parametrize("text", ["9:00", "24:00", "12:60", "noon", "", "09:00:00"])
def test_malformed_times_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="HH:MM"):
        parse_window(text, "20:00")


def test_parse() -> None:
    assert parse_window(" 09:05 ", "23:59") == SendWindow(time(9, 5), time(23, 59))


@pytest.mark.parametrize(
    ("phone", "shop_zone", "expected"),
    [
        ("+33612345678", "America/New_York", "Europe/Paris"),  # one zone: the shopper's
        ("+4915112345678", None, "Europe/Berlin"),
        ("+12125550123", "Europe/Paris", "America/New_York"),  # a New York area code names one zone
        ("+15005550006", "Europe/Paris", "Europe/Paris"),  # several (or unknown): the shop's
        ("not a number", "Europe/Paris", "Europe/Paris"),
        (None, "Asia/Tokyo", "Asia/Tokyo"),
        (None, "Mars/Olympus_Mons", "UTC"),  # an unknown shop zone: UTC
        (None, None, "UTC"),
    ],
)
def test_whose_zone(phone: str | None, shop_zone: str | None, expected: str) -> None:
    assert shopper_zone(phone, shop_zone) == ZoneInfo(expected)
