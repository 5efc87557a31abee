"""The SMS text rules: GSM-7 / UCS-2 segments, the opt-out sentence, E.164 checks (table-driven)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from restock_sender.sms import Segmentation, encoding_of, is_e164, segments, with_opt_out


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("", Segmentation("GSM-7", 0, 1)),
        ("a" * 160, Segmentation("GSM-7", 160, 1)),
        ("a" * 161, Segmentation("GSM-7", 161, 2)),
        ("a" * 306, Segmentation("GSM-7", 306, 2)),
        ("a" * 307, Segmentation("GSM-7", 307, 3)),
        ("€" * 80, Segmentation("GSM-7", 160, 1)),  # extension characters cost two septets
        ("€" * 81, Segmentation("GSM-7", 162, 2)),
        # 152 septets then an escape pair: the pair does not fit in segment one and is not split.
        ("a" * 152 + "€" + "a" * 10, Segmentation("GSM-7", 164, 2)),
        ("a" * 152 + "€" + "a" * 152, Segmentation("GSM-7", 306, 3)),
        ("é" * 160, Segmentation("GSM-7", 160, 1)),  # é is in the GSM basic table
        ("ç" * 70, Segmentation("UCS-2", 70, 1)),  # lower-case ç is not: UCS-2
        ("a" * 69 + "ç", Segmentation("UCS-2", 70, 1)),
        ("a" * 70 + "ç", Segmentation("UCS-2", 71, 2)),
        ("a" * 133 + "ç", Segmentation("UCS-2", 134, 2)),
        ("a" * 134 + "ç", Segmentation("UCS-2", 135, 3)),
        ("😀" * 35, Segmentation("UCS-2", 70, 1)),  # a surrogate pair is two code units
        ("a" * 66 + "😀" + "a", Segmentation("UCS-2", 69, 1)),
        ("a" * 66 + "😀" + "a" * 4, Segmentation("UCS-2", 72, 2)),  # the pair moves to segment two
    ],
)
def test_segments(body: str, expected: Segmentation) -> None:
    assert segments(body) == expected


@pytest.mark.parametrize(
    ("body", "encoding"),
    [("Back in stock: Red Scarf", "GSM-7"), ("{[~]}^|\\", "GSM-7"), ("Écharpe \u2013 rouge", "UCS-2")],
)
def test_encoding(body: str, encoding: str) -> None:
    assert encoding_of(body) == encoding


@given(st.text(max_size=800))
def test_segments_hold_every_unit_and_never_exceed_a_segment(body: str) -> None:
    result = segments(body)
    single = 160 if result.encoding == "GSM-7" else 70
    per_segment = 153 if result.encoding == "GSM-7" else 67
    if result.units <= single:
        assert result.segments == 1
    else:
        assert result.segments * per_segment >= result.units
        assert (result.segments - 1) * per_segment < result.units


OPT_OUT = "Reply STOP to opt out."


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("Red Scarf is back.", "Red Scarf is back.\nReply STOP to opt out."),
        ("Red Scarf is back.\n\n", "Red Scarf is back.\nReply STOP to opt out."),
        ("Red Scarf is back. Reply STOP to opt out.", "Red Scarf is back. Reply STOP to opt out."),
        ("Back!  reply stop\nto  opt out.", "Back!  reply stop\nto  opt out."),  # already there
    ],
)
def test_opt_out_text_is_appended_once(body: str, expected: str) -> None:
    assert with_opt_out(body, OPT_OUT) == expected
    assert with_opt_out(with_opt_out(body, OPT_OUT), OPT_OUT) == expected


def test_an_empty_opt_out_rule_appends_nothing() -> None:
    assert with_opt_out("Back!", "  ") == "Back!"


@pytest.mark.parametrize(
    ("number", "valid"),
    [
        ("+14155552671", True),
        ("+447911123456", True),
        ("+15005550006", True),
        ("4155552671", False),  # no country code
        ("+1 415 555 2671", False),  # not E.164 formatting
        ("+0123456789", False),
        ("+15555555555", False),  # well-formed but not a valid number
        ("+1415555267100000", False),
        ("", False),
    ],
)
def test_e164(number: str, valid: bool) -> None:
    assert is_e164(number) is valid


@given(st.text(max_size=300), st.sampled_from([OPT_OUT, "Text STOP to end.", ""]))
def test_the_opt_out_text_is_appended_at_most_once(body: str, rule: str) -> None:
    once = with_opt_out(body, rule)
    assert with_opt_out(once, rule) == once
    assert " ".join(rule.split()).casefold() in " ".join(once.split()).casefold()
