"""The main window: open a folder or an index, index it in the background, search by text,
inspect a tile, find similar tiles, export results."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCloseEvent, QGuiApplication
from PySide6.QtWidgets import QFileDialog, QLabel, QMainWindow, QSplitter, QStackedWidget, QVBoxLayout, QWidget

from .desktop import (NO_FOLDER, NO_IMAGES, NO_INDEX, NO_READABLE, READY, STALE, default_index_dir,
                      default_opener, device_description, open_with_system, report_text,
                      reveal_in_file_manager, stats_text, tile_count)
from .detail import DetailPane
from .menus import MenusMixin
from .panels import ErrorsDock, IndexBar, MessagePage, SearchBar
from .results import ResultsModel, ResultsView
from .searching import SearchMixin
from .settings import Settings
from .workers import JobWorker, TaskRunner, ThumbnailLoader


class MainWindow(MenusMixin, SearchMixin, QMainWindow):
    """``archive_options`` go to ``Archive.open`` (model, encoders); ``index_options`` to
    ``Archive.index``; ``index_dir`` overrides where the index of an opened folder lives."""

    archive_opened = Signal()
    archive_failed = Signal(str)
    indexing_finished = Signal(object)
    indexing_cancelled = Signal(object)
    indexing_failed = Signal(str)
    indexing_done = Signal()
    search_finished = Signal(list)
    search_failed = Signal(str)
    details_shown = Signal(int)

    def __init__(self, settings: Settings | None = None, archive_options: dict | None = None,
                 index_options: dict | None = None, index_dir: str | Path | None = None,
                 opener: Callable[..., Any] | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.settings = settings or Settings()
        self.archive_options = dict(archive_options or {})
        self.index_options = dict(index_options or {})
        self.index_dir_override = Path(index_dir) if index_dir else None
        self.opener = opener or default_opener
        self.archive: Any = None
        self.folder: Path | None = None
        self.job: JobWorker | None = None
        self.last_query: str | None = None
        self._after_job: Callable[[], None] | None = None
        self._generation = 0      # bumps whenever the archive changes: late answers are dropped
        self._search_seq = 0
        self._detail_seq = 0
        self._tile_count: int | None = None
        self._stats: dict | None = None
        self._last_search: tuple | None = None
        self._index_failed = False

        self.setWindowTitle("DUCH Desktop")
        self.tasks = TaskRunner(self, max_threads=2)
        self.thumbs = ThumbnailLoader(self)
        self.results_model = ResultsModel(self.thumbs, self)
        self._build_ui()
        self._build_menus()
        self._restore()
        self.show_message(NO_FOLDER)

    # ================================================================== UI
    def _build_ui(self) -> None:
        self.search_bar = SearchBar()
        self.search_bar.search_requested.connect(self.search)
        self.index_bar = IndexBar()
        self.index_bar.cancel_requested.connect(self.cancel_indexing)

        self.message = MessagePage()
        self.results_view = ResultsView()
        self.results_view.setModel(self.results_model)
        self.results_view.selectionModel().currentChanged.connect(lambda cur, _prev: self.show_tile(cur.row()))
        self.results_view.open_requested.connect(lambda p: open_with_system(p))
        self.results_view.copy_path_requested.connect(lambda p: QGuiApplication.clipboard().setText(p))
        self.results_view.reveal_requested.connect(lambda p: reveal_in_file_manager(p))
        self.results_view.similar_requested.connect(self.find_similar)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.message)
        self.stack.addWidget(self.results_view)

        self.detail = DetailPane()
        self.detail.find_similar.connect(self.find_similar)
        self.detail.open_requested.connect(lambda p: open_with_system(p))
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.stack)
        self.splitter.addWidget(self.detail)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 1)

        central = QWidget()
        box = QVBoxLayout(central)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(0)
        box.addWidget(self.search_bar)
        box.addWidget(self.index_bar)
        box.addWidget(self.splitter, 1)
        self.setCentralWidget(central)

        self.errors_dock = ErrorsDock(self)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.errors_dock)
        self.errors_dock.hide()

        self.device_label = QLabel(f"Device: {device_description()}")
        self.archive_label = QLabel("No index")
        self.statusBar().addPermanentWidget(self.archive_label)
        self.statusBar().addPermanentWidget(self.device_label)

    def _update_actions(self) -> None:
        indexing = self.is_indexing()
        self.reindex_action.setEnabled(self.archive is not None and not indexing)
        self.captions_action.setEnabled(self.archive is not None and not indexing)
        self.cancel_action.setEnabled(indexing)
        has_hits = self.results_model.rowCount() > 0
        self.export_csv_action.setEnabled(has_hits)
        self.export_geojson_action.setEnabled(has_hits)

    def _restore(self) -> None:
        geometry, state = self.settings.geometry(), self.settings.window_state()
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1200, 780)
        if state is not None:
            self.restoreState(state)

    def show_message(self, text: str) -> None:
        self.message.setText(text)
        self.stack.setCurrentWidget(self.message)

    def focus_search(self) -> None:
        self.search_bar.query.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.search_bar.query.selectAll()

    # ================================================================== opening
    def choose_folder(self) -> None:
        start = self.settings.last_folder() or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder of satellite tiles", start)
        if folder:
            self.open_folder(folder)

    def choose_index(self) -> None:
        from duch_desktop.core.defaults import data_dir

        start = data_dir() / "indexes"
        folder = QFileDialog.getExistingDirectory(self, "Choose an index folder",
                                                  str(start if start.is_dir() else Path.home()))
        if folder:
            self.open_index(folder)

    def open_folder(self, folder: str | Path, index: bool = True) -> None:
        """Open (or create) the index of ``folder`` and, by default, bring it up to date."""
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            self.show_message(f"The folder {folder} does not exist or is not a folder.")
            return
        self.settings.add_recent_folder(str(folder))
        index_dir = self.index_dir_override or default_index_dir(folder)
        self._open(index_dir, folder, index)

    def open_index(self, index_dir: str | Path, index: bool = False) -> None:
        """Open an existing index (its folder is recorded in it)."""
        self._open(Path(index_dir).expanduser(), None, index)

    def _open(self, index_dir: Path, folder: Path | None, index: bool) -> None:
        if self.is_indexing():  # finish the running job first, then come back here
            self._after_job = lambda: self._open(index_dir, folder, index)
            self.cancel_indexing()
            return
        self._close_archive()
        generation = self._generation
        self.show_message(f"Opening {folder or index_dir}…\n(the first start loads the models, "
                          "which can take a few seconds)")
        self.archive_label.setText("Opening…")

        def opened(archive: Any) -> None:
            if generation != self._generation:
                archive.close()
                return
            self._set_archive(archive, index)

        def failed(message: str) -> None:
            if generation == self._generation:
                self.archive_label.setText("No index")
                self.show_message(f"Could not open {folder or index_dir}:\n\n{message}")
                self.archive_failed.emit(message)

        self.tasks.submit(self.opener, index_dir, create_root=folder, **self.archive_options,
                          on_result=opened, on_error=failed)

    def _set_archive(self, archive: Any, index: bool) -> None:
        self.archive = archive
        self.folder = Path(archive.root)
        self.setWindowTitle(f"{self.folder.name} — DUCH Desktop")
        self.search_bar.set_bits(archive.model.bits)
        self.thumbs.set_source(lambda tile_id, a=archive: a.thumbnail(tile_id))  # 256 px, shared with the CLI
        self.archive_opened.emit()
        self._refresh_stats()
        self._refresh_errors()
        self._update_actions()
        if index:
            self.start_indexing()
        else:
            self.show_message(READY.format(""))

    def _close_archive(self) -> None:
        self._generation += 1
        self.results_model.clear()
        self.detail.show_message("Click a result to see its details.")
        self.thumbs.set_source(None)
        if self.archive is not None:
            self.thumbs.pool.waitForDone()
            self.tasks.pool.waitForDone()
            try:
                self.archive.close()
            except Exception as exc:  # noqa: BLE001
                print(f"closing the archive: {exc}", file=sys.stderr)
        self.archive, self.folder, self._tile_count, self._stats = None, None, None, None
        self.last_query, self._last_search = None, None
        self._update_actions()

    def _refresh_stats(self) -> None:
        archive, generation = self.archive, self._generation
        if archive is None:
            return

        def show(stats: dict) -> None:
            if generation == self._generation:
                self._stats = stats
                self._tile_count = tile_count(stats)
                self.archive_label.setText(stats_text(stats, archive))
                if self.is_indexing() or self.stack.currentWidget() is not self.message:
                    return
                if stats.get("stale"):
                    self.show_message(STALE)
                elif self._tile_count == 0:
                    self.show_message(self.empty_index_text())

        self.tasks.submit(archive.stats, on_result=show, on_error=lambda m: self.archive_label.setText(m))

    def empty_index_text(self) -> str:
        """Why there is nothing to search: not indexed yet, no images, or none readable."""
        report = getattr(self.archive, "last_report", None)
        if self.archive is None or report is None or report.cancelled:
            return NO_INDEX
        if (self._stats or {}).get("errors"):
            return NO_READABLE.format(folder=self.archive.root)
        return NO_IMAGES.format(folder=self.archive.root)

    def _refresh_errors(self) -> None:
        archive, generation = self.archive, self._generation
        if archive is None:
            return

        def show(errors: list) -> None:
            if generation == self._generation:
                self.errors_dock.set_errors(errors)
                if errors and not self.errors_dock.isVisible():
                    self.errors_dock.show()
                    self.resizeDocks([self.errors_dock], [max(90, self.height() // 6)], Qt.Orientation.Vertical)

        self.tasks.submit(archive.errors, on_result=show)

    # ================================================================== indexing
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
        archive, options = self.archive, {**self.index_options, **extra}
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
        elif self._last_search is not None and not self._index_failed:
            self._run_search(*self._last_search)  # show the tiles that arrived meanwhile
        elif self.stack.currentWidget() is self.message and self.message.text().startswith("Indexing…"):
            self.show_message(READY.format(""))
        self.indexing_done.emit()

    # ================================================================== closing
    def closeEvent(self, event: QCloseEvent) -> None:
        self.settings.save_window(self.saveGeometry(), self.saveState())
        self._after_job = None
        self._generation += 1
        if self.job is not None:  # stop at the next batch boundary; the core commits what is done
            self.index_bar.cancelling()
            self.job.cancel()
            self.job.wait()
        self.thumbs.shutdown()
        self.tasks.shutdown()
        if self.archive is not None:
            try:
                self.archive.close()
            except Exception:  # noqa: BLE001
                pass
            self.archive = None
        super().closeEvent(event)
