"""The main window: open a folder or an index, index it in the background (chip options
included), search by text, see the results as a grid or on a map, inspect a tile (a chip: in
its scene), find similar tiles, export results."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCloseEvent, QGuiApplication
from PySide6.QtWidgets import (QFileDialog, QLabel, QMainWindow, QSplitter, QStackedWidget, QTabBar,
                               QVBoxLayout, QWidget)

from duch_desktop.core.model.runtime import set_default_runtime

from .desktop import (NO_FOLDER, NO_IMAGES, NO_INDEX, NO_READABLE, PICK_A_RESULT, READY, STALE, default_index_dir,
                      default_opener, device_description, open_with_system, reveal_in_file_manager,
                      runtime_description, stats_text)
from .detail import SCENE_PREVIEW, DetailPane
from .map_view import MapPanel
from .menus import MenusMixin
from .index_options import IndexOptionsDialog, IndexOptionsMixin
from .indexing import IndexingMixin
from .panels import ErrorsDock, IndexBar, MessagePage, SearchBar, SearchNotice
from .results import ResultsModel, ResultsView
from .searching import SearchMixin
from .settings import Settings
from .training import TrainDialog, TrainingMixin
from .workers import JobWorker, TaskRunner, ThumbnailLoader

if TYPE_CHECKING:
    from duch_desktop.core.archive.archive import Archive, ArchiveStats


class MainWindow(MenusMixin, SearchMixin, IndexingMixin, IndexOptionsMixin, TrainingMixin, QMainWindow):
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
    scene_shown = Signal(int)
    encoders_changed = Signal()  # from any thread: an encoder was loaded or the runtime changed

    def __init__(self, settings: Settings | None = None, archive_options: dict | None = None,
                 index_options: dict | None = None, index_dir: str | Path | None = None,
                 opener: Callable[..., Any] | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.settings = settings or Settings()
        self.archive_options = dict(archive_options or {})
        self.index_options = dict(index_options or {})
        self.index_dir_override = Path(index_dir) if index_dir else None
        self.opener = opener or default_opener
        self.archive: Archive | None = None
        self.folder: Path | None = None
        self.job: JobWorker | None = None
        self.last_query: str | None = None
        self._after_job: Callable[[], None] | None = None
        self._generation = 0      # bumps whenever the archive changes: late answers are dropped
        self._search_seq = 0
        self._detail_seq = 0
        self._tile_count: int | None = None
        self._stats: ArchiveStats | None = None
        self._last_request: Callable[[], None] | None = None  # runs the search on screen again
        self._index_failed = False
        self._new_index = False   # the open index was created by this open: its saved options apply
        self._options_pending: dict | None = None  # indexing options chosen for the open index, not yet run
        self.results_mode = self.settings.results_mode()
        self.options_dialog: IndexOptionsDialog | None = None
        self.train_dialog: TrainDialog | None = None

        self.setWindowTitle("DUCH Desktop")
        self.tasks = TaskRunner(self, max_threads=2)
        self.warmer = TaskRunner(self, max_threads=1)  # loads encoders; never holds up searches or closing
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
        results, radius = self.settings.search_options()
        self.search_bar.count.setValue(results)
        self.search_bar.radius.setValue(radius)
        self.search_bar.query.setText(self.settings.last_query())
        self.search_bar.options_changed.connect(self._search_options_changed)
        self.index_bar = IndexBar()
        self.index_bar.cancel_requested.connect(self.cancel_indexing)

        self.message = MessagePage()
        self.results_view = ResultsView()
        self.results_view.setModel(self.results_model)
        self.results_view.selectionModel().currentChanged.connect(lambda cur, _prev: self.show_tile(cur.row()))
        self.results_view.open_requested.connect(self.open_file)
        self.results_view.copy_path_requested.connect(lambda p: QGuiApplication.clipboard().setText(p))
        self.results_view.reveal_requested.connect(self.reveal_file)
        self.results_view.similar_requested.connect(self.find_similar)
        self.map_panel = MapPanel(self.thumbs)
        self.map_view = self.map_panel.view
        self.map_view.row_clicked.connect(self.select_result)
        self.results_model.modelReset.connect(self._hits_changed)
        self.results_view.selectionModel().currentChanged.connect(lambda cur, _p: self.map_view.select_row(cur.row()))
        self.stack = QStackedWidget()
        self.stack.addWidget(self.message)
        self.stack.addWidget(self.results_view)
        self.stack.addWidget(self.map_panel)
        self.stack.currentChanged.connect(self._page_changed)
        self.mode_bar = QTabBar()
        self.mode_bar.addTab("Grid")
        self.mode_bar.addTab("Map")
        self.mode_bar.setToolTip("Show the results as a grid of thumbnails or on a map")
        self.mode_bar.setCurrentIndex(1 if self.results_mode == "map" else 0)
        self.mode_bar.currentChanged.connect(lambda i: self.set_results_mode("map" if i == 1 else "grid"))
        self.mode_bar.setVisible(False)
        results_area = QWidget()
        area = QVBoxLayout(results_area)
        area.setContentsMargins(0, 0, 0, 0)
        area.setSpacing(0)
        area.addWidget(self.mode_bar)
        self.search_notice = SearchNotice()
        area.addWidget(self.search_notice)
        area.addWidget(self.stack, 1)

        self.detail = DetailPane()
        self.detail.find_similar.connect(self.find_similar)
        self.detail.open_requested.connect(self.open_file)
        self.details_shown.connect(self._load_scene)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(results_area)
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

        set_default_runtime(self.settings.runtime())
        self._device = device_description()
        self.device_label = QLabel(self._device_text())
        self.archive_label = QLabel("No index")
        self.statusBar().addPermanentWidget(self.archive_label)
        self.statusBar().addPermanentWidget(self.device_label)
        self.encoders_changed.connect(self._show_runtime)  # queued onto the UI thread when a worker loads

    def _device_text(self) -> str:
        return f"Device: {self._device} · Runtime: {runtime_description(self.archive)}"

    def _show_runtime(self) -> None:
        self.device_label.setText(self._device_text())

    def set_runtime(self, name: str) -> None:
        """Run the encoders on ``name`` (auto/onnx/torch) from now on; remembered in the settings."""
        self.settings.set_runtime(name)
        set_default_runtime(name)
        if self.archive is not None and hasattr(self.archive, "use_runtime"):
            self.archive.use_runtime(None)  # None: the default just set
            # Load the text encoder again now: the next search does not wait, and the status bar
            # says what it really runs on (an onnx that cannot load falls back to torch under auto).
            self.warmer.submit(lambda a=self.archive: a.text_encoder)
        self._show_runtime()

    def _update_actions(self) -> None:
        indexing = self.is_indexing()
        self.reindex_action.setEnabled(self.archive is not None and not indexing)
        self.captions_action.setEnabled(self.archive is not None and not indexing)
        self.cancel_action.setEnabled(indexing)
        has_hits = self.results_model.rowCount() > 0
        self.export_csv_action.setEnabled(has_hits)
        self.export_geojson_action.setEnabled(has_hits)
        self.fit_map_action.setEnabled(bool(self.map_view.items_by_row()))

    def _restore(self) -> None:
        geometry, state = self.settings.geometry(), self.settings.window_state()
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1200, 780)
        if state is not None:
            self.restoreState(state)
        splitter = self.settings.splitter_state()
        if splitter is not None:
            self.splitter.restoreState(splitter)
        else:
            self.splitter.setSizes([self.width() * 2 // 3, self.width() // 3])
        self.errors_dock.hide()  # shown again when the open folder has unreadable files

    def show_message(self, text: str) -> None:
        self.message.setText(text)
        self.stack.setCurrentWidget(self.message)

    # ================================================================== grid / map
    def set_results_mode(self, mode: str) -> None:
        """Show the results as a "grid" or on a "map" (remembered); a message on screen stays."""
        mode = "map" if mode == "map" else "grid"
        self.results_mode = mode
        self.settings.set_results_mode(mode)
        self.mode_bar.blockSignals(True)  # its change signal would come back here
        self.mode_bar.setCurrentIndex(1 if mode == "map" else 0)
        self.mode_bar.blockSignals(False)
        (self.map_action if mode == "map" else self.grid_action).setChecked(True)  # exclusive group
        if self.stack.currentWidget() is not self.message:
            self.stack.setCurrentWidget(self.map_panel if mode == "map" else self.results_view)

    def _page_changed(self, _index: int) -> None:
        page = self.stack.currentWidget()
        # Searches show results by showing the grid page: in map mode they go to the map instead.
        if page is self.results_view and self.results_mode == "map":
            self.stack.setCurrentWidget(self.map_panel)
            return
        self.mode_bar.setVisible(page is not self.message)
        if page is self.results_view and self.results_view.currentIndex().isValid():
            self.results_view.scrollTo(self.results_view.currentIndex())

    def fit_map(self) -> None:
        self.set_results_mode("map")
        self.map_view.fit_to_results()

    def _hits_changed(self) -> None:
        self.map_panel.set_hits(self.results_model.hits())
        current = self.results_view.currentIndex()  # the view may have set one while the model reset
        self.map_view.select_row(current.row() if current.isValid() else None)
        # The detail pane follows the result set: it never shows a tile of an older search or index.
        if current.isValid():
            self.show_tile(current.row())
        else:
            self._detail_seq += 1
            self.detail.show_message(PICK_A_RESULT)

    def open_file(self, path: str) -> None:
        """Open a result with the system viewer; say so in the window when that is impossible."""
        if not Path(path).exists():
            self.statusBar().showMessage(f"Cannot open {path}: the file is no longer there.", 15000)
        elif not open_with_system(path):
            self.statusBar().showMessage(f"Cannot open {path}: no application to show it was found "
                                         "(set a default image viewer in your desktop settings).", 15000)

    def reveal_file(self, path: str) -> None:
        if not reveal_in_file_manager(path):
            self.statusBar().showMessage(f"Cannot show {Path(path).parent}: no file manager could be started.",
                                         15000)

    def select_result(self, row: int) -> None:
        """Make result ``row`` the current one (grid, map and detail pane follow)."""
        index = self.results_model.index(row)
        if index.isValid():
            self.results_view.setCurrentIndex(index)

    def _load_scene(self, tile_id: int) -> None:
        """For a chip, load its scene's preview off the UI thread into the detail pane."""
        archive, generation, seq = self.archive, self._generation, self._detail_seq
        if archive is None or self.detail.window is None or self.detail.tile_id != tile_id:
            return

        def load():
            from PySide6.QtGui import QImage

            path, rect = archive.scene_preview(tile_id, size=SCENE_PREVIEW)
            return QImage(str(path)), rect

        def current() -> bool:
            return seq == self._detail_seq and generation == self._generation and self.detail.tile_id == tile_id

        def done(result) -> None:
            if current():
                self.detail.show_scene(*result)
                self.scene_shown.emit(tile_id)

        def failed(message: str) -> None:
            if current():
                self.detail.show_scene_error(message)

        self.tasks.submit(load, on_result=done, on_error=failed)

    def _search_options_changed(self) -> None:
        """Results or Max distance changed: keep them, and show the search on screen with them."""
        self.settings.set_search_options(self.search_bar.count.value(), self.search_bar.radius.value())
        if self._last_request is not None and self.archive is not None:
            self._last_request()

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
        from duch_desktop.core.model.defaults import data_dir

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

    def reopen_last_folder(self, index: bool = True) -> bool:
        """A bare start: open the folder of the last session, unless it is gone (then say so)."""
        last = self.settings.last_folder()
        if not last:
            return False
        if not Path(last).is_dir():
            self.show_message(f"{NO_FOLDER}\n\nThe folder of the last session, {last}, is no longer there.")
            return False
        self.open_folder(last, index=index)
        return True

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
        from duch_desktop.core.archive.database import ARCHIVE_DB

        new_index = folder is not None and not (index_dir / ARCHIVE_DB).is_file()
        self.show_message(f"Opening {folder or index_dir}…\n(the first start loads the models, "
                          "which can take a few seconds)")
        self.archive_label.setText("Opening…")

        def opened(archive: Any) -> None:
            if generation != self._generation:
                archive.close()
                return
            self._new_index = new_index
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
        watch = getattr(archive, "watch_encoders", None)
        if watch is not None:
            watch(self.encoders_changed.emit)
        self._show_runtime()
        # Load the text encoder now, in the background, so the first search does not wait for it.
        self.warmer.submit(lambda a=archive: a.text_encoder)
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
        self._detail_seq += 1
        self.detail.show_message(PICK_A_RESULT)
        self.search_notice.show_answer([])
        self.errors_dock.set_errors([])
        self.errors_dock.hide()
        self.thumbs.set_source(None)
        if self.archive is not None:
            self.thumbs.pool.waitForDone()
            self.tasks.pool.waitForDone()
            try:
                self.archive.close()
            except Exception as exc:  # noqa: BLE001
                print(f"closing the archive: {exc}", file=sys.stderr)
        self.archive, self.folder, self._tile_count, self._stats = None, None, None, None
        self.last_query, self._last_request = None, None
        self._new_index, self._options_pending = False, None
        self._update_actions()
        self._show_runtime()

    def _refresh_stats(self) -> None:
        archive, generation = self.archive, self._generation
        if archive is None:
            return

        def show(stats: ArchiveStats) -> None:
            if generation == self._generation:
                self._stats = stats
                self._tile_count = stats.tiles
                self.archive_label.setText(stats_text(stats))
                # a failed run's message says why the index is empty; don't replace it with a vaguer one
                if self.is_indexing() or self.stack.currentWidget() is not self.message or self._index_failed:
                    return
                if stats.stale:
                    self.show_message(STALE)
                elif self._tile_count == 0:
                    self.show_message(self.empty_index_text())

        self.tasks.submit(archive.stats, on_result=show, on_error=lambda m: self.archive_label.setText(m))

    def empty_index_text(self) -> str:
        """Why there is nothing to search: not indexed yet, no images, or none readable."""
        report = getattr(self.archive, "last_report", None)
        if self.archive is None or report is None or report.cancelled:
            return NO_INDEX
        if self._stats is not None and self._stats.errors:
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
                elif not errors:
                    self.errors_dock.hide()  # an empty list of problems is no news

        self.tasks.submit(archive.errors, on_result=show)

    # ================================================================== closing
    def closeEvent(self, event: QCloseEvent) -> None:
        if self.is_indexing():
            # Stop at the end of the current batch (the core commits what is done), then close; the
            # window stays up and responsive meanwhile, saying why it has not gone yet.
            event.ignore()
            self._after_job = self.close
            if self.job is not None and not self.job.cancel_requested:
                self.job.cancel()
            self.index_bar.cancelling("Stopping… (finishing the current batch, then closing)")
            self.statusBar().showMessage("Stopping…")
            return
        self.settings.save_window(self.saveGeometry(), self.saveState())
        self.settings.set_splitter_state(self.splitter.saveState())
        self._after_job = None
        self._generation += 1
        self.thumbs.shutdown()
        self.tasks.shutdown()
        self.warmer.pool.clear()  # a model still loading is not waited for: the process is ending
        if self.archive is not None:
            try:
                self.archive.close()
            except Exception:  # noqa: BLE001
                pass
            self.archive = None
        super().closeEvent(event)

