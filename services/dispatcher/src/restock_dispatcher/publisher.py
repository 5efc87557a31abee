"""``BatchPublisher`` over the shared broker helper (publisher confirms, mandatory routing)."""

from __future__ import annotations

from restock_common import topology
from restock_common.broker import Broker
from restock_common.messages import JobBatch


class BrokerBatchPublisher:
    """Publishes each batch to ``jobs.<channel>`` and returns after the broker's confirm."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def publish(self, batch: JobBatch, message_id: str) -> None:
        await self.broker.publish(batch, topology.jobs_routing_key(batch.channel), message_id=message_id)
