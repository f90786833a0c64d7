"""``fleetbench serve`` with one bench-only probe: when each result reaches the server's
run channel (the bus subscriber that feeds the streams), stamped with the wall clock.

    python bench/probe_serve.py STAMPS_FILE serve [fleetbench serve options]

On exit the stamps go to ``STAMPS_FILE`` as JSON ``{run_id: {seq: unix_ns}}``, so a
benchmark can split a result's produced→received delay into produced→channel (the
engine: bus, store writer, live aggregator) and channel→received (the stream, gRPC and
the client). The stamp costs one ``time_ns`` per batch and a dict entry per result.
"""

from __future__ import annotations

import atexit
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fleetbench._cli import main
from fleetbench._server._channel import RunChannel
from fleetbench.events import Event, TestFinished

STAMPS: dict[str, dict[int, int]] = {}


def probe() -> None:
    handle = RunChannel.handle

    async def stamped(self: RunChannel, events: Sequence[Event]) -> None:
        now = time.time_ns()
        stamps = STAMPS.setdefault(self.run_id, {})
        for event in events:
            if type(event) is TestFinished:
                stamps[event.seq] = now
        await handle(self, events)

    RunChannel.handle = stamped  # type: ignore[method-assign]


if __name__ == "__main__":
    target = Path(sys.argv.pop(1))
    atexit.register(lambda: target.write_text(json.dumps(STAMPS)))
    probe()
    main(prog_name="fleetbench")
