"""Indexing the open folder from the main window: the job in a worker thread, its progress bar,
cancel, and what the window shows when a run ends (the search on screen runs again)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QFileDialog

from .desktop import READY, report_text
from .workers import JobWorker


class IndexingMixin:
    """Mixed into :class:`MainWindow`; uses its ``archive``, ``job``, bars and signals."""

    def is_indexing(self) -> bool:
        return self.job is not None and self.job.is_running()

    def choose_captions(self) -> None:
        start = str(self.folder or Path.home())
        path, _ = QFileDialog.getOpenFileName(self, "Choose a captions file", start,
                                              "Captions (*.csv *.json);;All files (*)")
        if path:
            self.start_indexing(captions_file=path)

    def start_indexing(self, **extra: Any) -> None:
        if self.archive is None or self.is_indexing():
            return
        # Indexing options: those chosen for this index in the dialog; for a new index those kept
        # for it; otherwise none, so the core keeps what the index was built with (as the CLI does).
        saved = self.settings.index_options(self.archive.index_dir) if self._new_index else {}
        archive = self.archive
        options = {**saved, **self.index_options, **(self._options_pending or {}), **extra}
        self._new_index, self._options_pending = False, None
        self.job = JobWorker(lambda: archive.index(**options), self, min_interval=0.1)
        self.job.progress.connect(self._on_progress)
        self.job.finished.connect(self._on_indexed)
        self.job.cancelled.connect(self._on_index_cancelled)
        self.job.failed.connect(self._on_index_failed)
        job = self.job
        self.job.done.connect(lambda: self._on_job_done(job))
        self._seen_errors, self._stats_at, self._index_failed = 0, time.monotonic(), False
        self.index_bar.start()
        if self.stack.currentWidget() is self.message:
            self.show_message("Indexing… you can already search what has been indexed so far.")
        self.job.start()
        self._update_actions()

    def cancel_indexing(self) -> None:
        if self.is_indexing() and not self.job.cancel_requested:
            self.job.cancel()
            self.index_bar.cancelling()

    def _on_progress(self, event) -> None:
        self.index_bar.update_progress(event)
        now = time.monotonic()
        if event.stage == "index" and now - self._stats_at > 2.0:
            self._stats_at = now
            self._refresh_stats()
        errors = int((event.info or {}).get("errors") or 0)
        if errors != self._seen_errors:
            self._seen_errors = errors
            self._refresh_errors()

    def _on_indexed(self, report: Any) -> None:
        self.statusBar().showMessage(report_text(report), 15000)
        self.indexing_finished.emit(report)

    def _on_index_cancelled(self, report: Any) -> None:
        report = report or getattr(self.archive, "last_report", None)
        self.statusBar().showMessage("Indexing cancelled; the tiles indexed so far are kept and searchable.", 15000)
        self.indexing_cancelled.emit(report)

    def _on_index_failed(self, message: str) -> None:
        self._index_failed = True
        self.statusBar().showMessage("Indexing stopped with an error.", 15000)
        self.show_message(f"Indexing stopped:\n\n{message}")
        self.indexing_failed.emit(message)

    def _on_job_done(self, job: JobWorker) -> None:
        job.deleteLater()
        if job is not self.job:  # an older run whose end arrived after a new one started
            return
        self.job = None
        self.index_bar.stop()
        self._update_actions()
        self._refresh_stats()
        self._refresh_errors()
        after, self._after_job = self._after_job, None
        if after is not None:
            after()
        elif self._last_request is not None and not self._index_failed:
            self._last_request()  # show the tiles that arrived meanwhile
        elif self.stack.currentWidget() is self.message and self.message.text().startswith("Indexing…"):
            self.show_message(READY.format(""))
        self.indexing_done.emit()
