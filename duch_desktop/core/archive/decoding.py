"""Decoding in worker processes that can be stopped: a time limit per file, Ctrl-C at once.

GDAL and Pillow decode in C, where neither a signal nor a closed generator reaches Python
until the read returns, and a hostile file can take an hour to. So every item is decoded in a
child process, one item per child at a time; the parent waits in short slices, so that Ctrl-C
or a cancel acts within a moment, and a child still busy with one item after ``seconds`` is
killed, its item recorded as unreadable with the reason, and a fresh child started. A child
that dies (a crash inside a decoder, the out-of-memory killer) costs only its item, likewise.
"""
from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import threading
import time
from collections import deque
from multiprocessing.connection import wait
from typing import Iterator, Sequence

from .reader import TileReader

READY = "ready"
START_S = 60.0  # a child that has not said it is ready by then cannot be started here
POLL_S = 0.1  # how long the parent waits before looking at time limits, Ctrl-C and cancels again
HEARTBEAT_S = 0.5  # while nothing is decoded for this long, the item waited on is yielded (an int) instead


def _serve(reader: TileReader, conn, parent_end, inherited) -> None:
    """A child: decode the items it is sent until told to stop (None), its parent is gone, or killed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    parent_end.close()  # else the pipe would never report the parent's end closed
    for f in inherited:  # the run lock's file: a forked child must not keep the lock after its parent
        f.close()
    _die_with_parent()
    try:
        conn.send(READY)
        while True:
            i = conn.recv()
            if i is None:
                return
            conn.send(reader[i])
    except (EOFError, OSError, KeyboardInterrupt):
        return


def _die_with_parent() -> None:
    # After a kill -9 of the parent a child must not decode on for nothing (up to the time limit).
    # Linux only; elsewhere the pipe's end stops it once its decode is done.
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before the request took effect
            os._exit(0)
    except (OSError, AttributeError):
        pass


def _context():
    # fork is cheap and needs nothing from the main module (spawn re-imports it, which a script
    # without a main guard cannot take); where there is no fork, spawn (the bundle calls freeze_support).
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


class _Child:
    def __init__(self, ctx, reader: TileReader, inherited: Sequence = ()):
        self.conn, child_end = ctx.Pipe()
        inherited = list(inherited) if ctx.get_start_method() == "fork" else []  # other methods inherit no files
        self.proc = ctx.Process(target=_serve, args=(reader, child_end, self.conn, inherited), daemon=True)
        self.proc.start()
        child_end.close()
        self.item: int | None = None
        self.since = 0.0

    def started(self) -> bool:
        """Wait (Ctrl-C still acts) until the child says it is ready; False when it cannot start."""
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if self.conn.poll(POLL_S):
                try:
                    return self.conn.recv() == READY
                except (EOFError, OSError):
                    return False
            if not self.proc.is_alive():
                return False
        return False

    def give(self, i: int) -> None:
        self.conn.send(i)
        self.item, self.since = i, time.monotonic()

    def stop(self, kill: bool = False) -> None:
        if not kill and self.proc.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                kill = True
            self.proc.join(1.0)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5.0)
        self.conn.close()


def decoded(reader: TileReader, order: Sequence[int], processes: int, seconds: float | None,
            inherited: Sequence = (), ahead: int = 4) -> Iterator[dict]:
    """The items ``order`` of ``reader`` decoded by ``processes`` children, in that order.

    A child keeps decoding while the caller works on what was yielded; ``ahead`` bounds how
    many decoded items per child may wait. Closing the generator stops every child at once;
    so that a caller that can only cancel between two values (the GUI) need not wait for a long
    decode, the number of the item waited on is yielded every :data:`HEARTBEAT_S` meanwhile.
    ``inherited``: open files a forked child closes first (a lock it must not hold).
    """
    ctx = _context()
    n = max(1, int(processes))
    todo, ready, out = deque(order), {}, 0
    order = list(order)
    children: list[_Child] = []
    beat = time.monotonic()
    try:
        children += [_Child(ctx, reader, inherited) for _ in range(min(n, len(order)))]
        if not all([c.started() for c in children]):  # no child processes here: decode in this one, unguarded
            yield from (reader[i] for i in order)
            return
        while out < len(order):
            for c in children:
                if c.item is None and todo and len(ready) < ahead * n:
                    c.give(todo.popleft())
            while out < len(order) and order[out] in ready:
                yield ready.pop(order[out])
                out += 1
                beat = time.monotonic()
            if out == len(order):
                break
            if time.monotonic() - beat > HEARTBEAT_S:
                yield order[out]
                beat = time.monotonic()
            busy = [c for c in children if c.item is not None]
            for conn in wait([c.conn for c in busy], timeout=POLL_S):
                c = next(c for c in busy if c.conn is conn)
                try:
                    ready[c.item] = conn.recv()
                    c.item = None
                except (EOFError, OSError):  # the child died with the item
                    ready[c.item] = reader.failed(c.item, _death(c))
                    children[children.index(c)] = _restart(ctx, reader, c, inherited)
            now = time.monotonic()
            for k, c in enumerate(children):
                if c.item is not None and seconds is not None and now - c.since > seconds:
                    ready[c.item] = reader.failed(c.item, f"still decoding after {seconds:g} s, the time limit: stopped")
                    children[k] = _restart(ctx, reader, c, inherited)
    finally:
        for c in children:
            c.stop(kill=c.item is not None)


def prefetched(items: Iterator, depth: int) -> Iterator:
    """``items`` (a generator) driven by a background thread up to ``depth`` values ahead.

    A child holds one item at a time and its result (~150 KB of pixels) fills the pipe, so while
    the caller encodes a batch nothing reached the children and decoding stood still: measured,
    the whole run went at about half the encoder's bare rate. Here the thread keeps the children
    busy while the caller works (the encoders and the pipes release the GIL). Closing this generator
    stops the thread within one of :func:`decoded`'s slices and closes ``items`` in that thread;
    an error of ``items`` is raised here.
    """
    values: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    end = object()
    failure: list[BaseException] = []

    def put(value) -> bool:
        while not stop.is_set():
            try:
                values.put(value, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def pump() -> None:
        try:
            for value in items:
                if not put(value):
                    break
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            failure.append(e)
        finally:
            try:
                items.close()  # here: a generator is closed by the thread that runs it
            finally:
                put(end)

    thread = threading.Thread(target=pump, name="duch-decode", daemon=True)
    thread.start()
    try:
        while True:
            value = values.get()
            if value is end:
                break
            yield value
        if failure:
            raise failure[0]
    finally:
        stop.set()
        thread.join()


def _restart(ctx, reader: TileReader, child: _Child, inherited: Sequence) -> _Child:
    child.stop(kill=True)
    fresh = _Child(ctx, reader, inherited)
    if not fresh.started():
        fresh.stop(kill=True)
        raise OSError("a decoding process could not be started again (out of memory or processes?)")
    return fresh


def _death(child: _Child) -> str:
    child.proc.join(1.0)
    code = child.proc.exitcode
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        return f"the decoder crashed on this file ({name})"
    return "the decoder stopped on this file"
