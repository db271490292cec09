"""decoding.prefetched: the thread that keeps decoding while the indexer encodes."""
from __future__ import annotations

import threading
import time

import pytest

from duch_desktop.core.archive.decoding import prefetched


def _source(n, log, fail_at=None, delay=0.0):
    try:
        for i in range(n):
            if i == fail_at:
                raise OSError("decoder broke")
            if delay:
                time.sleep(delay)
            log.append(("made", i, threading.current_thread().name))
            yield i
    finally:
        log.append(("closed", threading.current_thread().name))


def test_all_values_in_order_and_the_source_is_closed():
    log = []
    assert list(prefetched(_source(50, log), depth=4)) == list(range(50))
    assert log[-1] == ("closed", "duch-decode")


def test_runs_ahead_while_the_consumer_is_busy():
    log = []
    items = prefetched(_source(10, log), depth=4)
    assert next(items) == 0
    time.sleep(0.5)  # the consumer "encodes": the thread fills the queue meanwhile
    made = sum(1 for e in log if e[0] == "made")
    items.close()
    # 1 handed out + 4 queued + 1 waiting to be put: decoding went on without the consumer
    assert 5 <= made <= 7


def test_closing_early_stops_the_source_in_its_thread():
    log = []
    items = prefetched(_source(10_000, log, delay=0.001), depth=2)
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    assert log[-1] == ("closed", "duch-decode")
    assert sum(1 for e in log if e[0] == "made") < 100
    assert not any(t.name == "duch-decode" for t in threading.enumerate())


def test_an_error_of_the_source_reaches_the_consumer_after_the_values_before_it():
    log = []
    got = []
    with pytest.raises(OSError, match="decoder broke"):
        for v in prefetched(_source(10, log, fail_at=3), depth=8):
            got.append(v)
    assert got == [0, 1, 2]
    assert log[-1] == ("closed", "duch-decode")
