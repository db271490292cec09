"""The results map on its own: projection, graticule, footprints and thumbnails, clicks, selection."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QColor, QImage, QWheelEvent

from duch_desktop.gui.map_view import (DEGREE, SELECTED, MapPanel, graticule_step, graticule_values, lat_text,
                                       lon_text, lonlat_ring, note_text)
from duch_desktop.gui.workers import ThumbnailLoader


from tests.gui.test_widgets import FakeHit  # noqa: E402


def box(w: float, s: float, e: float, n: float) -> list:
    return [[w, s], [e, s], [e, n], [w, n], [w, s]]


# two georeferenced results ~4 km apart, one plain image between them
WEST = box(15.00, 52.30, 15.01, 52.31)
EAST = box(15.05, 52.35, 15.06, 52.36)
HITS = [FakeHit(1, "a.tif", Path("/d/a.tif"), 1, WEST), FakeHit(2, "b.png", Path("/d/b.png"), 2),
        FakeHit(3, "c.tif", Path("/d/c.tif"), 3, EAST)]


@pytest.fixture
def panel(qtbot):
    p = MapPanel()
    qtbot.addWidget(p)
    p.resize(600, 400)
    p.show()
    qtbot.waitExposed(p)
    return p


def centre_on_screen(view, row) -> QPoint:
    return view.mapFromScene(view.items_by_row()[row].sceneBoundingRect().center())


def test_graticule_spacing_and_labels():
    assert graticule_step(0.2) == 0.05 and graticule_step(0.0004) == 0.0001 and graticule_step(300) == 90
    assert graticule_step(7) == 2 and graticule_step(0.06) == 0.01
    assert graticule_values(14.99, 15.21, 0.05) == [15.0, 15.05, 15.1, 15.15, 15.2]
    assert graticule_values(-0.25, 0.25, 0.1) == [-0.2, -0.1, 0.0, 0.1, 0.2]
    assert lon_text(15.05, 0.05) == "15.05°E" and lon_text(-73.5, 0.5) == "73.5°W" and lon_text(0.0, 1) == "0°"
    assert lon_text(190.0, 5) == "170°W"  # a line east of the antimeridian
    assert lat_text(52.3, 0.1) == "52.3°N" and lat_text(-33.0, 15) == "33°S"


def test_note_counts_results_without_footprint():
    assert note_text(20, 8) == "12 of 20 results have no geographic footprint"
    assert note_text(20, 19) == "1 of 20 results has no geographic footprint"
    assert note_text(5, 5) == "5 results on the map"
    assert note_text(3, 0).startswith("None of the 3 results has a geographic footprint")
    assert note_text(0, 0).startswith("No results")


def test_ring_across_the_antimeridian_stays_small():
    ring = lonlat_ring(box(179.9, -17.0, -179.9, -16.9))  # west edge at 179.9, east edge past 180
    lons = [p[0] for p in ring]
    assert max(lons) - min(lons) == pytest.approx(0.2)
    assert lonlat_ring(None) is None and lonlat_ring([[float("nan"), 1.0], [2.0, 3.0]]) is None


def test_footprints_at_their_lon_lat(panel):
    view = panel.view
    panel.set_hits(HITS)
    assert panel.note.text() == "1 of 3 results has no geographic footprint"
    items = view.items_by_row()
    assert sorted(items) == [0, 2]  # the plain PNG (row 1) is not on the map
    lat0 = (52.305 + 52.355) / 2  # mean latitude of the footprints' centres
    kx = DEGREE * math.cos(math.radians(lat0))
    for row, ring in ((0, WEST), (2, EAST)):
        poly = items[row].polygon()
        assert poly.count() == len(ring)
        for i, (lon, lat) in enumerate(ring):
            assert poly.at(i).x() == pytest.approx(lon * kx) and poly.at(i).y() == pytest.approx(-lat * DEGREE)
            assert view.projection.to_lonlat(poly.at(i)) == pytest.approx((lon, lat))
    # equal in degrees, so narrower than high by cos(latitude): shapes look as on the ground
    r = items[0].sceneBoundingRect()
    assert r.width() / r.height() == pytest.approx(math.cos(math.radians(lat0)), rel=1e-3)
    # fitted: both on screen, east to the right of west and north above it
    area = view.viewport().rect()
    west, east = centre_on_screen(view, 0), centre_on_screen(view, 2)
    assert area.contains(west) and area.contains(east)
    assert east.x() > west.x() + 100 and east.y() < west.y() - 100
    # the graticule of the visible area brackets the results, with a spacing from its extent
    step, lons, lats = view.graticule()
    assert step == 0.05 and 15.0 in lons and 15.05 in lons and 52.35 in lats
    # results without any footprint: an empty map that says why
    panel.set_hits([HITS[1]])
    assert view.items_by_row() == {} and "not georeferenced" in panel.note.text()
    assert not panel.fit_button.isEnabled()


def test_thumbnails_fill_their_footprints(qtbot):
    colours = {1: QColor(220, 30, 30), 3: QColor(30, 200, 30)}

    def source(tile_id):
        img = QImage(32, 32, QImage.Format.Format_RGB32)
        img.fill(colours[tile_id])
        return img

    loader = ThumbnailLoader()
    loader.set_source(source)
    panel = MapPanel(loader)
    qtbot.addWidget(panel)
    panel.set_hits(HITS)  # hidden: nothing is requested until the map is shown
    assert loader.requests == 0
    panel.resize(600, 400)
    panel.show()
    qtbot.waitExposed(panel)
    qtbot.waitUntil(lambda: all(i.has_thumbnail() for i in panel.view.items_by_row().values()), timeout=5000)
    assert loader.requests == 2
    shot = panel.view.viewport().grab().toImage()
    for row, tile_id in ((0, 1), (2, 3)):
        p = centre_on_screen(panel.view, row)
        assert shot.pixelColor(p) == colours[tile_id]
    loader.shutdown()


def test_click_selects_and_selection_is_shown(panel, qtbot):
    view = panel.view
    panel.set_hits(HITS)
    with qtbot.waitSignal(view.row_clicked) as sig:
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=centre_on_screen(view, 2))
    assert sig.args == [2]
    clicked = []
    view.row_clicked.connect(clicked.append)
    empty = QPoint(centre_on_screen(view, 0).x(), centre_on_screen(view, 2).y())  # north of west, west of east
    assert view.row_at(empty) is None
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=empty)
    assert clicked == []

    view.select_row(2)
    items = view.items_by_row()
    assert items[2].pen().color() == SELECTED and items[2].zValue() > items[0].zValue()
    view.select_row(0)
    assert items[2].pen().color() != SELECTED and items[0].pen().color() == SELECTED
    # zoomed in on the west footprint, selecting the east one brings it into view
    view.centerOn(items[0])
    view.zoom(8)
    assert not view.visible_rect().contains(items[2].sceneBoundingRect())
    view.select_row(2)
    centre = items[2].sceneBoundingRect().center()
    assert (view.visible_rect().center() - centre).manhattanLength() < 2 / view.transform().m11()
    view.select_row(1)  # a result without footprint: nothing highlighted
    assert all(i.pen().color() != SELECTED for i in items.values()) and view.selected_row == 1


def test_drag_pans_without_selecting_and_wheel_zooms(panel, qtbot):
    view = panel.view
    panel.set_hits(HITS)
    clicked = []
    view.row_clicked.connect(clicked.append)
    start = centre_on_screen(view, 2)
    before = view.visible_rect().center()
    qtbot.mousePress(view.viewport(), Qt.MouseButton.LeftButton, pos=start)
    qtbot.mouseMove(view.viewport(), start + QPoint(60, 40))
    qtbot.mouseRelease(view.viewport(), Qt.MouseButton.LeftButton, pos=start + QPoint(60, 40))
    assert clicked == []
    moved = view.visible_rect().center() - before
    assert moved.x() < 0 and moved.y() < 0  # content dragged right/down: the view looks left/up

    scale = view.transform().m11()
    where = QPointF(view.viewport().rect().center())
    wheel = QWheelEvent(where, QPointF(view.mapToGlobal(where.toPoint())), QPoint(0, 0), QPoint(0, 240),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    view.wheelEvent(wheel)
    assert view.transform().m11() == pytest.approx(scale * 1.0015 ** 240)
    view.zoom(1e9)
    assert view.transform().m11() == pytest.approx(view.MAX_SCALE)
    panel.fit_button.click()
    assert view.transform().m11() == pytest.approx(scale)
