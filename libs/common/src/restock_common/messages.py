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
