"""Background work for the GUI: core generator jobs, one-off calls and thumbnail loading.

- :class:`JobWorker` drives a core job (a generator yielding ``Progress`` and returning its
  result) in a ``QThread``: every yield becomes a ``progress`` signal, a cancel request is
  honoured between two yields by closing the generator (so its ``finally`` blocks run in
  the worker thread, before ``cancelled`` is emitted).
- :class:`TaskRunner` runs plain callables in a ``QThreadPool`` and delivers their result
  (or a plain error message) back on the UI thread.
- :class:`ThumbnailLoader` turns tile ids into ``QImage`` thumbnails off the UI thread and
  keeps an LRU cache of the resulting pixmaps; each tile is requested at most once.

Nothing here knows about the archive: callers pass the callables.
"""
from __future__ import annotations

import itertools
import sys
import threading
import time
import traceback
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QObject, QThread, QThreadPool, Qt, Signal, Slot
from PySide6.QtGui import QImage, QPixmap

from duch_desktop.core.jobs import Job, UserError


def error_message(exc: BaseException) -> str:
    """A plain sentence for the user: a ``UserError`` as-is, anything else with its type."""
    if isinstance(exc, UserError):
        return str(exc)
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    text = str(exc) or type(exc).__name__
    return f"Unexpected error ({type(exc).__name__}): {text}"


class _JobRunner(QObject):
    """Lives in the worker thread and drives the generator."""

    progress = Signal(object)
    returned = Signal(object)
    raised = Signal(str)
    cancelled = Signal(object)
    ended = Signal()

    def __init__(self, factory: Callable[[], Job], cancel: threading.Event, min_interval: float):
        super().__init__()
        self._factory = factory
        self._cancel = cancel
        self._min_interval = min_interval

    @Slot()
    def run(self) -> None:
        try:
            self._drive()
        finally:
            self.ended.emit()

    def _drive(self) -> None:
        gen = None
        last_emit, last_stage, pending = 0.0, None, None
        try:
            gen = self._factory()
            while True:
                if self._cancel.is_set():
                    if pending is not None:
                        self.progress.emit(pending)
                    value = gen.close()  # raises GeneratorExit at the yield: the job cleans up
                    self.cancelled.emit(value)
                    return
                try:
                    event = next(gen)
                except StopIteration as stop:
                    if pending is not None:
                        self.progress.emit(pending)
                    self.returned.emit(stop.value)
                    return
                now = time.monotonic()
                # A new stage always gets through: the next event may be a long batch away.
                if self._min_interval <= 0 or now - last_emit >= self._min_interval or event.stage != last_stage:
                    self.progress.emit(event)
                    last_emit, last_stage, pending = now, event.stage, None
                else:
                    pending = event  # throttled: the latest one is sent later
        except BaseException as exc:  # noqa: BLE001 - reported to the UI, never lost in a thread
            if gen is not None:
                try:
                    gen.close()
                except BaseException:  # noqa: BLE001
                    pass
            self.raised.emit(error_message(exc))


_LIVE: set["JobWorker"] = set()  # running workers stay alive even if their owner drops them


class JobWorker(QObject):
    """Run one core job in its own thread.

    Signals (delivered on the UI thread): ``progress(Progress)``, then exactly one of
    ``finished(result)``, ``failed(message)`` or ``cancelled(value)``, then ``done()`` once
    the thread has stopped. ``min_interval`` (seconds) throttles progress signals; the last
    event before the end is always delivered.
    """

    progress = Signal(object)
    finished = Signal(object)
    failed = Signal(str)
    cancelled = Signal(object)
    done = Signal()

    def __init__(self, job_factory: Callable[[], Job], parent: QObject | None = None,
                 min_interval: float = 0.0):
        super().__init__(parent)
        self._cancel = threading.Event()
        self._thread: QThread | None = QThread()
        self._runner = _JobRunner(job_factory, self._cancel, min_interval)
        self._runner.moveToThread(self._thread)
        self._runner.progress.connect(self.progress)
        self._runner.returned.connect(self.finished)
        self._runner.raised.connect(self.failed)
        self._runner.cancelled.connect(self.cancelled)
        # Direct: quit() is thread-safe and must not wait for the UI thread (which may be in wait()).
        self._runner.ended.connect(self._thread.quit, Qt.ConnectionType.DirectConnection)
        self._thread.started.connect(self._runner.run)
        self._thread.finished.connect(self._on_thread_finished, Qt.ConnectionType.QueuedConnection)
        self._running = False

    def start(self) -> None:
        if self._thread is None or self._running:
            raise RuntimeError("a JobWorker runs once")
        self._running = True
        _LIVE.add(self)
        self._thread.start()

    def cancel(self) -> None:
        """Ask the job to stop at its next yield (safe to call from any thread, any time)."""
        self._cancel.set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def is_running(self) -> bool:
        """True from start() until the thread has stopped (even before ``done`` is delivered)."""
        return self._running and self._thread is not None and not self._thread.isFinished()

    def wait(self, msecs: int = -1) -> bool:
        """Block until the thread stopped (used when the window closes); True if it did."""
        if self._thread is None:
            return True
        return self._thread.wait() if msecs < 0 else self._thread.wait(msecs)

    @Slot()
    def _on_thread_finished(self) -> None:
        self._running = False
        _LIVE.discard(self)
        self._runner.deleteLater()
        if self._thread is not None:
            self._thread.deleteLater()
            self._thread = None
        self.done.emit()


class TaskRunner(QObject):
    """Run callables in a thread pool; results come back on the UI thread.

    ``submit(fn, *args, on_result=..., on_error=...)`` returns a task id. ``on_error``
    receives a plain message (see :func:`error_message`).
    """

    _result = Signal(int, object)
    _error = Signal(int, str)

    def __init__(self, parent: QObject | None = None, max_threads: int = 2):
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(max_threads)
        self._ids = itertools.count(1)
        self._callbacks: dict[int, tuple[Callable | None, Callable | None]] = {}
        self._result.connect(self._deliver_result, Qt.ConnectionType.QueuedConnection)
        self._error.connect(self._deliver_error, Qt.ConnectionType.QueuedConnection)

    def submit(self, fn: Callable[..., Any], *args: Any, on_result: Callable[[Any], None] | None = None,
               on_error: Callable[[str], None] | None = None, **kwargs: Any) -> int:
        task_id = next(self._ids)
        self._callbacks[task_id] = (on_result, on_error)

        def work() -> None:
            try:
                value = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001
                self._error.emit(task_id, error_message(exc))
            else:
                self._result.emit(task_id, value)

        self.pool.start(work)
        return task_id

    def pending(self) -> int:
        return len(self._callbacks)

    def shutdown(self, msecs: int = 30000) -> bool:
        """Drop queued tasks, wait for running ones; callbacks are not called afterwards."""
        self.pool.clear()
        ok = self.pool.waitForDone(msecs)
        self._callbacks.clear()
        return ok

    @Slot(int, object)
    def _deliver_result(self, task_id: int, value: object) -> None:
        on_result, _ = self._callbacks.pop(task_id, (None, None))
        if on_result is not None:
            on_result(value)

    @Slot(int, str)
    def _deliver_error(self, task_id: int, message: str) -> None:
        _, on_error = self._callbacks.pop(task_id, (None, None))
        if on_error is not None:
            on_error(message)


ThumbnailSource = Callable[[int], "str | Path | QImage | None"]


class ThumbnailLoader(QObject):
    """Load thumbnails in a thread pool, once per tile, and cache them as pixmaps.

    ``source(tile_id)`` runs in a worker thread and returns an image path (e.g.
    ``Archive.thumbnail``) or a ``QImage``. ``loaded(tile_id)`` is emitted on the UI thread
    when :meth:`cached` can answer; ``failed(tile_id, message)`` when it cannot.
    """

    loaded = Signal(int)
    failed = Signal(int, str)
    _ready = Signal(int, int, object)
    _broken = Signal(int, int, str)

    def __init__(self, parent: QObject | None = None, size: int = 160, cache_size: int = 1000,
                 max_threads: int = 2):
        super().__init__(parent)
        self.size = size
        self.cache_size = cache_size
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(max_threads)
        self._source: ThumbnailSource | None = None
        self._generation = 0
        self._cache: OrderedDict[int, QPixmap] = OrderedDict()
        self._pending: set[int] = set()
        self._failed: dict[int, str] = {}
        self.requests = 0  # how many loads were started (tests check laziness with it)
        self._ready.connect(self._on_ready, Qt.ConnectionType.QueuedConnection)
        self._broken.connect(self._on_broken, Qt.ConnectionType.QueuedConnection)

    def set_source(self, source: ThumbnailSource | None) -> None:
        """Switch archives: forget the cache; late results of the old source are ignored."""
        self.pool.clear()
        self._generation += 1
        self._source = source
        self._cache.clear()
        self._pending.clear()
        self._failed.clear()

    def cached(self, tile_id: int) -> QPixmap | None:
        pix = self._cache.get(tile_id)
        if pix is not None:
            self._cache.move_to_end(tile_id)
        return pix

    def error(self, tile_id: int) -> str | None:
        return self._failed.get(tile_id)

    def is_idle(self) -> bool:
        return not self._pending

    def request(self, tile_id: int) -> bool:
        """Start loading ``tile_id`` unless it is cached, loading or known broken."""
        if (self._source is None or tile_id in self._cache or tile_id in self._pending
                or tile_id in self._failed):
            return False
        self._pending.add(tile_id)
        self.requests += 1
        source, generation, size = self._source, self._generation, self.size

        def work() -> None:
            try:
                got = source(tile_id)
                image = got if isinstance(got, QImage) else QImage(str(got)) if got else QImage()
                if image.isNull():
                    raise UserError("no preview available")
                if image.width() > size or image.height() > size:
                    image = image.scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio,
                                         Qt.TransformationMode.SmoothTransformation)
            except BaseException as exc:  # noqa: BLE001
                msg = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
                self._broken.emit(generation, tile_id, msg)
            else:
                self._ready.emit(generation, tile_id, image)

        self.pool.start(work)
        return True

    def shutdown(self, msecs: int = 30000) -> bool:
        self.set_source(None)
        return self.pool.waitForDone(msecs)

    @Slot(int, int, object)
    def _on_ready(self, generation: int, tile_id: int, image: QImage) -> None:
        if generation != self._generation:
            return
        self._pending.discard(tile_id)
        self._cache[tile_id] = QPixmap.fromImage(image)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        self.loaded.emit(tile_id)

    @Slot(int, int, str)
    def _on_broken(self, generation: int, tile_id: int, message: str) -> None:
        if generation != self._generation:
            return
        self._pending.discard(tile_id)
        self._failed[tile_id] = message
        self.failed.emit(tile_id, message)
