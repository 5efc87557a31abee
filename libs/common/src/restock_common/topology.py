"""The broker topology as values, declared in one place.

One durable topic exchange ``restock`` carries every message, routed by its kind. Each consumer owns one
quorum queue: quorum queues survive a broker node restart, and ``x-delivery-limit`` stops a message that
keeps failing (a poison message) from looping forever: past the limit RabbitMQ dead-letters it to the
``restock.dlx`` exchange, which routes everything into ``restock.poison`` for an operator to read.
Retries of notification *jobs* are not done here: they are scheduled from ``next_attempt_at`` in PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from restock_common.messages import Channel

EXCHANGE = "restock"
DEAD_LETTER_EXCHANGE = "restock.dlx"
POISON_QUEUE = "restock.poison"

RESTOCK_DETECTED = "restock.detected"
STOCK_CHANGED = "stock.changed"
ORDER_CREATED = "order.created"


def jobs_routing_key(channel: Channel) -> str:
    """The routing key of job batches for one channel (``jobs.email``, ``jobs.sms``)."""
    return f"jobs.{channel}"


@dataclass(frozen=True)
class QueueSpec:
    """A consumer's queue and the routing keys bound to it."""

    name: str
    routing_keys: tuple[str, ...]
    arguments: dict[str, Any] = field(default_factory=dict)


def queue_arguments(delivery_limit: int) -> dict[str, Any]:
    """Arguments of every work queue: quorum, bounded redelivery, poison to the dead-letter exchange."""
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
    }


def dispatcher_queue(delivery_limit: int) -> QueueSpec:
    """What the dispatcher consumes."""
    return QueueSpec("dispatcher.restock-detected", (RESTOCK_DETECTED,), queue_arguments(delivery_limit))


def dispatcher_inventory_queue(delivery_limit: int) -> QueueSpec:
    """The dispatcher's second queue: stock changes (wave re-planning) and orders (fulfilment). Kept apart
    from restock.detected so that a burst of stock changes never delays a freeze."""
    return QueueSpec("dispatcher.inventory", (STOCK_CHANGED, ORDER_CREATED), queue_arguments(delivery_limit))


def confirm_routing_key(channel: Channel) -> str:
    """The routing key of double opt-in confirmation requests for one channel (``confirm.email``)."""
    return f"confirm.{channel}"


def sender_confirm_queue(channel: Channel, delivery_limit: int) -> QueueSpec:
    """Confirmation requests the sender of one channel consumes, apart from job batches."""
    return QueueSpec(
        f"sender.{channel}.confirm", (confirm_routing_key(channel),), queue_arguments(delivery_limit)
    )


def sender_queue(channel: Channel, delivery_limit: int) -> QueueSpec:
    """What the sender of one channel consumes."""
    return QueueSpec(f"sender.{channel}", (jobs_routing_key(channel),), queue_arguments(delivery_limit))


def poison_queue() -> QueueSpec:
    """Where poison messages of every queue end, kept for inspection (quorum, no limit)."""
    return QueueSpec(POISON_QUEUE, ("#",), {"x-queue-type": "quorum"})
