"""The main window end to end on a small generated folder, with a tiny model and fake encoders."""
from __future__ import annotations

import csv
import json
import threading

import pytest
import shiboken6
from PySide6.QtCore import QTimer, Qt
from PySide6.QtWidgets import QFileDialog

from duch_desktop.gui import main_window as mw
from duch_desktop.gui.main_window import NO_FOLDER, NO_INDEX, MainWindow
from duch_desktop.gui.results import DistanceRole

from tests.conftest import run_job

from .conftest import N_TILES, Gate, GatedImageEncoder, TinyImageEncoder, TinyTextEncoder


@pytest.fixture
def make_window(qtbot, gui_settings, tmp_path, user_captions):
    made = []

    def make(archive_options, **index_options):
        opts = {"workers": 0, "batch_size": 4, "captions_file": user_captions, **index_options}
        window = MainWindow(gui_settings, archive_options=archive_options, index_options=opts,
                            index_dir=tmp_path / "index")
        qtbot.addWidget(window)
        window.show()
        made.append(window)
        return window

    yield make
    for w in made:
        if not shiboken6.isValid(w):
            continue
        w.close()  # mid-index it closes once the current batch is committed
        qtbot.waitUntil(lambda w=w: not shiboken6.isValid(w) or not w.isVisible(), timeout=20000)


@pytest.fixture(autouse=True)
def _no_system_viewer(monkeypatch):
    opened = []

    def fake_open(path):
        opened.append(path)
        return True

    monkeypatch.setattr(mw, "open_with_system", fake_open)
    return opened


def index_folder(qtbot, window, folder):
    with qtbot.waitSignal(window.indexing_finished, timeout=30000) as sig:
        window.open_folder(folder)
    qtbot.waitUntil(lambda: not window.is_indexing(), timeout=10000)
    qtbot.waitUntil(lambda: bool(window._tile_count), timeout=10000)  # stats refresh after the run
    return sig.args[0]


def search(qtbot, window, text):
    box = window.search_bar.query
    box.clear()
    qtbot.keyClicks(box, text)
    with qtbot.waitSignal(window.search_finished, timeout=10000) as sig:
        qtbot.keyClick(box, Qt.Key.Key_Return)
    return sig.args[0]


def test_empty_states(qtbot, make_window, archive_options):
    window = make_window(archive_options)
    assert window.message.text() == NO_FOLDER and window.stack.currentWidget() is window.message
    window.search("a river")
    assert window.message.text() == NO_FOLDER
    assert not window.export_csv_action.isEnabled() and not window.reindex_action.isEnabled()
    assert window.device_label.text().startswith("Device: ")
    window.open_folder(window.settings.q.fileName() + ".does-not-exist")
    assert "does not exist" in window.message.text()


def test_index_search_detail_similar_export(qtbot, make_window, archive_options, tile_folder, tmp_path,
                                            _no_system_viewer):
    window = make_window(archive_options)
    report = index_folder(qtbot, window, tile_folder)
    assert report.added == N_TILES and report.errors == 0 and not report.cancelled
    assert window.settings.recent_folders() == [str(tile_folder)]
    qtbot.waitUntil(lambda: f"{N_TILES} tiles" in window.archive_label.text(), timeout=5000)

    hits = search(qtbot, window, "a river between green fields")
    model = window.results_model
    assert 0 < model.rowCount() == len(hits) <= window.search_bar.k()
    distances = [model.data(model.index(r), DistanceRole) for r in range(model.rowCount())]
    assert distances == sorted(distances) and all(0 <= d <= 16 for d in distances)
    assert window.stack.currentWidget() is window.results_view
    assert window.export_csv_action.isEnabled()

    # thumbnails of the visible results load in the background
    qtbot.waitUntil(lambda: model.data(model.index(0), Qt.ItemDataRole.DecorationRole) is not None, timeout=10000)

    # click a result -> detail pane with captions and metadata
    view = window.results_view
    with qtbot.waitSignal(window.details_shown, timeout=10000):
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=view.visualRect(model.index(0)).center())
    captions = window.detail.caption_texts()
    assert captions and all(isinstance(d, int) for _, d in captions)
    assert [d for _, d in captions] == sorted(d for _, d in captions)
    md = window.detail.metadata()
    assert md["Path"] == str(model.hit(0).path) and md["Bands"] == "3" and md["Data type"] == "uint8"

    # double-click opens with the system viewer
    with qtbot.waitSignal(view.open_requested, timeout=5000):
        qtbot.mouseDClick(view.viewport(), Qt.MouseButton.LeftButton, pos=view.visualRect(model.index(0)).center())
    assert _no_system_viewer == [str(model.hit(0).path)]

    # find similar images
    first = model.hit(0).tile_id
    with qtbot.waitSignal(window.search_finished, timeout=10000) as sig:
        window.detail.similar_button.click()
    similar = sig.args[0]
    assert similar and first not in [h.tile_id for h in similar]
    assert window.last_query.startswith("similar to ")

    # export
    hits = search(qtbot, window, "river")
    out_csv = window.export_results(tmp_path / "out.csv")
    rows = list(csv.DictReader(out_csv.open()))
    assert [int(r["distance"]) for r in rows] == [h.distance for h in hits]
    out_gj = window.export_results(tmp_path / "out.geojson")
    gj = json.loads(out_gj.read_text())
    assert len(gj["features"]) == len(hits) and gj["query"] == "river"
    for f in gj["features"]:
        if f["properties"]["rel"].endswith(".tif"):  # GeoTIFFs in UTM 33N: lon ~15 E, lat ~52 N
            ring = f["geometry"]["coordinates"][0]
            assert ring[0] == ring[-1] and 14.9 < ring[0][0] < 15.3 and 52.0 < ring[0][1] < 52.5
        else:
            assert f["geometry"] is None


def test_geotiff_detail_shows_footprint(qtbot, make_window, archive_options, tile_folder):
    window = make_window(archive_options)
    index_folder(qtbot, window, tile_folder)
    window.search_bar.count.setValue(N_TILES)
    search(qtbot, window, "water")
    model = window.results_model
    row = next(r for r in range(model.rowCount()) if model.hit(r).rel == "water/water_2.tif")
    with qtbot.waitSignal(window.details_shown, timeout=10000):
        window.results_view.setCurrentIndex(model.index(row))
    md = window.detail.metadata()
    assert md["CRS"] == "EPSG:32633" and md["Pixels"] == "48 × 48"
    assert md["Footprint"].startswith("lon 15.") and ", lat 52." in md["Footprint"]


def test_no_results_within_radius(qtbot, make_window, archive_options, tile_folder):
    window = make_window(archive_options)
    index_folder(qtbot, window, tile_folder)
    window.archive.search_text = lambda query, k=20, radius=None: []  # nothing that close
    window.search_bar.radius.setValue(2)
    assert search(qtbot, window, "volcano") == []
    assert window.stack.currentWidget() is window.message
    assert "No tiles within Hamming distance 2" in window.message.text()
    assert not window.export_csv_action.isEnabled()


def test_model_that_does_not_load_is_a_message(qtbot, make_window, tmp_path, tile_folder):
    window = make_window({"model": tmp_path / "no-such-model"})
    with qtbot.waitSignal(window.archive_failed, timeout=10000) as sig:
        window.open_folder(tile_folder)
    assert "no hashing model" in sig.args[0]
    assert window.message.text().startswith("Could not open") and "Traceback" not in window.message.text()
    assert window.archive is None


def test_open_missing_index_is_a_message(qtbot, make_window, archive_options, tmp_path):
    window = make_window(archive_options)
    with qtbot.waitSignal(window.archive_failed, timeout=10000) as sig:
        window.open_index(tmp_path / "nothing-here")
    assert "no index at" in sig.args[0] and "no index at" in window.message.text()


def test_cancel_keeps_consistent_reopenable_index(qtbot, make_window, tiny_model, tile_folder, tmp_path):
    gate = Gate(at=2)  # the second batch blocks until released
    options = {"model": tiny_model, "image_encoder": GatedImageEncoder(gate), "text_encoder": TinyTextEncoder()}
    window = make_window(options, batch_size=2)
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(5)
    window.open_folder(tile_folder)
    qtbot.waitUntil(gate.reached.is_set, timeout=20000)
    # The UI thread keeps running while the worker is stuck in the encoder.
    qtbot.waitUntil(lambda: len(ticks) >= 5, timeout=5000)
    assert window.is_indexing() and window.index_bar.isVisible() and window.cancel_action.isEnabled()
    # Searching works on what is already indexed while indexing continues.
    hits = search(qtbot, window, "forest")
    assert 1 <= len(hits) <= 2
    qtbot.keyClick(window, Qt.Key.Key_Escape)  # Esc cancels
    assert not window.index_bar.cancel.isEnabled()
    with qtbot.waitSignal(window.indexing_cancelled, timeout=20000) as sig:
        gate.release.set()
    timer.stop()
    assert sig.args[0] is not None and sig.args[0].cancelled
    qtbot.waitUntil(lambda: not window.is_indexing() and not window.index_bar.isVisible(), timeout=10000)
    done_before = sig.args[0].added
    assert 2 <= done_before < N_TILES
    window.close()

    from duch_desktop.core.archive.archive import Archive

    archive = Archive.open(tmp_path / "index", model=tiny_model, image_encoder=TinyImageEncoder(),
                           text_encoder=TinyTextEncoder())
    try:
        assert len(archive.search_text("forest", k=50)) == done_before
        report = run_job(archive.index(workers=0, batch_size=4))[0]
        assert report.added == N_TILES - done_before and report.unchanged == done_before
        assert len(archive.search_text("forest", k=50)) == N_TILES
    finally:
        archive.close()


def test_keyboard_and_persistence(qtbot, make_window, archive_options, tile_folder, gui_settings, monkeypatch):
    window = make_window(archive_options)
    window.activateWindow()
    qtbot.waitExposed(window)
    window.results_view.setFocus()
    qtbot.keyClick(window, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: window.search_bar.query.hasFocus(), timeout=2000)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(tile_folder)))
    with qtbot.waitSignal(window.indexing_finished, timeout=30000):
        qtbot.keyClick(window, Qt.Key.Key_O, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: not window.is_indexing(), timeout=10000)
    window.resize(655, 433)  # the offscreen screen is 800x600
    window.close()
    assert gui_settings.last_folder() == str(tile_folder)
    again = make_window(archive_options)
    assert (again.width(), again.height()) == (655, 433)
    again._fill_recent_menu()
    assert [a.text() for a in again.recent_menu.actions()][0] == str(tile_folder)


def test_reindex_is_incremental(qtbot, make_window, archive_options, tile_folder):
    window = make_window(archive_options)
    index_folder(qtbot, window, tile_folder)
    (tile_folder / "forest" / "forest_0.png").unlink()
    with qtbot.waitSignal(window.indexing_finished, timeout=30000) as sig:
        window.reindex_action.trigger()
    report = sig.args[0]
    assert report.added == 0 and report.removed == 1 and report.unchanged == N_TILES - 1


def test_unreadable_files_listed_in_errors_panel(qtbot, make_window, archive_options, tile_folder):
    (tile_folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    window = make_window(archive_options)
    report = index_folder(qtbot, window, tile_folder)
    assert report.errors == 1 and report.added == N_TILES
    qtbot.waitUntil(lambda: len(window.errors_dock.entries()) == 1, timeout=5000)
    assert window.errors_dock.entries()[0].startswith("broken.png — ")
    assert window.errors_dock.isVisible()


def test_stale_index_says_so(qtbot, make_window, archive, tmp_path):
    from tests.conftest import make_tiny_model

    archive.close()
    other = {"model": make_tiny_model(seed=5), "image_encoder": TinyImageEncoder(), "text_encoder": TinyTextEncoder()}
    window = make_window(other)
    with qtbot.waitSignal(window.archive_opened, timeout=10000):
        window.open_index(tmp_path / "index")
    qtbot.waitUntil(lambda: "another hashing model" in window.message.text(), timeout=5000)
    with qtbot.waitSignal(window.search_failed, timeout=10000) as sig:
        window.search("forest")
    assert "index the folder again" in sig.args[0] and "another hashing model" in window.message.text()


def test_closing_while_indexing_stops_cleanly(qtbot, make_window, tiny_model, tile_folder, tmp_path):
    gate = Gate(at=2)
    options = {"model": tiny_model, "image_encoder": GatedImageEncoder(gate), "text_encoder": TinyTextEncoder()}
    window = make_window(options, batch_size=2)
    window.open_folder(tile_folder)
    qtbot.waitUntil(gate.reached.is_set, timeout=20000)
    threading.Timer(0.2, gate.release.set).start()  # the encoder finishes its batch a bit later
    window.close()  # cancels; the window stays up, saying why, until the batch is committed
    assert window.isVisible() and window.index_bar.text.text().startswith("Stopping…")
    assert window.statusBar().currentMessage() == "Stopping…" and not window.index_bar.cancel.isEnabled()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=10000)
    assert not window.is_indexing() and window.archive is None

    from duch_desktop.core.archive.archive import Archive

    with Archive.open(tmp_path / "index", model=tiny_model, image_encoder=TinyImageEncoder(),
                      text_encoder=TinyTextEncoder()) as archive:
        n = archive.stats().tiles
        assert 2 <= n < N_TILES and len(archive.search_text("forest", k=50)) == n
        report = run_job(archive.index(workers=0, batch_size=4))[0]  # the run lock was released
        assert report.added == N_TILES - n


def test_empty_folder_and_no_index_messages(qtbot, make_window, archive_options, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    window = make_window(archive_options)
    with qtbot.waitSignal(window.archive_opened, timeout=10000):
        window.open_folder(empty, index=False)
    qtbot.waitUntil(lambda: window.message.text() == NO_INDEX, timeout=5000)
    with qtbot.waitSignal(window.search_finished, timeout=10000) as sig:
        window.search("forest")
    assert sig.args[0] == [] and window.message.text() == NO_INDEX
    with qtbot.waitSignal(window.indexing_finished, timeout=10000):
        window.reindex_action.trigger()
    qtbot.waitUntil(lambda: window.message.text().startswith("No images were found in"), timeout=5000)
    (empty / "junk.png").write_bytes(b"not an image at all")
    with qtbot.waitSignal(window.indexing_finished, timeout=10000):
        window.reindex_action.trigger()
    qtbot.waitUntil(lambda: window.message.text().startswith("None of the files"), timeout=5000)


def test_menu_export_and_captions_file(qtbot, make_window, archive_options, tile_folder, tmp_path, monkeypatch):
    window = make_window(archive_options, captions_file=None)
    index_folder(qtbot, window, tile_folder)
    before = window.archive.stats().captions
    captions = tmp_path / "more.csv"
    captions.write_text("file,caption\nforest/forest_0.png,an old oak wood in autumn\n")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(captions), "")))
    with qtbot.waitSignal(window.indexing_finished, timeout=30000):
        window.captions_action.trigger()
    assert window.archive.stats().captions == before + 1

    search(qtbot, window, "forest")
    target = tmp_path / "exported.geojson"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(target), "")))
    window.export_geojson_action.trigger()
    features = json.loads(target.read_text())["features"]
    assert [f["properties"]["rank"] for f in features] == list(range(1, window.results_model.rowCount() + 1))
    assert "Exported" in window.statusBar().currentMessage()


def test_indexing_error_is_a_message(qtbot, make_window, archive_options, tile_folder, tmp_path):
    window = make_window(archive_options, captions_file=tmp_path / "missing.csv")
    with qtbot.waitSignal(window.indexing_failed, timeout=10000) as sig:
        window.open_folder(tile_folder)
    assert "captions file not found" in sig.args[0]
    qtbot.waitUntil(lambda: not window.is_indexing() and not window.index_bar.isVisible(), timeout=5000)
    assert window.message.text().startswith("Indexing stopped:") and "Traceback" not in window.message.text()
    assert window.reindex_action.isEnabled()


def test_chips_on_the_map_and_in_their_scene(qtbot, make_window, archive_options, scene_folder, gui_settings,
                                             tmp_path):
    from duch_desktop.core.imagery.chips import ChipOptions
    from duch_desktop.gui.detail import CHIP_OUTLINE
    from duch_desktop.gui.map_view import SELECTED
    from tests.conftest import SCENE_CHIP, SCENE_SIZE

    gui_settings.set_index_options(tmp_path / "index", chip=SCENE_CHIP["chip"], overlap=SCENE_CHIP["overlap"],
                                   chip_m=0)
    window = make_window(archive_options)
    report = index_folder(qtbot, window, scene_folder)  # a new index: the options kept for it apply
    assert report.chips == 28 and report.nodata == 8
    assert window.archive.chip_options == ChipOptions(128, 32, None)

    window.search_bar.count.setValue(40)
    hits = search(qtbot, window, "a dense green forest")
    assert len(hits) == N_TILES + 20  # 12 files + 20 chips with data
    window.map_action.trigger()
    assert window.stack.currentWidget() is window.map_panel and window.mode_bar.currentIndex() == 1
    assert window.map_panel.note.text() == "6 of 32 results have no geographic footprint"  # the 6 PNGs
    model, view = window.results_model, window.map_view
    assert len(view.items_by_row()) == 26

    # click a chip on the map: the grid's current result follows and the detail pane shows it in its scene
    row = next(r for r in range(model.rowCount()) if model.hit(r).window == (192, 96, 128, 128))
    chip_rect = view.items_by_row()[row].sceneBoundingRect()
    view.fitInView(chip_rect, Qt.AspectRatioMode.KeepAspectRatio)  # chips are specks at the fitted scale
    with qtbot.waitSignal(window.scene_shown, timeout=10000) as sig:
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=view.mapFromScene(chip_rect.center()))
    assert sig.args == [model.hit(row).tile_id] and window.results_view.currentIndex().row() == row
    assert view.items_by_row()[row].pen().color() == SELECTED
    assert window.detail.metadata()["Window"] == "col 192, row 96, 128 × 128 pixels"
    pix = window.detail.scene.pixmap()
    sx, sy = pix.width() / SCENE_SIZE[0], pix.height() / SCENE_SIZE[1]
    rect = window.detail.scene_rect
    assert (rect.x(), rect.y(), rect.width(), rect.height()) == pytest.approx((192 * sx, 96 * sy, 128 * sx, 128 * sy),
                                                                              abs=1.0)
    image = pix.toImage()
    mid_y = int(rect.center().y())
    assert image.pixelColor(int(rect.left()) + 1, mid_y) == CHIP_OUTLINE  # the outline, on the chip's left edge
    assert image.pixelColor(int(rect.left()) - 4, mid_y) != CHIP_OUTLINE  # just outside: the scene

    # selecting another result in the grid moves the highlight (and the view) to it on the map
    other = next(r for r in range(model.rowCount()) if model.hit(r).window == (0, 256, 128, 128))
    view.zoom(2)
    assert not view.visible_rect().intersects(view.items_by_row()[other].sceneBoundingRect())
    with qtbot.waitSignal(window.details_shown, timeout=10000):
        window.results_view.setCurrentIndex(model.index(other))
    assert view.selected_row == other and view.items_by_row()[other].pen().color() == SELECTED
    assert view.items_by_row()[row].pen().color() != SELECTED
    assert view.visible_rect().contains(view.items_by_row()[other].sceneBoundingRect().center())

    # a whole file has no scene to show; a new search in map mode stays on the map; Grid goes back
    plain = next(r for r in range(model.rowCount()) if model.hit(r).window is None)
    with qtbot.waitSignal(window.details_shown, timeout=10000):
        window.select_result(plain)
    assert not window.detail.scene_box.isVisible() and "Window" not in window.detail.metadata()
    search(qtbot, window, "water")
    assert window.stack.currentWidget() is window.map_panel
    current = window.results_view.currentIndex()
    assert view.selected_row == (current.row() if current.isValid() else None)  # the map follows the grid
    window.mode_bar.setCurrentIndex(0)
    assert window.stack.currentWidget() is window.results_view and window.grid_action.isChecked()
    assert gui_settings.results_mode() == "grid"

    # chip options changed in the dialog re-index the open folder with them (here: chips off)
    window.index_options_action.trigger()
    dialog = window.options_dialog
    assert (dialog.chip.value(), dialog.overlap.value(), dialog.chip_m.value()) == (128, 32, 0)
    assert dialog.current.text() == "This index: chips 128 px, overlap 32 px"
    assert "chips 128 px, overlap 32 px" in window.archive_label.text()  # the status bar says chips are on
    dialog.chip.setValue(0)
    assert not dialog.overlap.isEnabled()
    with qtbot.waitSignal(window.indexing_finished, timeout=30000):
        dialog.ok_button.click()
    assert window.archive.chip_options is None and window.archive.stats().chips == 0
    assert gui_settings.index_options(window.archive.index_dir) == {"chip": 0, "overlap": 0.0, "chip_m": 0.0,
                                                                    "bands": None, "stretch": "auto"}
    qtbot.waitUntil(lambda: "chips" not in window.archive_label.text(), timeout=5000)


def test_options_kept_for_one_index_leave_other_folders_alone(qtbot, make_window, archive_options, scene_folder,
                                                             gui_settings, tmp_path):
    gui_settings.set_index_options(tmp_path / "another-index", chip=128, overlap=32, chip_m=0)
    window = make_window(archive_options)
    report = index_folder(qtbot, window, scene_folder)  # a new index of another folder: no chips
    assert report.chips == 0 and window.archive.chip_options is None
    assert "chips" not in window.archive_label.text()


def test_invalid_index_options_are_refused(qtbot, make_window, archive_options, gui_settings, tile_folder):
    window = make_window(archive_options)
    window.index_options_action.trigger()  # no folder open: options belong to an index
    assert window.options_dialog is None and "Open a folder first" in window.statusBar().currentMessage()
    index_folder(qtbot, window, tile_folder)
    window.index_options_action.trigger()
    dialog = window.options_dialog
    assert dialog.isVisible() and dialog.current.text() == ("This index: every file is one tile, first three bands, "
                                                            "auto stretch")
    dialog.chip.setValue(128)
    dialog.overlap.setValue(128)
    dialog.ok_button.click()
    assert dialog.isVisible() and "less than the chip size (128 pixels)" in dialog.error.text()
    dialog.chip.setValue(16)
    dialog.overlap.setValue(0)
    dialog.ok_button.click()
    assert dialog.isVisible() and "at least 32 pixels" in dialog.error.text()
    dialog.chip.setValue(0)
    dialog.chip_m.setValue(50)
    dialog.overlap.setValue(60)
    assert dialog.overlap.suffix() == " m"
    dialog.ok_button.click()
    assert dialog.isVisible() and "(50 metres)" in dialog.error.text()
    dialog.overlap.setValue(10)
    dialog.bands.setText("4,3")
    dialog.ok_button.click()
    assert dialog.isVisible() and "give one band (grey) or three" in dialog.error.text()
    index_dir = window.archive.index_dir
    assert gui_settings.index_options(index_dir)["chip_m"] == 0.0  # nothing kept
    dialog.bands.setText("3,2,1")
    dialog.stretch.setCurrentIndex(dialog.stretch.findData("none"))
    with qtbot.waitSignal(window.indexing_finished, timeout=30000) as sig:
        dialog.ok_button.click()
    assert sig.args[0].updated + sig.args[0].added > 0  # the band change re-encoded the tiles
    assert gui_settings.index_options(index_dir) == {"chip": 0, "overlap": 10.0, "chip_m": 50.0, "bands": "3,2,1",
                                                     "stretch": "none"}
    assert window.archive.options == {"bands": [3, 2, 1], "stretch": "none"}
    qtbot.waitUntil(lambda: "bands 3,2,1 · stretch none" in window.archive_label.text(), timeout=5000)
    # the same rules hold for values that do not come from the dialog
    assert not window.apply_index_options({"chip": 64, "overlap": 64})
    assert "less than the chip size" in window.statusBar().currentMessage()
