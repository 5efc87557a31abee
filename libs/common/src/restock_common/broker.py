"""Publish and consume over RabbitMQ (aio-pika), with the guarantees DESIGN.md asks for.

- ``Broker.publish`` waits for the publisher confirm and uses ``mandatory``: when it returns, the broker
  has the message on disk in a queue, or it raised.
- ``Broker.consume`` runs a handler per message and turns the handler's ``Outcome`` into the message's
  fate: ``ACK`` after the handler committed its work, ``REQUEUE`` for a transient failure, ``POISON`` to
  the dead-letter exchange with a logged reason. A message that cannot be decoded is poison; an
  unexpected exception requeues it, and ``x-delivery-limit`` turns a message that always fails into
  poison. The W3C trace context travels in the headers: each publish runs in a PRODUCER span
  ``publish restock`` whose context is injected, each handler in a CONSUMER span ``process {queue}``
  continuing the extracted context (ADR 19: names and attributes per the messaging semconv).
- ``Broker.consume_routes`` is the same for a queue that carries several message kinds: the routing key
  picks the schema and the handler; an unknown routing key is poison.
- ``Consumer.stop`` is the graceful shutdown: stop taking messages, let in-flight handlers finish, ack.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import aio_pika
import msgspec
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from restock_common import topology
from restock_common.messages import Message, decode, encode

log = logging.getLogger(__name__)
tracer = trace.get_tracer("restock.broker")

M = TypeVar("M", bound=Message)


class Outcome(enum.Enum):
    """What happens to a consumed message."""

    ACK = "ack"  # done (or nothing to do): remove it
    REQUEUE = "requeue"  # try again later (counts towards x-delivery-limit)
    POISON = "poison"  # never processable: to the dead-letter exchange, with a logged reason


Handler = Callable[[M], Awaitable[Outcome]]


@dataclass(frozen=True)
class Route(Generic[M]):
    """How a consumer decodes and handles the messages of one routing key."""

    kind: type[M]
    handler: Handler[M]


ANY_ROUTING_KEY = None  # a route for every routing key of the queue (``Broker.consume``)


def publish_attributes(routing_key: str, message_id: str, body_size: int) -> dict[str, AttributeValue]:
    """A PRODUCER span's attributes (OpenTelemetry messaging semconv; RabbitMQ: the destination is the
    exchange, the routing key its own attribute). ADR 19."""
    return {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": topology.EXCHANGE,
        "messaging.rabbitmq.destination.routing_key": routing_key,
        "messaging.message.id": message_id,
        "messaging.message.body.size": body_size,
    }


def process_attributes(queue: str, message: AbstractIncomingMessage) -> dict[str, AttributeValue]:
    """A CONSUMER span's attributes: where the message was published, and the queue it was taken from
    (``messaging.destination.subscription.name``: a queue is RabbitMQ's subscription)."""
    attributes: dict[str, AttributeValue] = {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": message.exchange or "",
        "messaging.destination.subscription.name": queue,
        "messaging.message.id": message.message_id or "",
        "messaging.message.body.size": len(message.body),
    }
    if message.routing_key:
        attributes["messaging.rabbitmq.destination.routing_key"] = message.routing_key
    if message.delivery_tag is not None:
        attributes["messaging.rabbitmq.message.delivery_tag"] = message.delivery_tag
    return attributes


class Broker:
    """One robust connection, one confirming publish channel, the declared topology."""

    def __init__(self, connection: AbstractRobustConnection, delivery_limit: int) -> None:
        self.connection = connection
        self.delivery_limit = delivery_limit
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None

    @classmethod
    async def connect(cls, url: str, *, delivery_limit: int = 5, heartbeat: int = 15) -> Broker:
        """Connect (reconnecting on loss) and declare the shared exchanges and the poison queue."""
        connection = await aio_pika.connect_robust(url, heartbeat=heartbeat, client_properties={})
        broker = cls(connection, delivery_limit)
        await broker._declare()
        return broker

    async def _declare(self) -> None:
        # on_return_raises: an unroutable (mandatory) publish must raise, not be confirmed and dropped.
        channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        self._channel = channel
        self._exchange = await channel.declare_exchange(
            topology.EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        dlx = await channel.declare_exchange(
            topology.DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        poison = topology.poison_queue()
        queue = await channel.declare_queue(poison.name, durable=True, arguments=poison.arguments)
        await queue.bind(dlx, "#")

    @property
    def is_open(self) -> bool:
        """Whether the connection is up (for readiness probes)."""
        return not self.connection.is_closed

    async def publish(self, message: Message, routing_key: str, *, message_id: str | None = None) -> None:
        """Publish persistently and wait for the broker's confirm; the current trace context rides along."""
        await self.publish_raw(
            encode(message), routing_key, message_id=message_id, message_type=type(message).__name__
        )

    async def publish_raw(
        self,
        body: bytes,
        routing_key: str,
        *,
        message_id: str | None = None,
        traceparent: str | None = None,
        message_type: str | None = None,
    ) -> None:
        """``publish`` for an already encoded message (an outbox row's exact bytes). With ``traceparent``,
        the PRODUCER span continues that trace (the one that wrote the row) instead of the current one."""
        assert self._exchange is not None
        headers: dict[str, Any] = {}
        message_id = message_id or str(uuid.uuid4())
        parent = propagate.extract({"traceparent": traceparent}) if traceparent else None
        with tracer.start_as_current_span(
            f"publish {topology.EXCHANGE}",
            context=parent,
            kind=SpanKind.PRODUCER,
            attributes=publish_attributes(routing_key, message_id, len(body)),
        ):
            propagate.inject(headers)
            await self._exchange.publish(
                aio_pika.Message(
                    body,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=message_id,
                    type=message_type,
                    headers=headers,
                ),
                routing_key=routing_key,
                mandatory=True,
            )

    async def declare_queue(self, spec: topology.QueueSpec) -> AbstractQueue:
        """Declare a consumer's queue and its bindings (idempotent)."""
        assert self._channel is not None
        queue = await self._channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
        for key in spec.routing_keys:
            await queue.bind(topology.EXCHANGE, key)
        return queue

    async def consume(
        self, spec: topology.QueueSpec, kind: type[M], handler: Handler[M], *, prefetch: int
    ) -> Consumer:
        """Start consuming ``spec`` with ``handler``; returns the running consumer (stop it to shut down)."""
        return await self.consume_routes(spec, {ANY_ROUTING_KEY: Route(kind, handler)}, prefetch=prefetch)

    async def consume_routes(
        self, spec: topology.QueueSpec, routes: Mapping[str | None, Route[Any]], *, prefetch: int
    ) -> Consumer:
        """``consume`` for a queue bound to several message kinds: ``routes`` maps each routing key to its
        schema and handler (``ANY_ROUTING_KEY`` for the rest); a message no route matches is poison."""
        channel = await self.connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
        for key in spec.routing_keys:
            await queue.bind(topology.EXCHANGE, key)
        consumer = Consumer(channel, queue, routes)
        await consumer.start()
        return consumer

    async def close(self) -> None:
        """Close the connection (after consumers stopped)."""
        await _bounded("close the connection", self.connection.close())


# A broker that stopped answering (a half-open connection, a node going down) must not hang a graceful
# shutdown: each step of it gets this long, then the process goes on stopping (unacked messages are
# redelivered either way).
SHUTDOWN_STEP_SECONDS = 5.0


async def _bounded(step: str, operation: Awaitable[object]) -> None:
    try:
        async with asyncio.timeout(SHUTDOWN_STEP_SECONDS):
            await operation
    except Exception as error:  # TimeoutError, or the connection's own error: stopping goes on
        log.warning("broker did not answer while stopping", extra={"step": step, "error": repr(error)[:200]})


class Consumer:
    """A running subscription to one queue; see the module's rules."""

    def __init__(
        self, channel: AbstractChannel, queue: AbstractQueue, routes: Mapping[str | None, Route[Any]]
    ) -> None:
        self.channel = channel
        self.queue = queue
        self.routes = dict(routes)
        self._tag: str | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._handlers: set[asyncio.Future[Outcome]] = set()  # shielded handler runs (see ``_outcome``)

    async def start(self) -> None:
        self._tag = await self.queue.consume(self._on_message)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        try:
            await self._process(message)
        finally:
            self._in_flight.discard(task)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        # Only text headers: a malformed traceparent (bytes, a number) must not crash the consumer.
        carrier = {key: value for key, value in (message.headers or {}).items() if isinstance(value, str)}
        context = propagate.extract(carrier)
        with tracer.start_as_current_span(
            f"process {self.queue.name}",
            context=context,
            kind=SpanKind.CONSUMER,
            attributes=process_attributes(self.queue.name, message),
        ) as span:
            outcome = await self._outcome(message)
            span.set_attribute("restock.message.outcome", outcome.value)
            if outcome is not Outcome.ACK:
                span.set_attribute("error.type", outcome.value)
            await self._settle(message, outcome)

    async def _outcome(self, message: AbstractIncomingMessage) -> Outcome:
        route = self.routes.get(message.routing_key) or self.routes.get(ANY_ROUTING_KEY)
        if route is None:
            log.error(
                "poison message",
                extra={
                    "queue": self.queue.name,
                    "message_id": message.message_id,
                    "reason": f"no route for routing key {message.routing_key!r}",
                },
            )
            return Outcome.POISON
        try:
            decoded = decode(message.body, route.kind)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as error:
            log.error(
                "poison message",
                extra={"queue": self.queue.name, "message_id": message.message_id, "reason": str(error)},
            )
            return Outcome.POISON
        # The handler runs in a task of its own, shielded: a lost broker connection cancels aio-pika's
        # callback (the message will be redelivered on the new one), but work already started (a claimed
        # job, a provider call) must finish and commit, or it would be left half done until its lease ends.
        handling: asyncio.Future[Outcome] = asyncio.ensure_future(route.handler(decoded))
        self._handlers.add(handling)
        handling.add_done_callback(self._handlers.discard)
        try:
            return await asyncio.shield(handling)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "handler failed; message requeued",
                extra={"queue": self.queue.name, "message_id": message.message_id},
            )
            return Outcome.REQUEUE

    async def _settle(self, message: AbstractIncomingMessage, outcome: Outcome) -> None:
        if outcome is Outcome.ACK:
            await message.ack()
        elif outcome is Outcome.REQUEUE:
            await message.nack(requeue=True)
        else:
            await message.reject(requeue=False)

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop taking messages, wait for in-flight handlers (up to ``timeout``), close the channel.
        A handler still running at the deadline is cancelled; its message is redelivered."""
        if self._tag is not None:
            tag, self._tag = self._tag, None
            await _bounded("cancel the consumer", self.queue.cancel(tag))
        if self._in_flight or self._handlers:
            await asyncio.wait(set(self._in_flight) | set(self._handlers), timeout=timeout)
        for task in set(self._in_flight) | set(self._handlers):
            task.cancel()
        await _bounded("close the channel", self.channel.close())
