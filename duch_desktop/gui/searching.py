"""Searching, the detail pane and export: the half of the main window that reads the archive."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from PySide6.QtWidgets import QFileDialog

from . import export
from .desktop import NO_FOLDER, READY
from .detail import PREVIEW, TileDetails
from .results import hit_name


class SearchMixin:
    """Mixed into :class:`MainWindow`; uses its widgets, ``archive``, ``tasks`` and signals."""

    # ================================================================== searching
    def search(self, query: str | None = None) -> None:
        query = (self.search_bar.query.text() if query is None else query).strip()
        if self.archive is None:
            self.show_message(NO_FOLDER)
            return
        if not query:
            self.show_message(READY.format(""))
            return
        if self.search_bar.query.text().strip() != query:
            self.search_bar.query.setText(query)
        k, radius = self.search_bar.k(), self.search_bar.max_radius()
        try:
            note = self.archive.query_note(query)
        except Exception:  # a note is a nicety; the search itself reports real problems
            note = None
        self._run_search(query, lambda a: a.search_text(query, k=k, radius=radius), radius, note)

    def find_similar(self, tile_id: int) -> None:
        if self.archive is None:
            return
        k, radius = self.search_bar.k(), self.search_bar.max_radius()
        known = [h for h in self.results_model.hits() if int(h.tile_id) == int(tile_id)]
        name = hit_name(known[0]) if known else f"tile {tile_id}"
        self._run_search(f"similar to {name}", lambda a: a.similar(int(tile_id), k=k, radius=radius), radius)

    def _run_search(self, label: str, call: Callable[[Any], list], radius: int | None,
                    note: str | None = None) -> None:
        self._search_seq += 1
        seq, generation, archive = self._search_seq, self._generation, self.archive
        self.last_query = label
        self._last_search = (label, call, radius)
        self.statusBar().showMessage(f"Searching for “{label}”…")

        def done(hits: list) -> None:
            if seq != self._search_seq or generation != self._generation:
                return
            self.results_model.set_hits(hits)
            self._update_actions()
            if hits:
                self.stack.setCurrentWidget(self.results_view)
                self.results_view.scrollToTop()
                shown = label if len(label) <= 80 else label[:77] + "…"
                self.statusBar().showMessage(f"{len(hits)} results for “{shown}”" + (f" — note: {note}" if note else ""),
                                             0 if note else 10000)
            else:
                self.show_message(self._no_results_text(label, radius))
                self.statusBar().clearMessage()
            self.search_finished.emit(hits)

        def failed(message: str) -> None:
            if seq == self._search_seq and generation == self._generation:
                self.results_model.clear()
                self._update_actions()
                self.show_message(f"The search failed:\n\n{message}")
                self.statusBar().clearMessage()
                self.search_failed.emit(message)

        self.tasks.submit(call, archive, on_result=done, on_error=failed)

    def _no_results_text(self, label: str, radius: int | None) -> str:
        # None = the tile count is still being fetched; the stats callback replaces this message
        # with the empty-index one if the index really is empty.
        if self._tile_count == 0 and not self.is_indexing():
            return self.empty_index_text()
        if not self._tile_count and self.is_indexing():
            return "Nothing is indexed yet; try again in a moment."
        if radius is not None:
            return (f"No tiles within Hamming distance {radius} of “{label}”.\n\n"
                    "Raise “Max distance” or set it to “any”.")
        return f"No results for “{label}”."

    # ================================================================== details
    def show_tile(self, row: int) -> None:
        hit = self.results_model.hit(row)
        archive, generation = self.archive, self._generation
        if hit is None or archive is None:
            return
        self._detail_seq += 1
        seq, tile_id = self._detail_seq, int(hit.tile_id)
        self.detail.show_loading(tile_id, hit_name(hit))

        def gather() -> TileDetails:
            from PySide6.QtGui import QImage

            record = archive.tile(tile_id)
            caption_error = None
            try:
                captions = archive.captions_for(tile_id)
            except Exception as exc:  # noqa: BLE001 - the rest of the pane is still useful
                captions, caption_error = [], f"Captions unavailable: {exc}"
            try:
                preview = QImage(str(archive.thumbnail(tile_id, size=PREVIEW)))
            except Exception:  # noqa: BLE001
                preview = None
            return TileDetails(tile_id, record, captions, preview, int(hit.distance), caption_error)

        def done(details: TileDetails) -> None:
            if seq == self._detail_seq and generation == self._generation:
                self.detail.show_details(details)
                self.details_shown.emit(tile_id)

        def failed(message: str) -> None:
            if seq == self._detail_seq and generation == self._generation:
                self.detail.show_message(f"Could not read this tile: {message}")

        self.tasks.submit(gather, on_result=done, on_error=failed)

    # ================================================================== export
    def choose_export(self, kind: str) -> None:
        if not self.results_model.rowCount():
            self.statusBar().showMessage("Nothing to export: run a search first.", 8000)
            return
        start = str(Path(self.settings.last_folder() or Path.home()) / f"results.{kind}")
        filters = "CSV files (*.csv)" if kind == "csv" else "GeoJSON files (*.geojson *.json)"
        path, _ = QFileDialog.getSaveFileName(self, "Export results", start, filters)
        if path:
            self.export_results(path, kind)

    def export_results(self, path: str | Path, kind: str | None = None) -> Path | None:
        path = Path(path)
        kind = kind or ("csv" if path.suffix.lower() == ".csv" else "geojson")
        try:
            writer = export.export_csv if kind == "csv" else export.export_geojson
            out = writer(self.results_model.hits(), path, query=self.last_query)
        except OSError as exc:
            self.statusBar().showMessage(f"Could not write {path}: {exc.strerror or exc}", 15000)
            return None
        self.statusBar().showMessage(f"Exported {self.results_model.rowCount()} results to {out}", 10000)
        return out
