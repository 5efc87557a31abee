"""Typed, versioned messages that cross the broker. Defined once; every service imports them.

Messages are frozen msgspec Structs encoded as JSON. Decoding ignores unknown fields, so a newer
producer can add a field during a rolling deploy; a message whose ``schema_version`` is newer than this
code understands is refused (``UnsupportedVersion``) and sent to the poison queue instead of guessed at.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, TypeVar

import msgspec

Channel = Literal["email", "sms"]
CHANNELS: tuple[Channel, ...] = ("email", "sms")


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every broker message."""

    schema_version: int = 1

    SUPPORTED_VERSION = 1


class RestockDetected(Message, frozen=True, kw_only=True):
    """A variant went from 0 to 1+ (after cooldown and debounce): freeze its targets and notify them."""

    restock_event_id: int
    tenant_id: int
    shop_domain: str
    variant_id: int
    product_id: int | None = None
    available: int
    restock_window: int
    detected_at: datetime


class JobBatch(Message, frozen=True, kw_only=True):
    """Notification jobs ready to send on one channel, FIFO by subscription time."""

    channel: Channel
    job_ids: list[int]


class StockChanged(Message, frozen=True, kw_only=True):
    """A variant's summed availability changed (any direction), as the detector saw it.

    Published by the detector (through its outbox, in order per variant) on every change of a variant's
    availability, restock or not; the dispatcher's wave planner re-plans on it (a sale shrinks the next
    wave, a sell-out holds the remaining targets in line).
    """

    tenant_id: int
    shop_domain: str
    variant_id: int
    available: int
    previous: int
    observed_at: datetime
    source: str  # webhook | sync


class OrderLine(msgspec.Struct, frozen=True, kw_only=True):
    """One line of an order: enough for fulfilment and revenue attribution, no personal data."""

    variant_id: int
    quantity: int = 1
    price_cents: int = 0


class OrderCreated(Message, frozen=True, kw_only=True):
    """Shopify's ``orders/create``, verified by the detector: who bought which variants.

    ``contact_hashes`` are ``restock_common.signatures.contact_hash`` of the order's email and phone (when
    present), so the dispatcher can mark the buyer's subscriptions fulfilled without personal data on the
    broker.
    """

    tenant_id: int
    shop_domain: str
    order_id: int
    lines: list[OrderLine]
    contact_hashes: list[str]
    currency: str = "USD"
    ordered_at: datetime


class ConfirmationRequested(Message, frozen=True, kw_only=True):
    """Double opt-in: send subscription ``subscription_id`` its confirmation (an email with a signed
    link, or an SMS asking to reply YES). Published by the admin-api after the signup commits; the sender of
    ``channel`` consumes it."""

    tenant_id: int
    subscription_id: int
    channel: Channel
    requested_at: datetime


class UnsupportedVersion(ValueError):
    """The message was written by a newer schema than this code understands."""


M = TypeVar("M", bound=Message)

_encoder = msgspec.json.Encoder()


def encode(message: Message) -> bytes:
    """JSON bytes of a message."""
    return _encoder.encode(message)


def decode(body: bytes, kind: type[M]) -> M:
    """Decode and validate a message; raises ``msgspec.ValidationError``/``DecodeError`` or
    ``UnsupportedVersion``, all of them ``ValueError``s the consumer sends to the poison queue."""
    message = msgspec.json.decode(body, type=kind)
    if message.schema_version > kind.SUPPORTED_VERSION:
        raise UnsupportedVersion(
            f"{kind.__name__} schema_version {message.schema_version} > {kind.SUPPORTED_VERSION}"
        )
    return message
