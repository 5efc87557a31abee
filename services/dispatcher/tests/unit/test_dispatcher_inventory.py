"""The stock and order handlers and the wave timer, with recording fakes: what is re-planned, published and
acked, in which order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from restock_common.broker import Outcome
from restock_common.faults import FaultPoints
from restock_common.messages import JobBatch, OrderCreated, OrderLine, StockChanged
from restock_dispatcher.handler import VariantPublisher
from restock_dispatcher.inventory import OrderCreatedHandler, StockChangedHandler
from restock_dispatcher.ports import Cursor, Fulfilled, Page, Released
from restock_dispatcher.wave_timer import WaveTimer
from restock_dispatcher.waves import Decision, PlanState, Reason, Status

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def released(variant: int, count: int) -> Released:
    decision = Decision(count, 2, Reason.RELEASED, Status.ACTIVE, None, PlanState(20000, 2, T0))
    return Released(1, variant, 20000, count, decision)


class FakeWaves:
    def __init__(self, calls: list[str], due: list[list[Released]] | None = None) -> None:
        self.calls = calls
        self.due = due or []

    async def stock_changed(self, tenant_id: int, variant_id: int, available: int) -> Released | None:
        self.calls.append(f"replan {variant_id} {available}")
        return None if variant_id == 404 else released(variant_id, available * 3)

    async def release_due(self, limit: int) -> list[Released]:
        self.calls.append(f"due {limit}")
        return self.due.pop(0) if self.due else []


class FakeJobs:
    """Unpublished job ids per event; ``publish_unpublished`` hands them out once."""

    def __init__(self, calls: list[str], unpublished: dict[int, list[int]]) -> None:
        self.calls = calls
        self.unpublished = unpublished
        self.fulfilled: list[tuple[int, list[int], list[str]]] = []

    async def window_events(self, tenant_id: int, variant_id: int, window: int) -> list[int]:
        return sorted(self.unpublished)

    async def publish_frozen(
        self, restock_event_id: int, limit: int, publish: Callable[[dict[str, list[int]]], Awaitable[None]]
    ) -> int | None:
        return None  # waves: a freeze makes nothing pending, the planner's releases are published one by one

    async def publish_unpublished(
        self,
        restock_event_id: int,
        channel: str,
        after: Cursor | None,
        limit: int,
        publish: Callable[[list[int]], Awaitable[None]],
    ) -> Page:
        ids = self.unpublished[restock_event_id] if channel == "email" else []
        self.unpublished[restock_event_id] = [] if channel == "email" else self.unpublished[restock_event_id]
        if ids:
            await publish(ids)
            self.calls.append(f"published {restock_event_id} {ids}")
        return Page(ids, None)

    async def fulfil(self, tenant_id: int, variant_ids: list[int], contact_hashes: list[str]) -> Fulfilled:
        self.fulfilled.append((tenant_id, variant_ids, contact_hashes))
        return Fulfilled(len(contact_hashes), 1)


class FakePublisher:
    def __init__(self) -> None:
        self.batches: list[JobBatch] = []

    async def publish(self, batch: JobBatch, message_id: str) -> None:
        self.batches.append(batch)


class RecordingFaults(FaultPoints):
    def __init__(self, calls: list[str]) -> None:
        super().__init__(None)
        self.calls = calls

    def reach(self, name: str) -> None:
        self.calls.append(f"fault {name}")


def change(variant: int, available: int) -> StockChanged:
    return StockChanged(
        tenant_id=1,
        shop_domain="s.myshopify.com",
        variant_id=variant,
        available=available,
        previous=0,
        observed_at=T0,
        source="webhook",
    )


async def test_a_stock_change_replans_then_publishes_the_window() -> None:
    calls: list[str] = []
    jobs = FakeJobs(calls, {7: [11, 12, 13], 8: [14]})
    publisher = FakePublisher()
    handler = StockChangedHandler(FakeWaves(calls), VariantPublisher(jobs, publisher, batch_size=2))
    assert await handler(change(42, 2)) is Outcome.ACK
    assert calls == ["replan 42 2", "published 7 [11, 12, 13]", "published 8 [14]"]
    assert [batch.job_ids for batch in publisher.batches] == [[11, 12], [13], [14]]


async def test_a_stock_change_of_a_variant_without_a_line_publishes_nothing() -> None:
    calls: list[str] = []
    handler = StockChangedHandler(
        FakeWaves(calls), VariantPublisher(FakeJobs(calls, {7: [1]}), FakePublisher(), 10)
    )
    assert await handler(change(404, 2)) is Outcome.ACK
    assert calls == ["replan 404 2"]


async def test_an_order_fulfils_the_distinct_variants_bought() -> None:
    jobs = FakeJobs([], {})
    order = OrderCreated(
        tenant_id=3,
        shop_domain="s.myshopify.com",
        order_id=9,
        lines=[OrderLine(variant_id=5), OrderLine(variant_id=2), OrderLine(variant_id=5)],
        contact_hashes=["h1", "h2"],
        ordered_at=T0,
    )
    assert await OrderCreatedHandler(jobs)(order) is Outcome.ACK
    assert jobs.fulfilled == [(3, [2, 5], ["h1", "h2"])]


async def test_the_timer_publishes_each_due_line_after_its_fault_point_until_none_is_due() -> None:
    calls: list[str] = []
    due = [[released(42, 6), released(43, 0)], []]
    jobs = FakeJobs(calls, {7: [21, 22]})
    timer = WaveTimer(
        FakeWaves(calls, due),
        VariantPublisher(jobs, FakePublisher(), 10),
        RecordingFaults(calls),
        tick_seconds=1,
    )
    assert await timer.tick() == 6
    assert calls == [
        "due 50",
        "fault after_wave_release_before_publish",
        "published 7 [21, 22]",
        "fault after_wave_release_before_publish",
    ]


async def test_the_timer_survives_a_failed_tick_and_stops() -> None:
    class Flaky(FakeWaves):
        failed = False

        async def release_due(self, limit: int) -> list[Released]:
            if not self.failed:
                self.failed = True
                raise ConnectionError("database gone")
            return await super().release_due(limit)

    calls: list[str] = []
    timer = WaveTimer(
        Flaky(calls),
        VariantPublisher(FakeJobs(calls, {}), FakePublisher(), 10),
        FaultPoints(None),
        tick_seconds=0.01,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(timer.run(stop))
    deadline = asyncio.get_running_loop().time() + 5
    while "due 50" not in calls:
        assert asyncio.get_running_loop().time() < deadline, "never ticked after the failure"
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)
