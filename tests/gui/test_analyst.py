"""The main window as an analyst uses it: no freeze on the first search, panes that follow the
results, partial and weak results said so, failures shown in the window, settings kept."""
from __future__ import annotations

import os
import stat
import time

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QFileDialog

from duch_desktop.core.archive.archive import Archive
from duch_desktop.core.model import defaults
from duch_desktop.gui import desktop
from duch_desktop.gui import main_window as mw
from duch_desktop.gui.main_window import MainWindow

from tests.conftest import TEXT_ID, register_tiny_encoders, run_job

from .conftest import N_TILES, Gate, GatedImageEncoder, TinyImageEncoder, TinyTextEncoder
from .test_main_window import index_folder, make_window, search  # noqa: F401 - fixture

LOAD_S = 1.5  # a slow text encoder: seconds to load (like MiniLM from disk) and to read each query


class SlowTextEncoder(TinyTextEncoder):
    """Takes seconds to load and to encode: anything doing either on the UI thread freezes it."""

    max_tokens = 8

    def __init__(self, identity: str = TEXT_ID):
        time.sleep(LOAD_S)
        super().__init__(identity)

    def encode(self, texts):
        time.sleep(0.3)
        return super().encode(texts)

    def token_count(self, text: str) -> int:  # one token per word
        time.sleep(0.3)
        return len(text.split())

    def kept_text(self, text: str) -> str:
        return " ".join(text.split()[:self.max_tokens])


@pytest.fixture
def indexed(tmp_path, tile_folder, tiny_model_dir, user_captions):
    """An index of ``tile_folder`` at tmp_path/index, built with the fast tiny encoders."""
    with Archive.open(tmp_path / "index", model=tiny_model_dir, image_encoder=TinyImageEncoder(),
                      text_encoder=TinyTextEncoder(), create_root=tile_folder) as archive:
        run_job(archive.index(workers=0, batch_size=4, captions_file=user_captions))
    return tmp_path / "index"


def test_first_search_never_freezes_the_window(qtbot, gui_settings, indexed, tiny_model_dir):
    """The text encoder is loaded (seconds) on first use: the event loop keeps turning meanwhile."""
    defaults.register_encoder_factory("test-bow", SlowTextEncoder)
    try:
        options = {"model": tiny_model_dir, "image_encoder": TinyImageEncoder()}  # the text encoder: loaded lazily
        window = MainWindow(gui_settings, archive_options=options)
        qtbot.addWidget(window)
        window.show()
        with qtbot.waitSignal(window.archive_opened, timeout=10000):
            window.open_index(indexed)
        ticks = []
        timer = QTimer()
        timer.setInterval(20)
        timer.timeout.connect(lambda: ticks.append(time.monotonic()))
        timer.start()
        started = time.monotonic()
        with qtbot.waitSignal(window.search_finished, timeout=20000) as sig:
            window.search("a dense green forest with many trees")  # 7 words: no note
        timer.stop()
        took = time.monotonic() - started
        gaps = [b - a for a, b in zip([started] + ticks, ticks)]
        assert took > LOAD_S  # the encoder really was loaded during this search...
        assert max(gaps) < 0.25, f"the event loop stalled {max(gaps):.2f} s"  # ...and the window stayed live
        assert len(sig.args[0]) == N_TILES and window.stack.currentWidget() is window.results_view
        # a long query's note is shown in full above the results, not cut off in the status bar
        with qtbot.waitSignal(window.search_finished, timeout=20000):
            window.search("a dense green forest with many trees next to a calm blue lake")
        note = window.search_notice.texts()["note"]
        assert "reads only the first 8" in note and note.endswith(".") and window.search_notice.isVisible()
        window.close()
    finally:
        register_tiny_encoders()


def test_detail_pane_follows_results_and_index(qtbot, make_window, archive_options, tile_folder, tmp_path):
    window = make_window(archive_options)
    index_folder(qtbot, window, tile_folder)
    search(qtbot, window, "forest")
    with qtbot.waitSignal(window.details_shown, timeout=10000):
        window.select_result(0)
    assert window.detail.tile_id == window.results_model.hit(0).tile_id
    search(qtbot, window, "water")  # another result set: the pane no longer shows a tile of the old one
    shown = window.results_view.currentIndex()
    if shown.isValid():
        qtbot.waitUntil(lambda: window.detail.tile_id == window.results_model.hit(shown.row()).tile_id, timeout=5000)
    else:
        assert window.detail.tile_id is None and window.detail.title.text() == desktop.PICK_A_RESULT

    # the tile shown vanishes from the index: Find similar says so plainly and keeps the grid
    with qtbot.waitSignal(window.details_shown, timeout=10000):
        window.select_result(0)
    gone = window.results_model.hit(0)
    conn = window.archive.db.connection()
    conn.execute("DELETE FROM tiles WHERE id = ?", (int(gone.tile_id),))
    conn.commit()
    with qtbot.waitSignal(window.search_failed, timeout=10000):
        window.detail.similar_button.click()
    assert window.results_model.rowCount() > 0 and window.stack.currentWidget() is window.results_view
    assert f"no tile with id {gone.tile_id}" in window.statusBar().currentMessage()

    # opening another folder clears the pane, the notes and the errors panel
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.png").write_bytes(b"not a png")
    window.index_dir_override = tmp_path / "index-other"
    index_folder_any(qtbot, window, other)
    qtbot.waitUntil(lambda: len(window.errors_dock.entries()) == 1 and window.errors_dock.isVisible(), timeout=5000)
    assert window.detail.tile_id is None and window.detail.title.text() == desktop.PICK_A_RESULT
    window.index_dir_override = tmp_path / "index"
    index_folder(qtbot, window, tile_folder)
    qtbot.waitUntil(lambda: window.errors_dock.entries() == [], timeout=5000)
    assert not window.errors_dock.isVisible()  # no empty panel left open for the next folder


def index_folder_any(qtbot, window, folder):
    with qtbot.waitSignal(window.indexing_done, timeout=30000):
        window.open_folder(folder)


def test_open_failures_are_shown_in_the_window(qtbot, make_window, archive_options, tile_folder, monkeypatch):
    window = make_window(archive_options)
    index_folder(qtbot, window, tile_folder)
    search(qtbot, window, "forest")
    monkeypatch.setattr(mw, "open_with_system", lambda path: False)  # no default viewer on this desktop
    window.results_view.open_requested.emit(str(window.results_model.hit(0).path))
    assert "no application to show it was found" in window.statusBar().currentMessage()
    window.open_file(str(tile_folder / "gone.png"))
    assert "no longer there" in window.statusBar().currentMessage()
    monkeypatch.setattr(mw, "reveal_in_file_manager", lambda path: False)
    window.results_view.reveal_requested.emit(str(window.results_model.hit(0).path))
    assert "no file manager could be started" in window.statusBar().currentMessage()


def test_export_gets_the_format_extension_and_normal_permissions(qtbot, make_window, archive_options, tile_folder,
                                                                  tmp_path, monkeypatch):
    window = make_window(archive_options)
    index_folder(qtbot, window, tile_folder)
    search(qtbot, window, "forest")
    old = os.umask(0o027)  # a umask of 027: group may read, others nothing
    try:
        monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(tmp_path / "tanks"), ""))
        window.choose_export("csv")
        window.choose_export("geojson")
    finally:
        os.umask(old)
    for name in ("tanks.csv", "tanks.geojson"):
        out = tmp_path / name
        assert out.is_file() and stat.S_IMODE(out.stat().st_mode) == 0o640, name
    assert not (tmp_path / "tanks").exists()
    assert "tanks.geojson" in window.statusBar().currentMessage()


def test_partial_results_say_how_much_was_searched(qtbot, make_window, tiny_model, tile_folder):
    gate = Gate(at=2)
    options = {"model": tiny_model, "image_encoder": GatedImageEncoder(gate), "text_encoder": TinyTextEncoder()}
    window = make_window(options, batch_size=2)
    window.open_folder(tile_folder)
    qtbot.waitUntil(gate.reached.is_set, timeout=20000)  # one batch of 2 committed, the next one held
    qtbot.waitUntil(lambda: window.index_bar.last_index_event is not None, timeout=5000)
    with qtbot.waitSignal(window.search_finished, timeout=10000) as sig:
        window.search("forest")
    assert len(sig.args[0]) == 2
    assert window.search_notice.texts()["partial"].startswith(f"Searched 2 of {N_TILES} tiles (indexing)")
    gate.release.set()
    qtbot.waitUntil(lambda: not window.is_indexing(), timeout=20000)
    qtbot.waitUntil(lambda: window.results_model.rowCount() == N_TILES, timeout=10000)  # searched again at the end
    assert "partial" not in window.search_notice.texts()


def test_weak_results_are_marked(qtbot, make_window, archive_options, tile_folder, monkeypatch):
    window = make_window(archive_options)
    index_folder(qtbot, window, tile_folder)
    bits = window.archive.model.bits
    best = {q: int(search(qtbot, window, q)[0].distance) for q in ("forest", "zzzz qqq", "opera tickets")}
    far = max(best, key=best.get)
    assert best[far] > 0
    monkeypatch.setattr(desktop, "WEAK_FRACTION", best[far] / bits)  # the test's own threshold, not the measured one
    search(qtbot, window, far)
    assert window.search_notice.texts()["weak"].startswith(f"No close match: even the best result is at distance "
                                                           f"{best[far]} of {bits} bits")
    monkeypatch.setattr(desktop, "WEAK_FRACTION", (best[far] + 1) / bits)
    search(qtbot, window, far)
    assert "weak" not in window.search_notice.texts()


def test_search_settings_are_kept_and_results_change_searches_again(qtbot, gui_settings, archive_options, tile_folder,
                                                                   tmp_path, make_window):
    window = make_window(archive_options)
    index_folder(qtbot, window, tile_folder)
    hits = search(qtbot, window, "forest")
    assert len(hits) == min(20, N_TILES)
    with qtbot.waitSignal(window.search_finished, timeout=10000) as sig:  # no Enter needed
        window.search_bar.count.setValue(5)
    assert len(sig.args[0]) == 5
    with qtbot.waitSignal(window.search_finished, timeout=10000) as sig:
        window.search_bar.radius.setValue(0)
    assert all(h.distance == 0 for h in sig.args[0])
    window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=10000)

    again = make_window(archive_options)
    assert again.search_bar.count.value() == 5 and again.search_bar.radius.value() == 0
    assert again.search_bar.query.text() == "forest"
    assert gui_settings.last_folder() == str(tile_folder) and gui_settings.splitter_state() is not None
