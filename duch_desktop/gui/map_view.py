"""The map of the current results: each footprint drawn in longitude/latitude with the
result's thumbnail in it, over a plain graticule (no basemap: the app works offline).

The projection is equirectangular with x shrunk by the cosine of the results' mean latitude,
so a square tile at 52° N looks square. Scene units are about metres (``DEGREE`` per degree of
latitude), which keeps zoom limits and pen widths in a sane range at any extent.

Results without a footprint (plain JPEG/PNG) are not on the map; the note above the map
counts them. Selection is by result row (the row of :class:`results.ResultsModel`): the main
window calls :meth:`MapView.select_row` when the grid's current result changes, and the map
emits ``row_clicked(row)`` when a footprint is clicked.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from PySide6.QtCore import QLineF, QPoint, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFontMetrics, QPainter, QPen, QPixmap, QPolygonF, QTransform
from PySide6.QtWidgets import (QApplication, QGraphicsPixmapItem, QGraphicsPolygonItem, QGraphicsScene,
                               QGraphicsView, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget)

from .export import footprint_ring
from .results import hit_name

DEGREE = 111_320.0  # scene units per degree of latitude (about metres)
MIN_COS = 0.05  # beyond ~87° the x scale stops shrinking (the poles would collapse to a line)
# "Nice" graticule spacings in degrees, ascending.
STEPS = [m * 10.0 ** e for e in range(-6, 1) for m in (1, 2, 5)] + [10.0, 15.0, 30.0, 45.0, 90.0]
MAX_LINES = 6  # at most this many intervals of the graticule across the visible extent

OUTLINE = QColor(30, 100, 220)
SELECTED = QColor(255, 140, 0)
GRID = QColor(150, 150, 150, 150)


# --------------------------------------------------------------------------- geometry

class Projection:
    """Equirectangular lon/lat <-> scene, x scaled by cos(``lat0``)."""

    def __init__(self, lat0: float = 0.0):
        self.lat0 = float(lat0)
        self.kx = DEGREE * max(MIN_COS, math.cos(math.radians(self.lat0)))

    def to_scene(self, lon: float, lat: float) -> QPointF:
        return QPointF(lon * self.kx, -lat * DEGREE)

    def to_lonlat(self, point: QPointF) -> tuple[float, float]:
        return point.x() / self.kx, -point.y() / DEGREE


def lonlat_ring(footprint: Any) -> list[tuple[float, float]] | None:
    """The footprint's outer ring as finite (lon, lat) pairs, or None.

    A ring spanning more than half the globe in longitude crosses the antimeridian: its
    western longitudes are moved past 180° so it is drawn as one small shape, not a band.
    """
    ring = footprint_ring(footprint)
    if not ring or not all(math.isfinite(v) for p in ring for v in p):
        return None
    lons = [p[0] for p in ring]
    if max(lons) - min(lons) > 180:
        ring = [(lon + 360 if lon < 0 else lon, lat) for lon, lat in ring]
    return ring


def graticule_step(span: float, lines: int = MAX_LINES) -> float:
    """The smallest nice spacing (degrees) giving at most ``lines`` intervals over ``span`` degrees."""
    for step in STEPS:
        if span / step <= lines:
            return step
    return STEPS[-1]


def graticule_values(lo: float, hi: float, step: float) -> list[float]:
    """Multiples of ``step`` within ``[lo, hi]`` (rounded, so 0.1 * 3 prints as 0.3)."""
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    digits = decimals(step) + 2
    return [round(k * step, digits) for k in range(first, last + 1)]


def decimals(step: float) -> int:
    """Decimal places that show every multiple of ``step`` exactly (0.05 -> 2, 15 -> 0)."""
    return max(0, math.ceil(-math.log10(step) - 1e-9)) if step < 1 else 0


def lon_text(lon: float, step: float) -> str:
    lon = (lon + 180) % 360 - 180 if abs(lon) > 180 else lon  # an antimeridian-shifted line
    d = decimals(step)
    return f"{abs(lon):.{d}f}°" + ("" if round(lon, d) == 0 or abs(round(lon, d)) == 180 else
                                    "E" if lon > 0 else "W")


def lat_text(lat: float, step: float) -> str:
    d = decimals(step)
    return f"{abs(lat):.{d}f}°" + ("" if round(lat, d) == 0 else "N" if lat > 0 else "S")


# --------------------------------------------------------------------------- items

class FootprintItem(QGraphicsPolygonItem):
    """One result's footprint; its thumbnail (a child) fills the footprint's bounding box."""

    def __init__(self, row: int, hit: Any, polygon: QPolygonF):
        super().__init__(polygon)
        self.row, self.hit = row, hit
        self.thumb = QGraphicsPixmapItem(self)
        self.thumb.setFlag(QGraphicsPixmapItem.GraphicsItemFlag.ItemStacksBehindParent)
        self.thumb.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self.thumb.setVisible(False)
        self.setToolTip(f"{hit_name(hit)}\nHamming distance {int(hit.distance)}")
        self.set_selected(False)

    def set_thumbnail(self, pix: QPixmap | None) -> None:
        if pix is None or pix.isNull():
            return
        box = self.polygon().boundingRect()
        self.thumb.setPixmap(pix)
        self.thumb.setPos(box.topLeft())
        self.thumb.setTransform(QTransform.fromScale(box.width() / pix.width(), box.height() / pix.height()))
        self.thumb.setVisible(True)
        self.setBrush(Qt.BrushStyle.NoBrush)

    def has_thumbnail(self) -> bool:
        return self.thumb.isVisible()

    def set_selected(self, selected: bool) -> None:
        pen = QPen(SELECTED if selected else OUTLINE, 3.0 if selected else 1.5)
        pen.setCosmetic(True)  # the same width on screen at every zoom
        self.setPen(pen)
        if not self.has_thumbnail():
            fill = QColor(SELECTED if selected else OUTLINE)
            fill.setAlpha(60)
            self.setBrush(QBrush(fill))
        # the best match on top where footprints overlap (overlapping chips); the selected one above all
        self.setZValue(1.0 if selected else -float(self.row))


# --------------------------------------------------------------------------- view

class MapView(QGraphicsView):
    """Footprints over a graticule; drag to pan, wheel to zoom, click a footprint to select it."""

    row_clicked = Signal(int)

    MIN_SCALE = 1e-5  # view pixels per scene unit: about the whole globe in a window
    MAX_SCALE = 20.0  # about 20 px per metre

    def __init__(self, loader=None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.loader = loader
        self.projection = Projection()
        self.selected_row: int | None = None
        self._items: dict[int, FootprintItem] = {}
        self._rows_by_tile: dict[int, list[int]] = {}
        self._fit_pending = False
        self._press: QPoint | None = None
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # panned by dragging
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        # Labels are painted in viewport coordinates: a scrolled (blitted) viewport would smear them.
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.FullViewportUpdate)
        self.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.SmoothPixmapTransform)
        self.setAccessibleName("Map of the results")
        if loader is not None:
            loader.loaded.connect(self._thumbnail_loaded)

    # ------------------------------------------------------------------ content
    def set_hits(self, hits: Sequence[Any]) -> int:
        """Show ``hits`` (in result-row order); returns how many have a footprint."""
        self.scene().clear()
        self._items, self._rows_by_tile, self.selected_row = {}, {}, None
        rings = [(row, hit, lonlat_ring(getattr(hit, "footprint", None))) for row, hit in enumerate(hits)]
        rings = [(row, hit, ring) for row, hit, ring in rings if ring]
        if rings:
            centres = [(min(p[1] for p in ring) + max(p[1] for p in ring)) / 2 for _, _, ring in rings]
            self.projection = Projection(sum(centres) / len(centres))
        else:
            self.projection = Projection()
        for row, hit, ring in rings:
            item = FootprintItem(row, hit, QPolygonF([self.projection.to_scene(lon, lat) for lon, lat in ring]))
            self.scene().addItem(item)
            self._items[row] = item
            self._rows_by_tile.setdefault(int(hit.tile_id), []).append(row)
        bounds = self.results_rect()
        if not bounds.isNull():
            # room to pan around the results (the scene rect bounds what the scroll bars reach)
            pad = max(bounds.width(), bounds.height(), 1000.0) * 3
            self.scene().setSceneRect(bounds.adjusted(-pad, -pad, pad, pad))
        else:
            self.scene().setSceneRect(QRectF(-1000, -1000, 2000, 2000))
        self._fit_pending = True
        if self.isVisible():
            self.fit_to_results()
            self.request_thumbnails()
        return len(rings)

    def items_by_row(self) -> dict[int, FootprintItem]:
        return dict(self._items)

    def results_rect(self) -> QRectF:
        rect = QRectF()
        for item in self._items.values():
            rect = rect.united(item.sceneBoundingRect())
        return rect

    def request_thumbnails(self) -> None:
        """Ask the shared loader for the thumbnails of every footprint on the map."""
        if self.loader is None:
            return
        for item in self._items.values():
            if not item.has_thumbnail():
                tile_id = int(item.hit.tile_id)
                pix = self.loader.cached(tile_id)
                if pix is not None:
                    item.set_thumbnail(pix)
                else:
                    self.loader.request(tile_id)

    def _thumbnail_loaded(self, tile_id: int) -> None:
        rows = self._rows_by_tile.get(int(tile_id))
        if rows and self.loader is not None:
            pix = self.loader.cached(int(tile_id))
            for row in rows:
                self._items[row].set_thumbnail(pix)

    # ------------------------------------------------------------------ selection
    def select_row(self, row: int | None) -> None:
        """Highlight the footprint of result ``row`` (none: clear) and bring it into view."""
        if self.selected_row in self._items:
            self._items[self.selected_row].set_selected(False)
        self.selected_row = row if row is not None and row >= 0 else None
        item = self._items.get(self.selected_row) if self.selected_row is not None else None
        if item is not None:
            item.set_selected(True)
            if self.isVisible() and not self._fit_pending:
                self.ensure_selected_visible()

    def ensure_selected_visible(self) -> None:
        item = self._items.get(self.selected_row) if self.selected_row is not None else None
        if item is not None and not self.visible_rect().contains(item.sceneBoundingRect()):
            self.centerOn(item)

    def visible_rect(self) -> QRectF:
        return self.mapToScene(self.viewport().rect()).boundingRect()

    def row_at(self, pos: QPoint) -> int | None:
        """The result row whose footprint is on top at viewport position ``pos``."""
        for item in self.items(pos):
            owner = item if isinstance(item, FootprintItem) else item.parentItem()
            if isinstance(owner, FootprintItem):
                return owner.row
        return None

    # ------------------------------------------------------------------ navigation
    def fit_to_results(self) -> None:
        if not self.isVisible():  # the viewport has no real size yet: fit when shown
            self._fit_pending = True
            return
        rect = self.results_rect()
        self._fit_pending = False
        if rect.isNull():
            return
        margin = max(rect.width(), rect.height()) * 0.05 + 1.0
        self.resetTransform()
        self.fitInView(rect.adjusted(-margin, -margin, margin, margin), Qt.AspectRatioMode.KeepAspectRatio)
        self._clamp_scale()

    def zoom(self, factor: float) -> None:
        self.scale(factor, factor)
        self._clamp_scale()

    def _clamp_scale(self) -> None:
        s = self.transform().m11()
        if s > self.MAX_SCALE or s < self.MIN_SCALE:
            target = min(max(s, self.MIN_SCALE), self.MAX_SCALE)
            self.scale(target / s, target / s)

    def wheelEvent(self, event) -> None:
        steps = event.angleDelta().y() or event.angleDelta().x()
        if steps:
            self.zoom(1.0015 ** steps)
        event.accept()

    def mousePressEvent(self, event) -> None:
        self._press = event.position().toPoint() if event.button() == Qt.MouseButton.LeftButton else None
        super().mousePressEvent(event)

    def mouseReleaseEvent(self, event) -> None:
        super().mouseReleaseEvent(event)
        pos, self._press = event.position().toPoint(), self._press
        if (event.button() == Qt.MouseButton.LeftButton and self._press is not None
                and (pos - self._press).manhattanLength() < QApplication.startDragDistance()):
            row = self.row_at(pos)
            if row is not None:
                self.row_clicked.emit(row)
        self._press = None

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self._settle()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self._fit_pending and self.isVisible():
            self._settle()

    def _settle(self) -> None:
        """On becoming visible: fit if the results changed meanwhile, load thumbnails, show the selection."""
        if self._fit_pending:
            self.fit_to_results()
        self.request_thumbnails()
        self.ensure_selected_visible()

    # ------------------------------------------------------------------ graticule
    def graticule(self) -> tuple[float, list[float], list[float]]:
        """``(step, lons, lats)``: the grid lines of the visible area, spacing chosen from its extent."""
        rect = self.visible_rect()
        west, north = self.projection.to_lonlat(rect.topLeft())
        east, south = self.projection.to_lonlat(rect.bottomRight())
        south, north = max(south, -90.0), min(north, 90.0)
        step = graticule_step(max(east - west, north - south, 1e-9))
        return step, graticule_values(west, east, step), graticule_values(south, north, step)

    def drawBackground(self, painter: QPainter, rect: QRectF) -> None:
        super().drawBackground(painter, rect)
        if not self._items:
            return
        _, lons, lats = self.graticule()
        pen = QPen(GRID, 1.0)
        pen.setCosmetic(True)
        painter.setPen(pen)
        for lon in lons:
            x = self.projection.to_scene(lon, 0).x()
            painter.drawLine(QLineF(x, rect.top(), x, rect.bottom()))
        for lat in lats:
            y = self.projection.to_scene(0, lat).y()
            painter.drawLine(QLineF(rect.left(), y, rect.right(), y))

    def drawForeground(self, painter: QPainter, rect: QRectF) -> None:
        super().drawForeground(painter, rect)
        if not self._items:
            return
        step, lons, lats = self.graticule()
        painter.save()
        painter.resetTransform()  # labels in viewport pixels: readable at any zoom
        metrics = QFontMetrics(painter.font())
        back = self.palette().base().color()
        back.setAlpha(200)
        for lon in lons:
            x = self.mapFromScene(self.projection.to_scene(lon, 0)).x()
            self._label(painter, metrics, lon_text(lon, step), x + 3, 2, back)
        for lat in lats:
            y = self.mapFromScene(self.projection.to_scene(0, lat)).y() - metrics.height() - 1
            if y > metrics.height() + 4:  # not over the longitude labels along the top
                self._label(painter, metrics, lat_text(lat, step), 2, y, back)
        painter.restore()

    def _label(self, painter: QPainter, metrics: QFontMetrics, text: str, x: int, y: int, back: QColor) -> None:
        box = QRectF(x, y, metrics.horizontalAdvance(text) + 6, metrics.height())
        painter.fillRect(box, back)
        painter.setPen(self.palette().text().color())
        painter.drawText(box, Qt.AlignmentFlag.AlignCenter, text)


class MapPanel(QWidget):
    """The map page of the results: a note (how many results are not on the map), "Fit to
    Results" and the :class:`MapView`."""

    def __init__(self, loader=None, parent: QWidget | None = None):
        super().__init__(parent)
        self.view = MapView(loader)
        self.note = QLabel()
        self.note.setTextFormat(Qt.TextFormat.PlainText)
        self.note.setWordWrap(True)
        self.fit_button = QPushButton("Fit to Results")
        self.fit_button.setToolTip("Zoom the map to show every result")
        self.fit_button.clicked.connect(self.view.fit_to_results)
        top = QHBoxLayout()
        top.setContentsMargins(6, 2, 6, 2)
        top.addWidget(self.note, 1)
        top.addWidget(self.fit_button)
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(0)
        box.addLayout(top)
        box.addWidget(self.view, 1)
        self.set_hits([])

    def set_hits(self, hits: Sequence[Any]) -> None:
        on_map = self.view.set_hits(hits)
        self.note.setText(note_text(len(hits), on_map))
        self.fit_button.setEnabled(on_map > 0)


def note_text(total: int, on_map: int) -> str:
    """What the note above the map says about ``total`` results of which ``on_map`` have a footprint."""
    if total == 0:
        return "No results to show: search first."
    missing = total - on_map
    if missing == 0:
        return f"{total} result{'s' if total != 1 else ''} on the map"
    if on_map == 0:
        return (f"None of the {total} results has a geographic footprint (they are not georeferenced), "
                "so the map is empty.") if total > 1 else \
            "This result has no geographic footprint (it is not georeferenced), so the map is empty."
    return f"{missing} of {total} results {'has' if missing == 1 else 'have'} no geographic footprint"
