"""Events of a run, as the bus delivers them to every observer.

Each event carries the run id and a sequence number ``seq`` (1, 2, 3 … per run, no
gaps) stamped by the bus. Events are frozen: observers must not (and cannot) change
them, so one instance is shared by every subscriber.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetbench.records import RunStatus, Summary, TestResult

__all__ = ["Event", "RunFinished", "RunStarted", "TestFinished"]


@dataclass(frozen=True, slots=True)
class Event:
    """Base of all events."""

    run_id: str
    seq: int


@dataclass(frozen=True, slots=True)
class RunStarted(Event):
    """A run started (or resumed): ``planned`` tests in all, ``done`` already finished."""

    fleet_id: str
    planned: int
    done: int
    at: str


@dataclass(frozen=True, slots=True)
class TestFinished(Event):
    """One test finished, whatever its status."""

    __test__ = False  # not a pytest test class

    result: TestResult


@dataclass(frozen=True, slots=True)
class RunFinished(Event):
    """A run ended: completed, failed, cancelled or interrupted; ``summary`` is final."""

    status: RunStatus
    at: str
    summary: Summary | None = None
    error: str | None = None
