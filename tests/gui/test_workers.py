"""The generator-driving worker, the task runner and the thumbnail loader on their own."""
from __future__ import annotations

import threading

from PySide6.QtGui import QColor, QImage

from duch_desktop.core.jobs import Progress, UserError
from duch_desktop.gui.workers import JobWorker, TaskRunner, ThumbnailLoader


def counting_job(n: int, log: list, gate: threading.Event | None = None):
    try:
        for i in range(n):
            if gate is not None and i == 2:
                gate.wait(10)
            log.append(threading.get_ident())
            yield Progress("count", i + 1, n, f"item {i}")
        return "result"
    finally:
        log.append("finally")


def test_job_progress_and_result(qtbot):
    log: list = []
    worker = JobWorker(lambda: counting_job(5, log))
    seen = []
    worker.progress.connect(lambda p: seen.append((p.done, p.total)))
    with qtbot.waitSignal(worker.done, timeout=5000):
        with qtbot.waitSignal(worker.finished, timeout=5000) as finished:
            worker.start()
    assert finished.args == ["result"]
    assert seen == [(i, 5) for i in range(1, 6)]
    assert log[-1] == "finally"
    assert threading.get_ident() not in log[:-1]  # the generator ran off the UI thread
    assert not worker.is_running()


def test_job_cancel_closes_generator(qtbot):
    log: list = []
    gate = threading.Event()
    worker = JobWorker(lambda: counting_job(100, log, gate))
    results, cancelled = [], []
    worker.finished.connect(results.append)
    worker.cancelled.connect(cancelled.append)
    with qtbot.waitSignal(worker.progress, timeout=5000):
        worker.start()
    worker.cancel()
    gate.set()
    with qtbot.waitSignal(worker.done, timeout=5000):
        pass
    assert cancelled == [None] and results == []
    assert log[-1] == "finally"
    assert len(log) - 1 < 100


def test_job_failure_is_a_plain_message(qtbot):
    def bad():
        yield Progress("x", 1, 2)
        raise UserError("the folder is gone")

    worker = JobWorker(bad)
    with qtbot.waitSignal(worker.failed, timeout=5000) as failed:
        worker.start()
    assert failed.args == ["the folder is gone"]
    qtbot.waitUntil(lambda: not worker.is_running(), timeout=5000)


def test_job_factory_error_and_unexpected_error(qtbot, capsys):
    def boom():
        raise ValueError("bad value")

    worker = JobWorker(boom)
    with qtbot.waitSignal(worker.failed, timeout=5000) as failed:
        worker.start()
    assert "bad value" in failed.args[0] and "ValueError" in failed.args[0]
    qtbot.waitUntil(lambda: not worker.is_running(), timeout=5000)


def test_job_progress_throttled_keeps_last(qtbot):
    worker = JobWorker(lambda: counting_job(2000, []), min_interval=10.0)
    seen = []
    worker.progress.connect(lambda p: seen.append(p.done))
    with qtbot.waitSignal(worker.done, timeout=10000):
        worker.start()
    assert seen[0] == 1 and seen[-1] == 2000 and len(seen) < 10


def test_task_runner_result_and_error(qtbot):
    runner = TaskRunner()
    got, errors = [], []
    runner.submit(lambda a, b: a + b, 2, 3, on_result=got.append)
    runner.submit(lambda: (_ for _ in ()).throw(UserError("no index yet")), on_error=errors.append)
    qtbot.waitUntil(lambda: bool(got and errors), timeout=5000)
    assert got == [5] and errors == ["no index yet"]
    assert runner.pending() == 0
    runner.shutdown()


def _image(tmp_path, name, color="red", size=300):
    img = QImage(size, size // 2, QImage.Format.Format_RGB32)
    img.fill(QColor(color))
    path = tmp_path / name
    img.save(str(path))
    return path


def test_thumbnail_loader_loads_once_and_caches(qtbot, tmp_path):
    paths = {1: _image(tmp_path, "a.png"), 2: _image(tmp_path, "b.png", "blue")}
    calls = []

    def source(tile_id):
        calls.append((tile_id, threading.get_ident()))
        if tile_id == 3:
            raise UserError("unreadable")
        return paths[tile_id]

    loader = ThumbnailLoader(size=100)
    loader.set_source(source)
    with qtbot.waitSignal(loader.loaded, timeout=5000) as sig:
        assert loader.request(1)
        assert not loader.request(1)  # already pending
    assert sig.args == [1]
    pix = loader.cached(1)
    assert pix is not None and max(pix.width(), pix.height()) == 100
    assert not loader.request(1)  # cached
    with qtbot.waitSignal(loader.failed, timeout=5000) as failed:
        loader.request(3)
    assert failed.args == [3, "unreadable"] and loader.error(3) == "unreadable"
    assert not loader.request(3)
    assert [c[0] for c in calls] == [1, 3]
    assert all(t != threading.get_ident() for _, t in calls)
    assert loader.is_idle()
    loader.shutdown()


def test_thumbnail_loader_drops_results_of_old_source(qtbot, tmp_path):
    path = _image(tmp_path, "a.png")
    gate = threading.Event()

    def slow(tile_id):
        gate.wait(5)
        return path

    loader = ThumbnailLoader()
    loader.set_source(slow)
    loader.request(1)
    loader.set_source(lambda t: path)  # e.g. another archive was opened
    gate.set()
    with qtbot.waitSignal(loader.loaded, timeout=5000):
        loader.request(2)
    loader.pool.waitForDone()
    qtbot.wait(20)  # let any late queued result arrive (it must be ignored)
    assert loader.cached(1) is None and loader.cached(2) is not None
    loader.shutdown()
