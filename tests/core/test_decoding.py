"""Decoding threads ahead of the encoder: every item once, in order; closing stops them."""
import threading
import time

from duch_desktop.core.archive.reader import decode_threads, prefetched_batches


class _Items:
    def __init__(self, n: int, delay: float = 0.0):
        self.n, self.delay, self.read, self.threads = n, delay, [], set()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        time.sleep(self.delay)
        self.read.append(i)
        self.threads.add(threading.current_thread().name)
        return {"i": i}


def test_batches_come_in_order_decoded_off_the_calling_thread():
    items = _Items(23)
    batches = list(prefetched_batches(items, 5, threads=2))
    assert [[b["i"] for b in batch] for batch in batches] == [list(range(s, min(23, s + 5))) for s in range(0, 23, 5)]
    assert sorted(items.read) == list(range(23))
    assert threading.current_thread().name not in items.threads
    assert decode_threads() >= 1


def test_closing_stops_decoding_at_most_two_batches_ahead():
    items = _Items(1000, delay=0.002)
    gen = prefetched_batches(items, 10, threads=1)
    first = next(gen)
    gen.close()  # waits for the decode under way, cancels the rest
    done = len(items.read)
    time.sleep(0.05)
    assert [b["i"] for b in first] == list(range(10))
    assert len(items.read) == done <= 30
    assert not any(t.name.startswith("duch-decode") for t in threading.enumerate())
