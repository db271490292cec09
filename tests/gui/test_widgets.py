"""Widgets on their own: results model/delegate laziness, detail pane, panels, settings, export."""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QColor, QImage

from duch_desktop.core.files import display_path
from duch_desktop.core.imagery.reading import TileMeta
from duch_desktop.core.jobs import Progress
from duch_desktop.gui import export
from duch_desktop.gui.detail import DetailPane, TileDetails, metadata_rows
from duch_desktop.gui.panels import IndexBar, SearchBar, progress_text
from duch_desktop.gui.results import DistanceRole, ResultsModel, ResultsView, TileIdRole
from duch_desktop.gui.settings import Settings
from duch_desktop.gui.workers import ThumbnailLoader


@dataclass
class FakeHit:
    tile_id: int
    rel: str
    path: Path
    distance: int
    footprint: list | None = None
    window: tuple | None = None


@dataclass
class FakeCaption:
    text: str
    distance: int
    source: str = "captions.json"


@dataclass
class FakeRecord:
    tile_id: int
    rel: str
    path: Path
    size: int
    status: str
    error: str | None
    meta: TileMeta | None


FOOT = [(12.0, 45.0), (12.01, 45.0), (12.01, 45.01), (12.0, 45.01), (12.0, 45.0)]


def hits(n: int) -> list[FakeHit]:
    return [FakeHit(i, f"dir/tile_{i:03d}.tif", Path(f"/data/dir/tile_{i:03d}.tif"), (i * 7) % 11,
                    FOOT if i % 2 == 0 else None) for i in range(n)]


def test_model_sorts_by_distance_and_exposes_roles(qtbot):
    model = ResultsModel()
    model.set_hits(hits(10))
    d = [model.data(model.index(r), DistanceRole) for r in range(model.rowCount())]
    assert d == sorted(d) and len(d) == 10
    assert model.data(model.index(0), Qt.ItemDataRole.DisplayRole).startswith("tile_")
    assert "Hamming distance" in model.data(model.index(0), Qt.ItemDataRole.ToolTipRole)
    model.clear()
    assert model.rowCount() == 0


def test_only_painted_items_request_thumbnails(qtbot, tmp_path):
    img = QImage(64, 64, QImage.Format.Format_RGB32)
    img.fill(QColor("green"))
    requested = []

    def source(tile_id):
        requested.append(tile_id)
        return img

    loader = ThumbnailLoader()
    loader.set_source(source)
    model = ResultsModel(loader)
    view = ResultsView()
    view.setModel(model)
    view.resize(420, 260)  # room for a handful of 172x194 cells
    qtbot.addWidget(view)
    model.set_hits(hits(300))
    view.show()
    qtbot.waitExposed(view)
    qtbot.waitUntil(lambda: loader.requests > 0 and loader.is_idle(), timeout=5000)
    visible = [r for r in range(300) if view.visualRect(model.index(r)).intersects(view.viewport().rect())]
    assert 0 < loader.requests <= len(visible) + 4 < 300
    assert all(model.data(model.index(r), Qt.ItemDataRole.DecorationRole) is not None for r in visible)
    before = loader.requests
    view.scrollToBottom()
    qtbot.waitUntil(lambda: loader.requests > before and loader.is_idle(), timeout=5000)
    assert model.data(model.index(299), Qt.ItemDataRole.DecorationRole) is not None
    assert model.data(model.index(0), TileIdRole) in requested
    assert loader.requests < 300
    loader.shutdown()


def test_context_menu_and_double_click(qtbot):
    model = ResultsModel()
    view = ResultsView()
    view.setModel(model)
    qtbot.addWidget(view)
    model.set_hits(hits(3))
    menu = view.context_menu_for(model.index(0))
    names = [a.text() for a in menu.actions()]
    assert names == ["Open with System Viewer", "Copy Path", "Reveal in File Manager", "Find Similar Images"]
    with qtbot.waitSignal(view.copy_path_requested) as sig:
        menu.actions()[1].trigger()
    assert sig.args == [str(model.hit(0).path)]
    with qtbot.waitSignal(view.similar_requested) as sig:
        menu.actions()[3].trigger()
    assert sig.args == [model.hit(0).tile_id]
    view.show()
    qtbot.waitExposed(view)
    pos = view.visualRect(model.index(1)).center()
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    with qtbot.waitSignal(view.open_requested) as sig:
        qtbot.mouseDClick(view.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    assert sig.args == [str(model.hit(1).path)]
    with qtbot.waitSignal(view.open_requested) as sig:
        qtbot.keyClick(view, Qt.Key.Key_Return)
    assert sig.args == [str(model.hit(1).path)]


def test_detail_pane_shows_metadata_and_captions(qtbot):
    pane = DetailPane()
    qtbot.addWidget(pane)
    assert not pane.similar_button.isEnabled()
    meta = TileMeta(width=64, height=64, bands=3, dtype="uint8", crs="EPSG:4326",
                    bounds=(12.0, 45.0, 12.01, 45.01), footprint=FOOT)
    record = FakeRecord(7, "a/b.tif", Path("/data/a/b.tif"), 2048, "ok", None, meta)
    img = QImage(500, 400, QImage.Format.Format_RGB32)
    img.fill(QColor("blue"))
    pane.show_details(TileDetails(7, record, [FakeCaption("a river", 2), FakeCaption("a beach", 5)], img, 3))
    assert pane.caption_texts() == [("a river", 2), ("a beach", 5)]
    md = pane.metadata()
    assert md["Path"] == "/data/a/b.tif" and md["Bands"] == "3" and md["Data type"] == "uint8"
    assert md["CRS"] == "EPSG:4326" and "lon 12.00000" in md["Footprint"] and "lat 45.00000" in md["Footprint"]
    assert md["Size"] == "2.0 KB"
    assert pane.preview.pixmap().width() <= 256
    with qtbot.waitSignal(pane.find_similar) as sig:
        pane.similar_button.click()
    assert sig.args == [7]
    pane.show_details(TileDetails(8, FakeRecord(8, "c.png", Path("/c.png"), 10, "ok", None,
                                                TileMeta(8, 8, 1, "uint16")), [], None))
    assert pane.caption_texts() == [] and "No captions" in pane.caption_note.text()
    assert pane.metadata()["CRS"].startswith("none") and pane.metadata()["Footprint"] == "not georeferenced"


def test_metadata_rows_error_status():
    rows = dict(metadata_rows(FakeRecord(1, "x.tif", Path("/x.tif"), 0, "error", "truncated file", None)))
    assert rows["Status"] == "error: truncated file" and rows["Raster"] == "not read"


def test_progress_text_and_index_bar(qtbot):
    ev = Progress("index", 120, 480, "a/b.tif", {"rate": 35.25, "eta": 10.4, "errors": 2, "skipped": 1})
    assert progress_text(ev) == "120 / 480 tiles · 35.2 tiles/s · ETA 0:10 · 2 errors · 1 unchanged"
    assert progress_text(Progress("index", 5, 0, "", {})) == "5 tiles"
    assert progress_text(Progress("scan", 2000, 0, "x")) == "Scanning the folder… 2,000 files found"
    assert progress_text(Progress("captions", 3, 9, "")) == "Encoding captions… 3 / 9"
    bar = IndexBar()
    qtbot.addWidget(bar)
    bar.start()
    bar.update_progress(ev)
    assert bar.bar.maximum() == 480 and bar.bar.value() == 120
    with qtbot.waitSignal(bar.cancel_requested):
        bar.cancel.click()


def test_search_bar(qtbot):
    bar = SearchBar()
    qtbot.addWidget(bar)
    assert bar.max_radius() is None and bar.radius.text() == "any"
    bar.radius.setValue(3)
    bar.set_bits(16)
    assert bar.max_radius() == 3 and bar.radius.maximum() == 16
    qtbot.keyClicks(bar.query, "  green forest ")
    with qtbot.waitSignal(bar.search_requested) as sig:
        qtbot.keyClick(bar.query, Qt.Key.Key_Return)
    assert sig.args == ["green forest"]


def test_settings_recent_folders(tmp_path):
    s = Settings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    assert s.recent_folders() == [] and s.last_folder() is None
    s.add_recent_folder("/a")
    assert s.recent_folders() == ["/a"]
    for i in range(12):
        s.add_recent_folder(f"/f{i}")
    s.add_recent_folder("/f3")
    again = Settings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    assert again.recent_folders()[0] == "/f3" and len(again.recent_folders()) == 8
    assert again.last_folder() == "/f3"


def test_export_csv_and_geojson(tmp_path):
    hs = hits(4)
    out = export.export_csv(hs, tmp_path / "r.csv")
    rows = list(csv.DictReader(out.open()))
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[0]["path"] == str(hs[0].path) and rows[0]["distance"] == str(hs[0].distance)
    assert rows[0]["lon_min"] == "12.0000000" and rows[0]["footprint_wkt"].startswith("POLYGON ((12.0")
    assert rows[1]["lon_min"] == "" and rows[1]["footprint_wkt"] == "" and rows[1]["window"] == ""
    chip = FakeHit(9, "scene.tif", Path("/data/scene.tif"), 1, FOOT, (256, 512, 256, 256))
    assert list(csv.DictReader(export.export_csv([chip], tmp_path / "c.csv").open()))[0]["window"] == "256 512 256 256"
    assert export.to_geojson([chip])["features"][0]["properties"]["window"] == [256, 512, 256, 256]
    gj = json.loads(export.export_geojson(hs, tmp_path / "r.geojson", query="river").read_text())
    assert gj["type"] == "FeatureCollection" and gj["query"] == "river" and len(gj["features"]) == 4
    f0 = gj["features"][0]
    assert f0["geometry"]["type"] == "Polygon" and f0["geometry"]["coordinates"][0][0] == [12.0, 45.0]
    assert f0["geometry"]["coordinates"][0][0] == f0["geometry"]["coordinates"][0][-1]
    assert f0["properties"] == {"rank": 1, "distance": hs[0].distance, "tile_id": 0, "rel": hs[0].rel,
                                "path": str(hs[0].path), "window": None}
    assert gj["features"][1]["geometry"] is None


def test_hit_names_and_odd_paths(tmp_path):
    from duch_desktop.gui.results import hit_name

    assert hit_name(FakeHit(1, "a/b.tif", Path("/x/a/b.tif"), 0)) == "b.tif"
    assert hit_name(FakeHit(1, "a/s.tif", Path("/x/a/s.tif"), 0, None, (256, 0, 256, 256))) == "s.tif @ 256,0"
    odd = Path(os.fsdecode(b"/data/caf\xe9.tif"))
    assert display_path(odd) == "/data/caf\\xe9.tif"
    out = export.export_csv([FakeHit(1, "caf\\xe9.tif", odd, 0)], tmp_path / "odd.csv")
    assert "caf\\xe9.tif" in out.read_text(encoding="utf-8")


def test_footprint_forms():
    # One shape: the ring of (lon, lat) pairs the archive stores; an open ring is closed.
    ring = export.footprint_ring([[1, 2], [3, 2], [3, 4], [1, 4]])
    assert ring[0] == ring[-1] == (1.0, 2.0) and len(ring) == 5
    assert export.footprint_bounds(ring) == (1, 2, 3, 4) and export.footprint_ring([1, 2, 3, 4]) is None
    assert export.footprint_ring([]) is None and export.footprint_text(None) == "not georeferenced"


def test_export_module_has_no_qt():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(export))
    names = [n.names[0].name if isinstance(n, ast.Import) else n.module
             for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not [n for n in names if n and n.startswith(("PySide", "PyQt", "shiboken"))]


def test_detail_pane_draws_the_chip_in_its_scene(qtbot):
    from duch_desktop.gui.detail import CHIP_OUTLINE, PREVIEW

    pane = DetailPane()
    qtbot.addWidget(pane)
    meta = TileMeta(width=1000, height=500, bands=3, dtype="uint8", crs="EPSG:32633")
    record = FakeRecord(5, "s.tif", Path("/data/s.tif"), 4096, "ok", None, meta)
    record.window = (600, 100, 200, 200)
    pane.show_details(TileDetails(5, record, [], None))
    md = pane.metadata()
    assert md["Window"] == "col 600, row 100, 200 × 200 pixels" and md["Scene pixels"] == "1000 × 500"
    assert pane.window == (600, 100, 200, 200) and not pane.scene_box.isHidden()
    assert pane.scene.text().startswith("Loading")
    scene = QImage(500, 250, QImage.Format.Format_RGB32)  # a half-size preview of the 1000 x 500 scene
    scene.fill(QColor(20, 120, 40))
    pane.show_scene(scene, (300.0, 50.0, 400.0, 150.0))  # the window at half scale
    pix = pane.scene.pixmap().toImage()
    assert (pix.width(), pix.height()) == (PREVIEW, PREVIEW // 2)
    pane.show()
    qtbot.waitExposed(pane)
    assert pane.scene.height() >= pix.height()  # laid out at full size, not squeezed to nothing
    s = PREVIEW / 1000  # scene pixels -> shown pixels
    r = pane.scene_rect
    assert (r.x(), r.y(), r.width(), r.height()) == (600 * s, 100 * s, 200 * s, 200 * s)
    cy = int(r.center().y())
    for x in (int(r.left()) + 1, int(r.right()) - 1):
        assert pix.pixelColor(x, cy) == CHIP_OUTLINE
    assert pix.pixelColor(int(r.center().x()), cy) == QColor(20, 120, 40)  # inside: the scene
    assert pix.pixelColor(int(r.left()) - 3, cy) == QColor(20, 120, 40)  # outside too
    assert pix.pixelColor(int(r.center().x()), int(r.top()) + 1) == CHIP_OUTLINE
    # a chip of a few pixels in a huge scene is still marked visibly
    pane.show_scene(scene, (10.0, 10.0, 10.5, 10.5))
    assert pane.scene_rect.width() >= 6 and pane.scene_rect.center().x() == pytest.approx(10.25 * PREVIEW / 500)
    pane.show_scene_error("cannot show s.tif: truncated file")
    assert pane.scene_rect is None and pane.scene.text().startswith("The scene cannot be shown")
    # a whole file has no scene box; nor has the empty pane
    pane.show_details(TileDetails(6, FakeRecord(6, "t.png", Path("/t.png"), 9, "ok", None, None), [], None))
    assert pane.scene_box.isHidden() and pane.window is None and "Window" not in pane.metadata()
    pane.show_message("Click a result")
    assert pane.scene_box.isHidden()


def test_index_options_dialog_values(qtbot):
    from duch_desktop.gui.index_options import IndexOptionsDialog, check_chip_options
    from duch_desktop.core.imagery.chips import ChipOptions

    dialog = IndexOptionsDialog({"chip": 256, "overlap": 32, "chip_m": 0, "bands": "4,3,2"}, "chips 256 px, overlap 32 px")
    qtbot.addWidget(dialog)
    assert dialog.values() == {"chip": 256, "overlap": 32.0, "chip_m": 0.0, "bands": "4,3,2", "stretch": "auto"}
    assert dialog.overlap.suffix() == " px" and dialog.overlap.isEnabled()
    assert dialog.current.text() == "This index: chips 256 px, overlap 32 px"
    dialog.chip.setValue(0)
    assert not dialog.overlap.isEnabled() and dialog.values()["overlap"] == 0.0  # off: the overlap means nothing
    dialog.chip_m.setValue(100)
    dialog.bands.clear()
    dialog.stretch.setCurrentIndex(dialog.stretch.findData("percentile"))
    assert dialog.overlap.isEnabled() and dialog.overlap.suffix() == " m"
    assert dialog.values() == {"chip": 0, "overlap": 32.0, "chip_m": 100.0, "bands": None, "stretch": "percentile"}
    assert check_chip_options(0, 32.0, 100.0) == ChipOptions(None, 32.0, 100.0)
    assert check_chip_options(0, 40, 0) is None


def test_settings_kept_per_index_and_results_mode(tmp_path):
    s = Settings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    off = {"chip": 0, "overlap": 0.0, "chip_m": 0.0, "bands": None, "stretch": None}
    assert s.index_options(tmp_path / "a") == off and s.results_mode() == "grid"
    assert s.search_options() == (20, -1) and s.last_query() == "" and s.splitter_state() is None
    s.set_index_options(tmp_path / "a", chip=512, overlap=64, chip_m=120.5, bands="4,3,2", stretch="none")
    s.set_results_mode("map")
    s.set_search_options(50, 12)
    s.set_last_query("a river")
    s.q.sync()
    again = Settings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    assert again.index_options(tmp_path / "a") == {"chip": 512, "overlap": 64.0, "chip_m": 120.5, "bands": "4,3,2",
                                                   "stretch": "none"}
    assert again.index_options(tmp_path / "b") == off  # another index keeps its own (none)
    assert again.results_mode() == "map" and again.search_options() == (50, 12) and again.last_query() == "a river"
    again.q.setValue(Settings._index_key(tmp_path / "a") + "/overlap", "lots")
    again.q.setValue("view/results", "globe")
    again.q.setValue("search/results", "many")
    assert again.index_options(tmp_path / "a")["overlap"] == 0.0 and again.results_mode() == "grid"
    assert again.search_options() == (20, 12)


def test_progress_text_of_chip_planning():
    assert progress_text(Progress("plan", 3, 10, "s.tif", {"items": 40})) == "Cutting scenes into chips… 3 / 10 files"
