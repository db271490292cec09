"""Searching, the detail pane and export: the half of the main window that reads the archive."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from PySide6.QtWidgets import QFileDialog

from . import export
from .desktop import NO_FOLDER, READY, is_weak
from .detail import PREVIEW, TileDetails
from .results import hit_name


EXTENSIONS = {"csv": (".csv",), "geojson": (".geojson", ".json")}


def with_extension(path: str | Path, kind: str) -> Path:
    """``path`` ending in the chosen format's extension ("tanks" -> "tanks.csv"); a name the
    user already ended that way is kept as it is."""
    path = Path(path)
    if path.suffix.lower() in EXTENSIONS[kind]:
        return path
    return path.with_name(path.name + EXTENSIONS[kind][0])


@dataclass
class SearchAnswer:
    """What a search worker hands back: the hits, a note on how the query was read, and how
    many tiles were searched when the index was still being built (None otherwise)."""

    hits: list
    note: str | None = None
    searched: int | None = None
    typed: bool = False  # a typed description (a weak best match means "no such thing here")


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
        self.settings.set_last_query(query)
        self._last_request = lambda: self.search(query)

        def call(archive) -> SearchAnswer:
            # Encoding the query (and loading the text encoder on first use) takes seconds: never on the UI thread.
            hits = archive.search_text(query, k=k, radius=radius)
            try:
                note = archive.query_note(query)
            except Exception:  # noqa: BLE001 - a note is a nicety; the search itself reports real problems
                note = None
            return SearchAnswer(hits, note, typed=True)

        self._run_search(query, call, radius)

    def find_similar(self, tile_id: int) -> None:
        if self.archive is None:
            return
        k, radius = self.search_bar.k(), self.search_bar.max_radius()
        known = [h for h in self.results_model.hits() if int(h.tile_id) == int(tile_id)]
        name = hit_name(known[0]) if known else f"tile {tile_id}"
        self._last_request = lambda: self.find_similar(tile_id)
        self._run_search(f"similar to {name}", lambda a: a.similar(int(tile_id), k=k, radius=radius), radius)

    def _run_search(self, label: str, call: Callable[[Any], Any], radius: int | None) -> None:
        """Run ``call(archive)`` (hits, or a :class:`SearchAnswer`) in a worker and show its answer."""
        self._search_seq += 1
        self.search_bar.settled()  # a pending Results/Max distance change is part of this search
        seq, generation, archive = self._search_seq, self._generation, self.archive
        self.last_query = label
        self.statusBar().showMessage(f"Searching for “{label}”…")
        partial = self.is_indexing()

        def work(a) -> SearchAnswer:
            answer = call(a)
            answer = answer if isinstance(answer, SearchAnswer) else SearchAnswer(list(answer))
            if partial:  # what the answer was drawn from, while tiles are still arriving
                answer.searched = a.stats().tiles
            return answer

        def done(answer: SearchAnswer) -> None:
            if seq != self._search_seq or generation != self._generation:
                return
            hits = answer.hits
            kept = self._current_tile_id()
            self.results_model.set_hits(hits)
            rows = [r for r, h in enumerate(self.results_model.hits()) if int(h.tile_id) == kept]
            if rows:  # the same search again (more results, new tiles indexed): stay on the tile shown
                self.results_view.setCurrentIndex(self.results_model.index(rows[0]))
            self._update_actions()
            self.search_notice.show_answer(self._notes(answer))
            if hits:
                self.stack.setCurrentWidget(self.results_view)
                self.results_view.scrollToTop()
                shown = label if len(label) <= 80 else label[:77] + "…"
                self.statusBar().showMessage(f"{len(hits)} results for “{shown}”", 10000)
            else:
                self.show_message(self._no_results_text(label, radius))
                self.statusBar().clearMessage()
            self.search_finished.emit(hits)

        def failed(message: str) -> None:
            if seq == self._search_seq and generation == self._generation:
                self.search_notice.show_answer([])
                if self.results_model.rowCount():  # keep what is on screen; say why the new search failed
                    self.statusBar().showMessage(f"The search failed: {message}", 15000)
                else:
                    self.show_message(f"The search failed:\n\n{message}")
                    self.statusBar().clearMessage()
                self.search_failed.emit(message)

        self.tasks.submit(work, archive, on_result=done, on_error=failed)

    def _current_tile_id(self) -> int | None:
        hit = self.results_model.hit(self.results_view.currentIndex().row())
        return int(hit.tile_id) if hit is not None and self.results_view.currentIndex().isValid() else None

    def _notes(self, answer: SearchAnswer) -> list[tuple[str, str]]:
        """``(kind, sentence)`` pairs to show above the results: partial, weak, long query."""
        notes = []
        if answer.searched is not None and self.is_indexing():
            total = self.index_bar.expected_tiles(answer.searched)
            of = f" of {total:,}" if total and total > answer.searched else ""
            notes.append(("partial", f"Searched {answer.searched:,}{of} tiles (indexing): "
                                     "the results change as more tiles are indexed."))
        bits = getattr(getattr(self.archive, "model", None), "bits", None)
        if answer.typed and answer.hits and bits and is_weak(int(answer.hits[0].distance), int(bits)):
            notes.append(("weak", f"No close match: even the best result is at distance "
                                  f"{int(answer.hits[0].distance)} of {bits} bits, as far as a description "
                                  "of nothing in these tiles usually gets. Try other words."))
        if answer.note:
            notes.append(("note", f"Note: {answer.note}."))
        return notes

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
            self.export_results(with_extension(path, kind), kind)

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
