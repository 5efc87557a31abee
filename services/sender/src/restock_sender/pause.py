"""Pausing a channel whose provider refuses our configuration, and resuming it when the provider accepts it.

Theory of operation
-------------------
SMTP 535 (authentication) or Twilio 20003 blames our credentials, not a recipient: every send would fail
the same way, so burning jobs into dead-letter would be wrong. The job that met it goes back to
``pending`` (``delivery``), and ``ChannelPause.pause`` writes the channel's ``channel_pauses`` row and the
ERROR log line that is the alert. From then on, in this process at once and in every replica at its
monitor's next tick:

- admission defers every job it sees, unclaimed (``channel-paused``), so nothing is attempted;
- the monitor stops the consumer: new batches wait in the queue, none is dead-lettered;
- the scheduler publishes nothing (retries and deferrals stay due in PostgreSQL).

Every ``interval`` seconds the monitor probes the provider (an SMTP login and envelope, a Twilio account
fetch) and, when it passes, resumes the row. An operator resumes by updating the row (admin API). On
resume the consumer starts again and the scheduler publishes the deferred jobs, FIFO: every job is sent
once, by the same claim as always. PostgreSQL holds the truth: a replica learns both directions from the
row, so a pause written by one replica stops them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from restock_common.broker import Consumer
from restock_common.db.engine import isolated
from restock_sender.delivery import classify
from restock_sender.ports import OperatorBacklog, PauseStore, ProviderProbe

log = logging.getLogger(__name__)


class ChannelPause:
    """This process's view of its channel's pause (read by admission and the scheduler, written by the
    handler on a configuration error and by the monitor from the row)."""

    def __init__(self, channel: str, store: PauseStore) -> None:
        self.channel = channel
        self.store = store
        self.paused = False
        self.changed = asyncio.Event()

    async def pause(self, reason: str, error_code: str | None) -> None:
        """Pause the channel (the row, the alert); idempotent while paused."""
        if self.paused:
            return
        self.paused = True
        log.error(
            "channel paused: the provider refuses our configuration; jobs wait pending until it is fixed",
            extra={"channel": self.channel, "error_code": error_code, "reason": reason},
        )
        await self.store.pause(self.channel, reason, error_code)
        self.changed.set()


class ConsumerSwitch:
    """Starts and stops the channel's consumer (a paused channel takes no messages)."""

    def __init__(self, start: Callable[[], Awaitable[Consumer]]) -> None:
        self._start = start
        self._consumer: Consumer | None = None

    @property
    def running(self) -> bool:
        """Whether the consumer is consuming."""
        return self._consumer is not None

    async def set_running(self, running: bool) -> None:
        """Start or stop the consumer (no-op when already so)."""
        if running and self._consumer is None:
            self._consumer = await self._start()
        elif not running and self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    async def stop(self) -> None:
        """Stop for good (shutdown)."""
        await self.set_running(False)


class ChannelMonitor:
    """The pause's loop: follow the row, probe while paused, switch the consumer, refresh the backlog."""

    def __init__(
        self,
        pause: ChannelPause,
        probe: ProviderProbe,
        consumer: ConsumerSwitch,
        *,
        interval: float,
        backlog: Callable[[str, OperatorBacklog], None] | None = None,
    ) -> None:
        self.pause = pause
        self.probe = probe
        self.consumer = consumer
        self.interval = interval
        self.backlog = backlog
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def tick(self) -> bool:
        """One pass; whether the channel is paused after it."""
        store, channel = self.pause.store, self.pause.channel
        record = await store.read(channel)
        paused = record is not None and record.paused
        if paused and await self._provider_accepts() and await store.resume(channel):
            log.warning(
                "channel resumed: the provider accepts our configuration again", extra={"channel": channel}
            )
            paused = False
        self.pause.paused = paused
        await self.consumer.set_running(not paused)
        if self.backlog is not None:
            self.backlog(channel, await store.operator_backlog(channel))
        return paused

    async def _provider_accepts(self) -> bool:
        error = await self.probe.probe()
        if error is None:
            return True
        log.error(
            "channel still paused: probe refused",
            extra={"channel": self.pause.channel, "error_code": error.code, "reason": classify(error).reason},
        )
        return False

    async def run(self) -> None:
        """Tick every ``interval`` (at once when this process paused the channel) until ``stop``."""
        while not self._stopping.is_set():
            try:
                await isolated(self.tick())
            except Exception:  # PostgreSQL or the provider may answer at the next tick
                log.exception("channel monitor tick failed", extra={"channel": self.pause.channel})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake(), self.interval)

    async def _wake(self) -> None:
        stopping = asyncio.ensure_future(self._stopping.wait())
        changed = asyncio.ensure_future(self.pause.changed.wait())
        try:
            await asyncio.wait({stopping, changed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            changed.cancel()
        self.pause.changed.clear()

    def start(self) -> None:
        """Run in the background (the sender's lifespan)."""
        self._task = asyncio.create_task(self.run(), name=f"channel-monitor-{self.pause.channel}")

    async def stop(self) -> None:
        """End the loop after the current tick."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
