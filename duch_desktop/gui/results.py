"""The results grid: a list model of search hits, a delegate that paints thumbnails with
their Hamming distance, and an icon-mode list view.

Thumbnails are lazy: the delegate asks the model for one only when it paints an item
that has none yet, so only visible items are ever loaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from PySide6.QtCore import (QAbstractListModel, QModelIndex, QPersistentModelIndex, QPoint, QRect,
                            QSize, Qt, Signal)
from PySide6.QtGui import QAction, QColor, QFont, QPainter, QPalette, QPen
from PySide6.QtWidgets import QListView, QMenu, QStyle, QStyledItemDelegate, QStyleOptionViewItem

from ..core.files import display_path
from .workers import ThumbnailLoader

HitRole = Qt.ItemDataRole.UserRole + 1
DistanceRole = Qt.ItemDataRole.UserRole + 2
TileIdRole = Qt.ItemDataRole.UserRole + 3
PathRole = Qt.ItemDataRole.UserRole + 4

THUMB = 160


def hit_name(hit: Any) -> str:
    """File name of a hit; a chip of a scene adds its pixel offset ('scene.tif @ 256,512')."""
    rel = getattr(hit, "rel", None) or display_path(getattr(hit, "path", ""))
    name = Path(str(rel)).name
    window = getattr(hit, "window", None)
    return f"{name} @ {int(window[0])},{int(window[1])}" if window is not None else name


class ResultsModel(QAbstractListModel):
    """Ranked hits (``Hit(tile_id, rel, path, distance, footprint)``), best first."""

    def __init__(self, loader: ThumbnailLoader | None = None, parent=None):
        super().__init__(parent)
        self._hits: list[Any] = []
        self._rows_by_tile: dict[int, list[int]] = {}
        self.loader = loader
        if loader is not None:
            loader.loaded.connect(self._thumbnail_changed)
            loader.failed.connect(self._thumbnail_changed)

    # ------------------------------------------------------------------ content
    def set_hits(self, hits: Sequence[Any]) -> None:
        self.beginResetModel()
        self._hits = sorted(hits, key=lambda h: h.distance)  # stable: keeps the engine's tie order
        self._rows_by_tile = {}
        for row, hit in enumerate(self._hits):
            self._rows_by_tile.setdefault(int(hit.tile_id), []).append(row)
        self.endResetModel()

    def clear(self) -> None:
        self.set_hits([])

    def hits(self) -> list[Any]:
        return list(self._hits)

    def hit(self, row: int) -> Any | None:
        return self._hits[row] if 0 <= row < len(self._hits) else None

    # ------------------------------------------------------------------ Qt model API
    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._hits)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._hits):
            return None
        hit = self._hits[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return hit_name(hit)
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{hit_name(hit) if getattr(hit, 'window', None) else hit.rel}\nHamming distance {hit.distance}"
        if role == Qt.ItemDataRole.DecorationRole:
            return self.loader.cached(int(hit.tile_id)) if self.loader is not None else None
        if role == HitRole:
            return hit
        if role == DistanceRole:
            return int(hit.distance)
        if role == TileIdRole:
            return int(hit.tile_id)
        if role == PathRole:
            return display_path(hit.path)
        return None

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable

    # ------------------------------------------------------------------ thumbnails
    def request_thumbnail(self, index: QModelIndex | QPersistentModelIndex) -> None:
        """Called by the delegate when it paints an item without a thumbnail."""
        if self.loader is not None and index.isValid():
            self.loader.request(int(self._hits[index.row()].tile_id))

    def thumbnail_error(self, index: QModelIndex | QPersistentModelIndex) -> str | None:
        if self.loader is None or not index.isValid():
            return None
        return self.loader.error(int(self._hits[index.row()].tile_id))

    def _thumbnail_changed(self, tile_id: int, *_: Any) -> None:
        for row in self._rows_by_tile.get(int(tile_id), ()):
            idx = self.index(row)
            self.dataChanged.emit(idx, idx, [Qt.ItemDataRole.DecorationRole])


class ResultDelegate(QStyledItemDelegate):
    """Thumbnail, file name and a distance badge; requests missing thumbnails while painting."""

    def __init__(self, parent=None, thumb: int = THUMB):
        super().__init__(parent)
        self.thumb = thumb

    def sizeHint(self, option: QStyleOptionViewItem, index) -> QSize:
        return QSize(self.thumb + 12, self.thumb + 34)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index) -> None:
        painter.save()
        rect: QRect = option.rect
        pal: QPalette = option.palette
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        if selected:
            painter.fillRect(rect, pal.highlight())
        elif option.state & QStyle.StateFlag.State_MouseOver:
            painter.fillRect(rect, pal.midlight())

        box = QRect(rect.x() + (rect.width() - self.thumb) // 2, rect.y() + 6, self.thumb, self.thumb)
        pix = index.data(Qt.ItemDataRole.DecorationRole)
        model = index.model()
        if pix is not None and not pix.isNull():
            scaled = pix.size().scaled(box.size(), Qt.AspectRatioMode.KeepAspectRatio)
            target = QRect(0, 0, scaled.width(), scaled.height())
            target.moveCenter(box.center())
            painter.drawPixmap(target, pix)
        else:
            painter.fillRect(box, pal.alternateBase())
            painter.setPen(QPen(pal.mid().color()))
            painter.drawRect(box.adjusted(0, 0, -1, -1))
            error = model.thumbnail_error(index) if hasattr(model, "thumbnail_error") else None
            painter.setPen(pal.placeholderText().color())
            painter.drawText(box, Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                             "no preview" if error else "loading…")
            if error is None and hasattr(model, "request_thumbnail"):
                model.request_thumbnail(index)  # only items that get painted are ever loaded

        distance = index.data(DistanceRole)
        if distance is not None:
            badge_font = QFont(option.font)
            badge_font.setBold(True)
            painter.setFont(badge_font)
            text = f"d {distance}"
            w = painter.fontMetrics().horizontalAdvance(text) + 10
            h = painter.fontMetrics().height() + 2
            badge = QRect(box.right() - w - 3, box.top() + 3, w, h)
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor(0, 0, 0, 170))
            painter.drawRoundedRect(badge, 4, 4)
            painter.setPen(QColor("white"))
            painter.drawText(badge, Qt.AlignmentFlag.AlignCenter, text)

        painter.setFont(option.font)
        painter.setPen(pal.highlightedText().color() if selected else pal.text().color())
        text_rect = QRect(rect.x() + 4, box.bottom() + 4, rect.width() - 8, rect.bottom() - box.bottom() - 4)
        name = painter.fontMetrics().elidedText(str(index.data(Qt.ItemDataRole.DisplayRole) or ""),
                                                Qt.TextElideMode.ElideMiddle, text_rect.width())
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop, name)
        painter.restore()


class ResultsView(QListView):
    """Icon-mode grid. Emits ``open_requested(path)`` on double-click / Enter and offers a
    context menu (open, copy path, reveal in file manager, find similar)."""

    open_requested = Signal(str)
    copy_path_requested = Signal(str)
    reveal_requested = Signal(str)
    similar_requested = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setUniformItemSizes(True)
        self.setSpacing(6)
        self.setSelectionMode(QListView.SelectionMode.SingleSelection)
        self.setMouseTracking(True)
        self.setItemDelegate(ResultDelegate(self))
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.customContextMenuRequested.connect(self._context_menu)
        self.doubleClicked.connect(self._activated)
        self.setAccessibleName("Search results")

    def keyPressEvent(self, event) -> None:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.currentIndex().isValid():
            self._activated(self.currentIndex())
            return
        super().keyPressEvent(event)

    def _activated(self, index: QModelIndex) -> None:
        if index.isValid():
            self.open_requested.emit(str(index.data(PathRole)))

    def context_menu_for(self, index: QModelIndex) -> QMenu:
        """The context menu of one result (separate so tests can inspect it)."""
        menu = QMenu(self)
        path, tile_id = str(index.data(PathRole)), int(index.data(TileIdRole))
        for text, slot in (("Open with System Viewer", lambda: self.open_requested.emit(path)),
                           ("Copy Path", lambda: self.copy_path_requested.emit(path)),
                           ("Reveal in File Manager", lambda: self.reveal_requested.emit(path)),
                           ("Find Similar Images", lambda: self.similar_requested.emit(tile_id))):
            action = QAction(text, menu)
            action.triggered.connect(slot)
            menu.addAction(action)
        return menu

    def _context_menu(self, pos: QPoint) -> None:
        index = self.indexAt(pos)
        if index.isValid():
            self.context_menu_for(index).exec(self.viewport().mapToGlobal(pos))
