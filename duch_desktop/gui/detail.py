"""Detail pane of one tile: larger preview, file metadata, nearest captions, find-similar;
for a chip of a larger scene, also the scene with the chip's rectangle on it."""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (QFormLayout, QGroupBox, QLabel, QPushButton, QScrollArea, QSizePolicy,
                               QVBoxLayout, QWidget)

from ..core.files import display_path
from .desktop import PICK_A_RESULT
from .export import footprint_text

PREVIEW = 256
SCENE_PREVIEW = 512  # long side of the scene preview asked of the archive (shown at PREVIEW)
CHIP_OUTLINE = QColor(255, 40, 40)
MIN_MARK = 6.0  # px: a chip smaller than this in the scene preview is still drawn this big
ZWSP = "\u200b"
BREAKABLE = ("Path", "Footprint", "CRS")  # long unbroken values: may wrap after separators


def breakable(text: str) -> str:
    """``text`` with invisible break opportunities after path separators and punctuation, so a
    long path wraps to the pane's width instead of widening it (metadata() strips them again)."""
    return re.sub(r"([/\\_.,:\-])", "\\1" + ZWSP, text)


@dataclass
class TileDetails:
    """Everything the pane shows, gathered off the UI thread by the main window."""

    tile_id: int
    record: Any                 # TileRecord(rel, path, size, meta, status, error)
    captions: Sequence[Any]     # CaptionHit(text, distance, source)
    preview: QImage | None = None
    distance: int | None = None
    caption_error: str | None = None


def human_size(n: int | None) -> str:
    if n is None:
        return "unknown"
    size = float(n)
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{int(size)} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"


def metadata_rows(record: Any) -> list[tuple[str, str]]:
    """(label, value) pairs describing a tile record; missing facts are said plainly."""
    meta = getattr(record, "meta", None)
    rows = [("Path", display_path(getattr(record, "path", ""))), ("Size", human_size(getattr(record, "size", None)))]
    window = getattr(record, "window", None)
    if window is not None:  # (col, row, width, height), as in the CSV/GeoJSON export
        c, r, w, h = (int(v) for v in window)
        rows.append(("Window", f"col {c}, row {r}, {w} × {h} pixels"))
    if meta is None:
        rows.append(("Raster", "not read"))
    else:
        rows += [
            ("Scene pixels" if window is not None else "Pixels", f"{meta.width} × {meta.height}"),
            ("Bands", str(meta.bands)),
            ("Data type", str(meta.dtype)),
            ("CRS", meta.crs or "none (not georeferenced)"),
            ("Footprint", footprint_text(getattr(record, "footprint", None) or meta.footprint)),
        ]
        if getattr(meta, "pixel_size", None):
            px = meta.pixel_size
            rows.append(("Pixel size", f"{px[0]:g} × {px[1]:g}"))
        if getattr(meta, "nodata", None) is not None:
            rows.append(("No-data", f"{meta.nodata:g}"))
    status = getattr(record, "status", None)
    if status and status != "ok":
        error = getattr(record, "error", None)
        rows.append(("Status", f"{status}: {error}" if error else str(status)))
    return rows


class DetailPane(QWidget):
    """Shows one tile. Emits ``find_similar(tile_id)`` and ``open_requested(path)``."""

    find_similar = Signal(int)
    open_requested = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.tile_id: int | None = None
        self.path: str | None = None

        self.title = QLabel()
        self.title.setWordWrap(True)
        font = self.title.font()
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.15)
        self.title.setFont(font)

        self.preview = QLabel()
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setMinimumSize(PREVIEW // 2, PREVIEW // 2)
        self.preview.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)

        self.similar_button = QPushButton("Find similar images")
        self.similar_button.setToolTip("Search the archive for tiles that look like this one")
        self.similar_button.clicked.connect(self._similar_clicked)
        self.open_button = QPushButton("Open file")
        self.open_button.setToolTip("Open the file with the system viewer")
        self.open_button.clicked.connect(lambda: self.path and self.open_requested.emit(self.path))

        self.scene_box = scene_box = QGroupBox("Where this chip lies in its scene")
        self.scene = QLabel()
        self.scene.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.scene.setAccessibleName("The chip's scene")
        QVBoxLayout(scene_box).addWidget(self.scene)
        self.scene_rect: QRectF | None = None  # the chip's rectangle in pixels of the shown scene pixmap
        self.window: tuple | None = None

        self.meta_box = meta_box = QGroupBox("File")
        self.meta_form = QFormLayout(meta_box)
        self.meta_form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)

        # Captions are plain wrapped lines in the pane's own scroll area, not a list box scrolling inside it.
        self.caption_box = caption_box = QGroupBox("Most similar captions")
        caption_layout = QVBoxLayout(caption_box)
        self.captions = QLabel()
        self.captions.setWordWrap(True)
        self.captions.setTextFormat(Qt.TextFormat.RichText)
        self.captions.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.captions.setAccessibleName("Most similar captions")
        self._captions: list[tuple[str, int]] = []
        self.caption_note = QLabel()
        self.caption_note.setWordWrap(True)
        caption_layout.addWidget(self.captions)
        caption_layout.addWidget(self.caption_note)

        content = QWidget()
        layout = QVBoxLayout(content)
        layout.addWidget(self.title)
        layout.addWidget(self.preview)
        layout.addWidget(self.similar_button)
        layout.addWidget(self.open_button)
        layout.addWidget(scene_box)
        layout.addWidget(meta_box)
        layout.addWidget(caption_box, 1)
        layout.addStretch(0)  # keeps the title at the top while the boxes are hidden

        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        # Text wraps to the pane's width (widen the pane with the splitter): no sideways scrolling.
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self.setMinimumWidth(260)
        self.show_message(PICK_A_RESULT)

    # ------------------------------------------------------------------ states
    def show_message(self, text: str) -> None:
        self.tile_id, self.path, self.window = None, None, None
        self._clear_scene()
        self.title.setText(text)
        self.preview.clear()
        self.preview.setVisible(False)
        self._set_rows([])
        self.set_captions([])
        self.caption_note.setText("")
        self.similar_button.setEnabled(False)
        self.open_button.setEnabled(False)
        for w in (self.meta_box, self.caption_box, self.similar_button, self.open_button):
            w.setVisible(False)

    def show_loading(self, tile_id: int, name: str) -> None:
        self.tile_id, self.window = tile_id, None
        self._clear_scene()
        self.title.setText(f"{name}\nloading…")
        self.similar_button.setEnabled(True)

    def show_details(self, details: TileDetails) -> None:
        record = details.record
        self.tile_id = details.tile_id
        self.path = display_path(getattr(record, "path", "")) or None
        name = Path(str(getattr(record, "rel", "") or self.path or "")).name
        window = getattr(record, "window", None)
        self.window = tuple(int(v) for v in window) if window is not None else None
        self._clear_scene()
        if window is not None:
            name += f" @ {int(window[0])},{int(window[1])}"
            self.scene.setWordWrap(True)
            self.scene.setText("Loading the scene…")  # the main window loads it off the UI thread
            self.scene_box.setVisible(True)
        suffix = f"  (distance {details.distance})" if details.distance is not None else ""
        self.title.setText(name + suffix)
        if details.preview is not None and not details.preview.isNull():
            pix = QPixmap.fromImage(details.preview)
            if pix.width() > PREVIEW or pix.height() > PREVIEW:
                pix = pix.scaled(PREVIEW, PREVIEW, Qt.AspectRatioMode.KeepAspectRatio,
                                 Qt.TransformationMode.SmoothTransformation)
            self.preview.setPixmap(pix)
            self.preview.setVisible(True)
        else:
            self.preview.clear()
            self.preview.setText("No preview available.")
            self.preview.setVisible(True)
        self._set_rows(metadata_rows(record))
        self.set_captions(details.captions, details.caption_error)
        for w in (self.meta_box, self.caption_box, self.similar_button, self.open_button):
            w.setVisible(True)
        self.similar_button.setEnabled(True)
        self.open_button.setEnabled(self.path is not None)

    def show_scene(self, image: QImage | None, rect: Sequence[float]) -> None:
        """The chip's scene (``image``) with the chip's ``rect`` ``(x0, y0, x1, y1)``, given in
        pixels of ``image``, outlined; drawn at most PREVIEW pixels wide or high."""
        if image is None or image.isNull():
            self.show_scene_error("no preview of the scene is available")
            return
        pix = QPixmap.fromImage(image)
        if pix.width() > PREVIEW or pix.height() > PREVIEW:
            pix = pix.scaled(PREVIEW, PREVIEW, Qt.AspectRatioMode.KeepAspectRatio,
                             Qt.TransformationMode.SmoothTransformation)
        sx, sy = pix.width() / image.width(), pix.height() / image.height()
        x0, y0, x1, y1 = (float(v) for v in rect)
        box = QRectF(x0 * sx, y0 * sy, (x1 - x0) * sx, (y1 - y0) * sy)
        if box.width() < MIN_MARK or box.height() < MIN_MARK:  # a tiny chip of a huge scene stays findable
            centre = box.center()
            box.setSize(box.size().expandedTo(QRectF(0, 0, MIN_MARK, MIN_MARK).size()))
            box.moveCenter(centre)
        painter = QPainter(pix)
        pen = QPen(CHIP_OUTLINE, 2.0)
        pen.setJoinStyle(Qt.PenJoinStyle.MiterJoin)
        painter.setPen(pen)
        # the 2 px line lies just inside the chip's edges, so a chip at the scene's border is fully drawn
        painter.drawRect(box.adjusted(1, 1, -1, -1))
        painter.end()
        self.scene_rect = box
        self.scene.setWordWrap(False)  # a word-wrapped label lays out a pixmap with no height
        self.scene.setPixmap(pix)
        self.scene_box.setVisible(True)

    def show_scene_error(self, message: str) -> None:
        self.scene_rect = None
        self.scene.clear()
        self.scene.setWordWrap(True)
        self.scene.setText(f"The scene cannot be shown: {message}")
        self.scene_box.setVisible(True)

    def _clear_scene(self) -> None:
        self.scene_rect = None
        self.scene.clear()
        self.scene_box.setVisible(False)

    def set_captions(self, captions: Sequence[Any], error: str | None = None) -> None:
        self._captions = [(str(c.text), int(c.distance)) for c in captions]
        rows = "".join(f"<tr><td align='right' style='padding-right: 8px'><b>{d}</b></td><td>{html.escape(t)}</td></tr>"
                       for t, d in self._captions)
        self.captions.setText(f"<table>{rows}</table>" if rows else "")
        self.captions.setVisible(bool(rows))
        if error:
            self.caption_note.setText(error)
        elif not captions:
            self.caption_note.setText("No captions in this index: index the folder with a captions file "
                                      "to see which descriptions match this tile.")
        else:
            self.caption_note.setText("Number = Hamming distance between the tile's code and the caption's.")

    def caption_texts(self) -> list[tuple[str, int]]:
        return list(self._captions)

    def metadata(self) -> dict[str, str]:
        out = {}
        for r in range(self.meta_form.rowCount()):
            label = self.meta_form.itemAt(r, QFormLayout.ItemRole.LabelRole)
            field = self.meta_form.itemAt(r, QFormLayout.ItemRole.FieldRole)
            if label and field:
                out[label.widget().text()] = field.widget().text().replace(ZWSP, "")
        return out

    # ------------------------------------------------------------------ helpers
    def _set_rows(self, rows: list[tuple[str, str]]) -> None:
        while self.meta_form.rowCount():
            self.meta_form.removeRow(0)
        for label, value in rows:
            field = QLabel(breakable(value) if label in BREAKABLE else value)
            field.setToolTip(value if label in BREAKABLE else "")
            field.setWordWrap(True)
            field.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.meta_form.addRow(label, field)

    def _similar_clicked(self) -> None:
        if self.tile_id is not None:
            self.find_similar.emit(self.tile_id)
