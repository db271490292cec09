"""Small building blocks of the main window: the search bar, the indexing bar, the errors
dock, the plain-language message page and the indexing options dialog."""
from __future__ import annotations

from typing import Any, Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QDockWidget, QDoubleSpinBox, QFormLayout, QHBoxLayout,
                               QLabel, QLineEdit, QListWidget, QProgressBar, QPushButton, QSpinBox, QVBoxLayout,
                               QWidget)

from duch_desktop.core.jobs import Progress, UserError


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "—"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress_text(event: Progress) -> str:
    """'120 / 480 tiles · 35.2 tiles/s · ETA 0:10 · 2 errors · 1 skipped' (or the stage's own words)."""
    info = event.info or {}
    if event.stage == "scan":
        return f"Scanning the folder… {event.done:,} files found"
    if event.stage == "plan":
        return f"Cutting scenes into chips… {event.done:,} / {event.total:,} files" if event.total else \
            "Cutting scenes into chips…"
    if event.stage == "captions":
        return f"Encoding captions… {event.done:,} / {event.total:,}" if event.total else "Encoding captions…"
    if event.stage == "index" and not event.total and not event.done and event.message:
        return event.message
    parts = [f"{event.done:,} / {event.total:,} tiles" if event.total else f"{event.done:,} tiles"]
    rate = info.get("rate")
    if rate is not None:
        parts.append(f"{float(rate):.1f} tiles/s")
    if event.total:
        parts.append(f"ETA {format_duration(info.get('eta'))}")
    errors, skipped = int(info.get("errors") or 0), int(info.get("skipped") or 0)
    if errors:
        parts.append(f"{errors} error{'s' if errors != 1 else ''}")
    if skipped:
        parts.append(f"{skipped} unchanged")
    return " · ".join(parts)


class SearchBar(QWidget):
    """Query box (Enter searches), number of results, maximum Hamming radius ("any")."""

    search_requested = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.query = QLineEdit()
        self.query.setPlaceholderText("Describe what you are looking for, e.g. “a river next to farmland”, "
                                      "and press Enter")
        self.query.setClearButtonEnabled(True)
        self.query.setAccessibleName("Search description")
        self.query.returnPressed.connect(self._submit)

        self.count = QSpinBox()
        self.count.setRange(1, 1000)
        self.count.setValue(20)
        self.count.setToolTip("Number of results to show")
        self.count.setAccessibleName("Number of results")

        self.radius = QSpinBox()
        self.radius.setRange(-1, 256)
        self.radius.setValue(-1)
        self.radius.setSpecialValueText("any")
        self.radius.setToolTip("Maximum Hamming distance of a result (“any” = no limit)")
        self.radius.setAccessibleName("Maximum Hamming distance")

        self.button = QPushButton("Search")
        self.button.clicked.connect(self._submit)

        row = QHBoxLayout(self)
        row.setContentsMargins(6, 6, 6, 2)
        row.addWidget(self.query, 1)
        row.addWidget(QLabel("Results:"))
        row.addWidget(self.count)
        row.addWidget(QLabel("Max distance:"))
        row.addWidget(self.radius)
        row.addWidget(self.button)

    def k(self) -> int:
        return self.count.value()

    def max_radius(self) -> int | None:
        r = self.radius.value()
        return None if r < 0 else r

    def set_bits(self, bits: int) -> None:
        self.radius.setMaximum(max(0, int(bits)))

    def _submit(self) -> None:
        self.search_requested.emit(self.query.text().strip())


class IndexBar(QWidget):
    """Progress of the running indexing job, with a Cancel button; hidden when idle."""

    cancel_requested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setTextVisible(True)
        self.bar.setMinimumWidth(200)
        self.text = QLabel()
        self.file = QLabel()
        self.file.setMinimumWidth(50)
        self.file.setTextFormat(Qt.TextFormat.PlainText)
        self.cancel = QPushButton("Cancel")
        self.cancel.setToolTip("Stop indexing (Esc); what is already indexed is kept")
        self.cancel.clicked.connect(self.cancel_requested)
        top = QHBoxLayout()
        top.addWidget(QLabel("Indexing:"))
        top.addWidget(self.bar, 1)
        top.addWidget(self.cancel)
        box = QVBoxLayout(self)
        box.setContentsMargins(6, 2, 6, 2)
        box.addLayout(top)
        box.addWidget(self.text)
        box.addWidget(self.file)
        self.setVisible(False)

    def start(self, text: str = "Scanning the folder…") -> None:
        self.bar.setRange(0, 0)  # busy until the total is known
        self.text.setText(text)
        self.file.setText("")
        self.cancel.setEnabled(True)
        self.setVisible(True)

    def update_progress(self, event: Progress) -> None:
        if event.total:
            self.bar.setRange(0, event.total)
            self.bar.setValue(min(event.done, event.total))
        else:
            self.bar.setRange(0, 0)
        self.text.setText(progress_text(event))
        if event.message and event.stage == "index" and event.total:
            metrics = self.file.fontMetrics()
            self.file.setText(metrics.elidedText(str(event.message), Qt.TextElideMode.ElideMiddle,
                                                 max(100, self.file.width())))
            self.file.setToolTip(str(event.message))

    def cancelling(self) -> None:
        self.cancel.setEnabled(False)
        self.text.setText("Cancelling… (finishing the current batch)")

    def stop(self) -> None:
        self.setVisible(False)


class ErrorsDock(QDockWidget):
    """Files that could not be indexed, with the reason; no pop-ups."""

    def __init__(self, parent=None):
        super().__init__("Files that could not be indexed", parent)
        self.setObjectName("errorsDock")
        self.list = QListWidget()
        self.list.setAccessibleName("Indexing errors")
        self.setWidget(self.list)

    def set_errors(self, errors: Sequence[Any]) -> None:
        self.list.clear()
        for rel, reason in errors:
            self.list.addItem(f"{rel} — {reason}")
        self.setWindowTitle(f"Files that could not be indexed ({len(errors)})" if errors
                            else "Files that could not be indexed")

    def entries(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())]


class MessagePage(QLabel):
    """A centred, word-wrapped plain message shown instead of the results grid."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setWordWrap(True)
        self.setMargin(24)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        font = self.font()
        font.setPointSizeF(font.pointSizeF() * 1.2)
        self.setFont(font)


def check_chip_options(chip: int, overlap: float, chip_m: float):
    """The core's :class:`ChipOptions` of these values (None: chipping off); raises UserError
    with the same rules and words as ``duch index --chip/--overlap/--chip-m``."""
    from duch_desktop.core.imagery.chips import resolve_options  # numpy + rasterio: only once asked

    if not chip and not chip_m:
        overlap = 0  # the overlap box is disabled then: a left-over value means nothing
    return resolve_options(None, chip, overlap, chip_m)


class IndexOptionsDialog(QDialog):
    """Chip size (px), chip size in metres and overlap, as ``duch index --chip/--chip-m/--overlap``.

    OK is refused, with the reason shown, while the values are impossible (overlap not less
    than the chip, a chip under the core's minimum); :meth:`values` gives them to the caller.
    """

    def __init__(self, values: dict, current: str | None = None, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Indexing Options")
        self.chip = QSpinBox()
        self.chip.setRange(0, 1_000_000)
        self.chip.setSingleStep(32)
        self.chip.setSuffix(" px")
        self.chip.setSpecialValueText("off")
        self.chip.setAccessibleName("Chip size in pixels")
        self.chip.setToolTip("Cut rasters larger than this many pixels both ways into chips searched on their "
                             "own (off: every file is one tile); duch index --chip")
        self.chip_m = QDoubleSpinBox()
        self.chip_m.setRange(0, 1_000_000)
        self.chip_m.setDecimals(1)
        self.chip_m.setSingleStep(10)
        self.chip_m.setSuffix(" m")
        self.chip_m.setSpecialValueText("off")
        self.chip_m.setAccessibleName("Chip size in metres")
        self.chip_m.setToolTip("Chip size on the ground where the pixel size is known (resampled to the model's "
                               "resolution); other rasters use the pixel size, else 256 px; duch index --chip-m")
        self.overlap = QDoubleSpinBox()
        self.overlap.setRange(0, 1_000_000)
        self.overlap.setDecimals(1)
        self.overlap.setAccessibleName("Overlap of neighbouring chips")
        self.overlap.setToolTip("How much neighbouring chips overlap: pixels, or metres with a size in metres; "
                                "duch index --overlap")
        self.chip.setValue(int(values.get("chip") or 0))
        self.chip_m.setValue(float(values.get("chip_m") or 0))
        self.overlap.setValue(float(values.get("overlap") or 0))
        for box in (self.chip, self.chip_m):
            box.valueChanged.connect(self._units)
        self._units()

        form = QFormLayout()
        form.addRow("Chip size:", self.chip)
        form.addRow("Chip size in metres:", self.chip_m)
        form.addRow("Overlap:", self.overlap)
        intro = QLabel("Large scenes (orthophotos, satellite granules) can be cut into chips, each searched as a "
                       "tile of its own. The open folder is indexed again with the new options; folders indexed "
                       "for the first time get them too, other indexes keep the options they were built with.")
        intro.setWordWrap(True)
        self.current = QLabel(f"This index: {current}" if current else "")
        self.current.setVisible(bool(current))
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setTextFormat(Qt.TextFormat.PlainText)
        self.error.setStyleSheet("color: #c62828")
        self.error.setVisible(False)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.ok_button = buttons.button(QDialogButtonBox.StandardButton.Ok)
        box = QVBoxLayout(self)
        box.addWidget(intro)
        box.addLayout(form)
        box.addWidget(self.current)
        box.addWidget(self.error)
        box.addWidget(buttons)

    def values(self) -> dict:
        """``{"chip", "overlap", "chip_m"}`` for ``Archive.index`` (0 = off)."""
        on = bool(self.chip.value() or self.chip_m.value())
        return {"chip": self.chip.value(), "overlap": self.overlap.value() if on else 0.0,
                "chip_m": self.chip_m.value()}

    def accept(self) -> None:
        try:
            check_chip_options(**self.values())
        except UserError as e:
            self.error.setText(f"These options cannot be used: {e}.")
            self.error.setVisible(True)
            return
        self.error.setVisible(False)
        super().accept()

    def _units(self) -> None:
        on = bool(self.chip.value() or self.chip_m.value())
        self.overlap.setEnabled(on)
        metres = bool(self.chip_m.value())
        self.overlap.setDecimals(1 if metres else 0)  # the core rounds a pixel overlap to whole pixels
        self.overlap.setSuffix(" m" if metres else " px")
