"""``JobPublisher`` over the shared broker: one confirmed ``JobBatch`` on ``jobs.<channel>``."""

from __future__ import annotations

from restock_common import topology
from restock_common.broker import Broker
from restock_common.messages import Channel, JobBatch


class BrokerJobPublisher:
    """Publishes job batches with publisher confirms (``Broker.publish``)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def publish(self, channel: Channel, job_ids: list[int]) -> None:
        await self.broker.publish(
            JobBatch(channel=channel, job_ids=job_ids), topology.jobs_routing_key(channel)
        )
