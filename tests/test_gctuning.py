"""The garbage-collector thresholds while runs execute."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from fleetbench._gctuning import RUN_GEN0_THRESHOLD, gc_tuned_for_runs


@pytest.fixture(autouse=True)
def default_thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        yield
    finally:
        gc.set_threshold(*saved)


def test_runs_raise_the_youngest_threshold_until_the_last_one_ends() -> None:
    with gc_tuned_for_runs():
        assert gc.get_threshold() == (RUN_GEN0_THRESHOLD, 10, 10)
        with gc_tuned_for_runs():  # a second run overlapping the first
            assert gc.get_threshold() == (RUN_GEN0_THRESHOLD, 10, 10)
        assert gc.get_threshold() == (RUN_GEN0_THRESHOLD, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)


def test_thresholds_set_by_others_are_respected() -> None:
    gc.set_threshold(RUN_GEN0_THRESHOLD * 2, 10, 10)  # already higher: kept
    with gc_tuned_for_runs():
        assert gc.get_threshold() == (RUN_GEN0_THRESHOLD * 2, 10, 10)
    gc.set_threshold(0, 10, 10)  # automatic collection disabled: stays so
    with gc_tuned_for_runs():
        assert gc.get_threshold() == (0, 10, 10)
    gc.set_threshold(700, 10, 10)
    with gc_tuned_for_runs():
        gc.set_threshold(5000, 20, 20)  # changed during the run: not undone
    assert gc.get_threshold() == (5000, 20, 20)


def test_the_thresholds_come_back_when_a_run_fails() -> None:
    with pytest.raises(RuntimeError), gc_tuned_for_runs():
        raise RuntimeError("run failed")
    assert gc.get_threshold() == (700, 10, 10)


def test_what_exists_before_the_first_run_is_frozen_until_the_last_one_ends() -> None:
    assert gc.get_freeze_count() == 0
    with gc_tuned_for_runs():
        frozen = gc.get_freeze_count()
        assert frozen > 1000  # this process's modules, at least
        with gc_tuned_for_runs():
            assert gc.get_freeze_count() == frozen
        assert gc.get_freeze_count() == frozen
    assert gc.get_freeze_count() == 0


def test_objects_frozen_by_others_stay_frozen() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with gc_tuned_for_runs():
            assert gc.get_freeze_count() == frozen
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
