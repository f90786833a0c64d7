"""The values the client hands out besides the generated messages: status enums that
read well in Python, and :class:`ResultBatch`, one message of a results stream."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from fleetbench_client.v1 import fleetbench_pb2 as pb

__all__ = ["TERMINAL_STATUSES", "GroupDimension", "ResultBatch", "RunStatus", "TestStatus"]


class RunStatus(enum.IntEnum):
    """``fleetbench.v1.RunStatus`` with the same numbers: ``RunStatus(run.status) is
    RunStatus.COMPLETED`` (a plain ``==`` works too, but mypy's strict equality cannot
    see that the generated enum type and this one share their values)."""

    UNSPECIFIED = pb.RUN_STATUS_UNSPECIFIED
    PENDING = pb.RUN_STATUS_PENDING
    RUNNING = pb.RUN_STATUS_RUNNING
    COMPLETED = pb.RUN_STATUS_COMPLETED
    FAILED = pb.RUN_STATUS_FAILED
    CANCELLED = pb.RUN_STATUS_CANCELLED
    INTERRUPTED = pb.RUN_STATUS_INTERRUPTED

    @property
    def terminal(self) -> bool:
        """Whether the run has ended (COMPLETED, FAILED, CANCELLED or INTERRUPTED)."""
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED,
                               RunStatus.INTERRUPTED})


class TestStatus(enum.IntEnum):
    """``fleetbench.v1.TestStatus``: the outcome of one test."""

    __test__ = False  # not a pytest test class

    UNSPECIFIED = pb.TEST_STATUS_UNSPECIFIED
    PASSED = pb.TEST_STATUS_PASSED
    FAILED = pb.TEST_STATUS_FAILED
    ERROR = pb.TEST_STATUS_ERROR
    TIMEOUT = pb.TEST_STATUS_TIMEOUT
    SKIPPED = pb.TEST_STATUS_SKIPPED
    CANCELLED = pb.TEST_STATUS_CANCELLED


class GroupDimension(enum.IntEnum):
    """``fleetbench.v1.GroupDimension``: what a snapshot's ``GroupSummary`` groups by."""

    UNSPECIFIED = pb.GROUP_DIMENSION_UNSPECIFIED
    PROVIDER = pb.GROUP_DIMENSION_PROVIDER
    REPOSITORY = pb.GROUP_DIMENSION_REPOSITORY
    CATEGORY = pb.GROUP_DIMENSION_CATEGORY
    SCENARIO = pb.GROUP_DIMENSION_SCENARIO
    REPOSITORY_PROVIDER = pb.GROUP_DIMENSION_REPOSITORY_PROVIDER


def run_status(value: int) -> RunStatus:
    """``value`` as a :class:`RunStatus` (UNSPECIFIED for a number this client does not
    know, sent by a newer server)."""
    try:
        return RunStatus(value)
    except ValueError:
        return RunStatus.UNSPECIFIED


@dataclass(frozen=True, slots=True)
class ResultBatch:
    """One message of a results stream, as :meth:`stream_results` yields it.

    :ivar results: the next results of the run in ``seq`` order, each delivered once
        per :meth:`stream_results` call even across reconnections; may be empty.
    :ivar snapshot: live progress and summaries covering every result up to
        ``snapshot.as_of_seq``; ``None`` when this message carries none.
    :ivar status: the run's status when the message was sent.
    :ivar last_seq: the ``seq`` of the last result delivered so far; pass it as
        ``after_seq`` to resume in another process.
    :ivar head_seq: the highest ``seq`` the run had recorded (``head_seq - last_seq``
        is how far this stream lags behind the run).
    :ivar reconnects: how many times this stream has reconnected so far.
    """

    results: Sequence[pb.TestResult]
    snapshot: pb.Snapshot | None
    status: RunStatus
    last_seq: int
    head_seq: int
    reconnects: int = 0

    @property
    def final(self) -> bool:
        """Whether the run had ended when this message was sent."""
        return self.status.terminal
