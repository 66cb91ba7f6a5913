"""The prepare workers go on while the consumer holds batches (a commit group being committed):
`iter_prepared` keeps 2 x workers + `ahead` batches submitted, in input order."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

import runtime_facts.pipeline.prepare as prepare
from runtime_facts.home import Home
from runtime_facts.pipeline.outcomes import IngestOptions, Prepared


def _recording(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], threading.Condition]:
    """The real `prepare_batch`, recording which batches it finished."""
    done: list[str] = []
    changed = threading.Condition()
    real = prepare.prepare_batch

    def recorded(home: Home, sha: str, *args: Any, **kwargs: Any) -> Prepared:
        result = real(home, sha, *args, **kwargs)
        with changed:
            done.append(sha)
            changed.notify_all()
        return result

    monkeypatch.setattr(prepare, "prepare_batch", recorded)
    return done, changed


@pytest.mark.parametrize(("ahead", "expected"), [(0, 2), (3, 5)])
def test_workers_prepare_ahead_while_the_consumer_holds_a_batch(
    home: Home,
    stage: Callable[..., str],
    clock: Callable[[], datetime],
    monkeypatch: pytest.MonkeyPatch,
    ahead: int,
    expected: int,
) -> None:
    shas = sorted(stage(f'{{"symbolId":"sym:{i}","hitCount":{i + 1}}}\n') for i in range(8))
    done, changed = _recording(monkeypatch)
    batches = prepare.iter_prepared(
        home, shas, IngestOptions(), workers=1, clock=clock, ahead=ahead
    )
    first = next(batches)  # the consumer now holds it, as during a commit
    with changed:
        assert changed.wait_for(lambda: len(done) >= expected, timeout=30)
        changed.wait(timeout=0.5)  # nothing beyond the window starts meanwhile
        assert sorted(done) == shas[:expected]
    rest = list(batches)
    assert [p.sha for p in [first, *rest]] == shas  # input order
    assert all(p.error is None and p.rows is not None for p in [first, *rest])


def _workers_alive() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prepare.WORKER_NAME)]


def test_the_workers_end_once_the_last_batch_is_submitted(
    home: Home,
    stage: Callable[..., str],
    clock: Callable[[], datetime],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With every batch submitted, the workers (and their threads' scratch mappings and
    groupers) end while the consumer still holds batches to commit, not when it is done."""
    shas = sorted(stage(f'{{"symbolId":"sym:{i}","hitCount":{i + 1}}}\n') for i in range(4))
    done, changed = _recording(monkeypatch)
    batches = prepare.iter_prepared(home, shas, IngestOptions(), workers=2, clock=clock)
    first = next(batches)  # a window of 4: every batch is submitted
    with changed:
        assert changed.wait_for(lambda: len(done) == len(shas), timeout=30)
    for thread in _workers_alive():
        thread.join(timeout=30)
    assert not _workers_alive()
    rest = list(batches)  # the prepared batches are still there, in input order
    assert [p.sha for p in [first, *rest]] == shas
    assert all(p.error is None and p.rows is not None for p in [first, *rest])
