"""The ``restock.detected`` payload written around the event's id (``restocks.around_event_id``): joined
around any id, the two halves are byte for byte the message encoded with that id."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from restock_common import messages
from restock_detector.ports import RestockMessage
from restock_detector.restocks import EVENT_ID_PLACEHOLDER, around_event_id


def detected(event_id: int, shop_domain: str = "shop.myshopify.com", product_id: int | None = 7) -> bytes:
    return messages.encode(
        messages.RestockDetected(
            restock_event_id=event_id,
            tenant_id=3,
            shop_domain=shop_domain,
            variant_id=123456789,
            product_id=product_id,
            available=5,
            restock_window=2026120712,
            detected_at=datetime(2026, 12, 7, 12, 0, tzinfo=UTC),
        )
    )


@given(
    event_id=st.integers(min_value=1, max_value=2**63 - 1),
    # Even a shop domain spelling the key out is escaped inside its string, so it is never taken for it.
    shop_domain=st.sampled_from(["a.myshopify.com", '"restock_event_id":-1', "ünïcode.myshopify.com"]),
    product_id=st.one_of(st.none(), st.integers(min_value=1, max_value=2**53)),
)
def test_the_halves_joined_around_an_id_are_the_message_encoded_with_it(
    event_id: int, shop_domain: str, product_id: int | None
) -> None:
    before, after = around_event_id(detected(EVENT_ID_PLACEHOLDER, shop_domain, product_id).decode())
    message = RestockMessage(uuid.uuid4(), "3:123456789", before, after, None)
    assert message.payload(event_id).encode() == detected(event_id, shop_domain, product_id)


@pytest.mark.parametrize("event_id", [1, 42, 9999])
def test_a_message_without_the_placeholder_is_refused(event_id: int) -> None:
    with pytest.raises(ValueError, match="placeholder"):
        around_event_id(detected(event_id).decode())
