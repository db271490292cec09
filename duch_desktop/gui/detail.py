"""Detail pane of one tile: larger preview, file metadata, nearest captions, find-similar."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (QFormLayout, QGroupBox, QLabel, QListWidget, QListWidgetItem, QPushButton,
                               QScrollArea, QSizePolicy, QVBoxLayout, QWidget)

from .export import footprint_text, show_path

PREVIEW = 256


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
    rows = [("Path", show_path(getattr(record, "path", ""))), ("Size", human_size(getattr(record, "size", None)))]
    window = getattr(record, "window", None)
    if window is not None:
        c, r, w, h = (int(v) for v in window)
        rows.append(("Chip", f"{w} × {h} pixels at x {c}, y {r} of the scene"))
    if meta is None:
        rows.append(("Raster", "not read"))
    else:
        rows += [
            ("Pixels", f"{meta.width} × {meta.height}"),
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

        self.meta_box = meta_box = QGroupBox("File")
        self.meta_form = QFormLayout(meta_box)
        self.meta_form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)

        self.caption_box = caption_box = QGroupBox("Most similar captions")
        caption_layout = QVBoxLayout(caption_box)
        self.captions = QListWidget()
        self.captions.setWordWrap(True)
        self.captions.setAccessibleName("Most similar captions")
        self.captions.setMinimumHeight(150)
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
        layout.addWidget(meta_box)
        layout.addWidget(caption_box, 1)
        layout.addStretch(0)  # keeps the title at the top while the boxes are hidden

        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self.setMinimumWidth(260)
        self.show_message("Click a result to see its details.")

    # ------------------------------------------------------------------ states
    def show_message(self, text: str) -> None:
        self.tile_id, self.path = None, None
        self.title.setText(text)
        self.preview.clear()
        self.preview.setVisible(False)
        self._set_rows([])
        self.captions.clear()
        self.caption_note.setText("")
        self.similar_button.setEnabled(False)
        self.open_button.setEnabled(False)
        for w in (self.meta_box, self.caption_box, self.similar_button, self.open_button):
            w.setVisible(False)

    def show_loading(self, tile_id: int, name: str) -> None:
        self.tile_id = tile_id
        self.title.setText(f"{name}\nloading…")
        self.similar_button.setEnabled(True)

    def show_details(self, details: TileDetails) -> None:
        record = details.record
        self.tile_id = details.tile_id
        self.path = show_path(getattr(record, "path", "")) or None
        name = Path(str(getattr(record, "rel", "") or self.path or "")).name
        window = getattr(record, "window", None)
        if window is not None:
            name += f" @ {int(window[0])},{int(window[1])}"
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

    def set_captions(self, captions: Sequence[Any], error: str | None = None) -> None:
        self.captions.clear()
        for c in captions:
            item = QListWidgetItem(f"{int(c.distance):>3}   {c.text}")
            tip = f"Hamming distance {c.distance}"
            if getattr(c, "source", None):
                tip += f"\nfrom {c.source}"
            item.setToolTip(tip)
            item.setData(Qt.ItemDataRole.UserRole, (c.text, int(c.distance)))
            self.captions.addItem(item)
        if error:
            self.caption_note.setText(error)
        elif not captions:
            self.caption_note.setText("No captions in this index: index the folder with a captions file "
                                      "to see which descriptions match this tile.")
        else:
            self.caption_note.setText("Number = Hamming distance between the tile's code and the caption's.")

    def caption_texts(self) -> list[tuple[str, int]]:
        return [self.captions.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.captions.count())]

    def metadata(self) -> dict[str, str]:
        out = {}
        for r in range(self.meta_form.rowCount()):
            label = self.meta_form.itemAt(r, QFormLayout.ItemRole.LabelRole)
            field = self.meta_form.itemAt(r, QFormLayout.ItemRole.FieldRole)
            if label and field:
                out[label.widget().text()] = field.widget().text()
        return out

    # ------------------------------------------------------------------ helpers
    def _set_rows(self, rows: list[tuple[str, str]]) -> None:
        while self.meta_form.rowCount():
            self.meta_form.removeRow(0)
        for label, value in rows:
            field = QLabel(value)
            field.setWordWrap(True)
            field.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.meta_form.addRow(label, field)

    def _similar_clicked(self) -> None:
        if self.tile_id is not None:
            self.find_similar.emit(self.tile_id)
