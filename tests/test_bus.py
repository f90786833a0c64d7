"""The event bus and the rate limiter."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from fleetbench._bus import EventBus
from fleetbench._limits import TokenBucket
from fleetbench.events import Event


class Recorder:
    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.batches = 0

    async def handle(self, events: Sequence[Event]) -> None:
        self.batches += 1
        self.seqs.extend(e.seq for e in events)


class Failing:
    async def handle(self, events: Sequence[Event]) -> None:
        raise RuntimeError("observer bug")


async def test_every_subscriber_gets_every_event_in_seq_order() -> None:
    bus = EventBus("run", first_seq=11)
    first, second = Recorder(), Recorder()
    bus.subscribe("first", first)
    bus.subscribe("broken", Failing())
    bus.subscribe("second", second)
    for _ in range(500):
        bus.publish(lambda seq: Event("run", seq))
        await bus.throttle()
    await bus.aclose()
    assert first.seqs == second.seqs == list(range(11, 511))
    assert bus.failures["broken"] == first.batches  # counted, and delivery went on
    assert bus.last_seq == 510


async def test_throttle_bounds_the_backlog() -> None:
    bus = EventBus("run", high_water=10)
    recorder = Recorder()
    bus.subscribe("r", recorder)
    largest = 0
    for _ in range(100):
        bus.publish(lambda seq: Event("run", seq))
        largest = max(largest, bus.last_seq - len(recorder.seqs))
        await bus.throttle()
    await bus.aclose()
    assert largest <= 10
    assert len(recorder.seqs) == 100


async def test_deliveries_gather_events_until_the_target_or_a_drain() -> None:
    bus = EventBus("run", window_s=60, target=9)
    batches: list[list[int]] = []
    arrived = asyncio.Event()

    class Batches:
        async def handle(self, events: Sequence[Event]) -> None:
            batches.append([e.seq for e in events])
            arrived.set()

    bus.subscribe("batches", Batches())
    async with asyncio.timeout(10):  # far below the 60 s window: nothing waited it out
        bus.publish(lambda seq: Event("run", seq))
        await arrived.wait()  # the first event after a quiet spell goes out at once
        arrived.clear()
        bus.publish(lambda seq: Event("run", seq))
        for _ in range(5):
            await asyncio.sleep(0)  # the dispatcher is gathering, not delivering
        assert batches == [[1]]
        for _ in range(8):
            bus.publish(lambda seq: Event("run", seq))
        await arrived.wait()  # 9 pending: the target starts the delivery
        bus.publish(lambda seq: Event("run", seq))
        await bus.drain()  # a drain does not wait for the window either
        await bus.aclose()
    assert batches == [[1], list(range(2, 11)), [11]]


async def test_a_live_feed_that_lags_is_marked_and_ends() -> None:
    bus = EventBus("run")
    slow = bus.live(maxsize=2)
    fast = bus.live(maxsize=1000)
    for _ in range(5):
        bus.publish(lambda seq: Event("run", seq))
        await bus.drain()  # one batch per event
    await bus.aclose()
    assert slow.lagged
    got = []
    while (batch := await fast.get()) is not None:
        got.extend(e.seq for e in batch)
    assert got == [1, 2, 3, 4, 5]
    assert not fast.lagged


async def test_token_bucket_enforces_the_rate() -> None:
    bucket = TokenBucket(per_minute=600)  # 10 per second, a burst of 600
    for _ in range(600):
        await bucket.take(1)  # the burst empties the bucket
    started = time.monotonic()
    await asyncio.gather(*(bucket.take(1) for _ in range(3)))
    assert time.monotonic() - started >= 0.3 - 0.01  # then at most 10 per second
