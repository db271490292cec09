"""Indexing Options: how the open folder's index reads its files — scenes cut into chips (size in
pixels or metres, overlap), the band triple and the stretch of multi-band rasters. The same
settings as ``duch index --chip / --chip-m / --overlap / --bands / --stretch``; they belong to
one index (kept per index in the settings), never to every folder opened later."""
from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout, QLabel,
                               QLineEdit, QSpinBox)

from duch_desktop.core.jobs import UserError

from .panels import vbox

if TYPE_CHECKING:
    from duch_desktop.core.archive.records import ArchiveStats

STRETCH_CHOICES = (("auto", "auto — 8-bit data as is, other data types stretched"),
                   ("percentile", "percentile — 2–98 % stretch of every band"),
                   ("none", "none — values used as they are"))


def check_chip_options(chip: int, overlap: float, chip_m: float):
    """The core's :class:`ChipOptions` of these values (None: chipping off); raises UserError
    with the same rules and words as ``duch index --chip/--overlap/--chip-m``."""
    from duch_desktop.core.imagery.chips import resolve_options  # numpy + rasterio: only once asked

    if not chip and not chip_m:
        overlap = 0  # the overlap box is disabled then: a left-over value means nothing
    return resolve_options(None, chip, overlap, chip_m)


def check_bands(text: str | None) -> tuple[int, ...] | None:
    """``"4,3,2"`` -> (4, 3, 2), empty -> None; UserError with the CLI's words for junk."""
    from duch_desktop.core.imagery.reading import parse_bands

    try:
        return parse_bands(text)
    except ValueError as e:
        raise UserError(str(e)) from e


def normalised(values: dict) -> dict:
    """Dialog or settings values as ``Archive.index`` takes them (0/None = off or default)."""
    bands = check_bands(values.get("bands"))
    return {"chip": int(values.get("chip") or 0), "overlap": float(values.get("overlap") or 0),
            "chip_m": float(values.get("chip_m") or 0),
            "bands": ",".join(map(str, bands)) if bands else None, "stretch": values.get("stretch") or None}


class IndexOptionsDialog(QDialog):
    """Chips, bands and stretch; OK is refused, with the reason shown, while the values are
    impossible (overlap not less than the chip, a chip under the core's minimum, bad bands);
    :meth:`values` gives them to the caller."""

    def __init__(self, values: dict, current: str | None = None, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Indexing Options")
        self.chip = _spin(QSpinBox(), "Chip size in pixels", " px", 32,
                          "Cut rasters larger than this many pixels both ways into chips searched on their "
                          "own (off: every file is one tile); duch index --chip")
        self.chip_m = _spin(QDoubleSpinBox(), "Chip size in metres", " m", 10,
                            "Chip size on the ground where the pixel size is known (resampled to the model's "
                            "resolution); other rasters use the pixel size, else 256 px; duch index --chip-m")
        self.overlap = _spin(QDoubleSpinBox(), "Overlap of neighbouring chips", "", 1,
                             "How much neighbouring chips overlap: pixels, or metres with a size in metres; "
                             "duch index --overlap")
        self.overlap.setSpecialValueText("")
        self.bands = QLineEdit(str(values.get("bands") or ""))
        self.bands.setPlaceholderText("first three (1,2,3)")
        self.bands.setAccessibleName("Bands shown to the model")
        self.bands.setToolTip("Which bands of a multi-band raster make the red, green and blue the model sees, "
                              "1-based, e.g. 4,3,2 for Sentinel-2 true colour; one band is repeated as grey; "
                              "duch index --bands")
        self.stretch = QComboBox()
        for key, text in STRETCH_CHOICES:
            self.stretch.addItem(text, key)
        self.stretch.setAccessibleName("Stretch")
        self.stretch.setToolTip("How pixel values are brought to 0–255 for the model; duch index --stretch")
        self.chip.setValue(int(values.get("chip") or 0))
        self.chip_m.setValue(float(values.get("chip_m") or 0))
        self.overlap.setValue(float(values.get("overlap") or 0))
        self.stretch.setCurrentIndex(max(0, self.stretch.findData(values.get("stretch") or "auto")))
        for box in (self.chip, self.chip_m):
            box.valueChanged.connect(self._units)
        self._units()

        form = QFormLayout()
        form.addRow("Chip size:", self.chip)
        form.addRow("Chip size in metres:", self.chip_m)
        form.addRow("Overlap:", self.overlap)
        form.addRow("Bands (R,G,B):", self.bands)
        form.addRow("Stretch:", self.stretch)
        intro = QLabel("Large scenes (orthophotos, satellite granules) can be cut into chips, each searched as a "
                       "tile of its own; multi-band rasters are shown to the model as three bands. The open "
                       "folder is indexed again with these options; other folders keep their own.")
        intro.setWordWrap(True)
        self.current = QLabel(f"This index: {current}" if current else "")
        self.current.setWordWrap(True)
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
        vbox(self, intro, form, self.current, self.error, buttons)

    def values(self) -> dict:
        """``{"chip", "overlap", "chip_m", "bands", "stretch"}`` for ``Archive.index`` (0 = off)."""
        on = bool(self.chip.value() or self.chip_m.value())
        return {"chip": self.chip.value(), "overlap": self.overlap.value() if on else 0.0,
                "chip_m": self.chip_m.value(), "bands": self.bands.text().strip() or None,
                "stretch": self.stretch.currentData()}

    def accept(self) -> None:
        values = self.values()
        try:
            check_chip_options(values["chip"], values["overlap"], values["chip_m"])
            check_bands(values["bands"])
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


def _spin(box, name: str, suffix: str, step: float, tip: str):
    box.setRange(0, 1_000_000)
    if isinstance(box, QDoubleSpinBox):
        box.setDecimals(1)
    box.setSingleStep(step)
    box.setSuffix(suffix)
    box.setSpecialValueText("off")
    box.setAccessibleName(name)
    box.setToolTip(tip)
    return box


def describe_options(stats: ArchiveStats) -> str | None:
    """'chips 256 px, overlap 32 px · bands 4,3,2 · stretch none' for the options that are on, else None."""
    parts = []
    if stats.chip_options:
        parts.append("chips " + stats.chip_options.describe())
    opts = stats.options or {}
    if opts.get("bands"):
        parts.append("bands " + ",".join(str(b) for b in opts["bands"]))
    if opts.get("stretch") not in (None, "auto"):
        parts.append(f"stretch {opts['stretch']}")
    return " · ".join(parts) or None


def _same(a: dict, b: dict) -> bool:
    """Whether two option sets index alike (chips as the core resolves them, stretch "auto" = unset)."""
    a, b = normalised(a), normalised(b)
    return (check_chip_options(a["chip"], a["overlap"], a["chip_m"]) ==
            check_chip_options(b["chip"], b["overlap"], b["chip_m"]) and a["bands"] == b["bands"]
            and (a["stretch"] or "auto") == (b["stretch"] or "auto"))


class IndexOptionsMixin:
    """Mixed into :class:`MainWindow`: the dialog, and applying its values to the open index."""

    def index_values(self) -> dict:
        """The options to start the dialog from: those chosen and not yet run, else the open index's."""
        if self._options_pending is not None:
            return dict(self._options_pending)
        if self.archive is None or self._stats is None:
            return {}
        cut, opts = self._stats.chip_options, self._stats.options or {}
        return {"chip": int(cut.chip or 0) if cut else 0, "overlap": float(cut.overlap or 0) if cut else 0.0,
                "chip_m": float(cut.chip_m or 0) if cut else 0.0,
                "bands": ",".join(str(b) for b in opts["bands"]) if opts.get("bands") else None,
                "stretch": opts.get("stretch") or "auto"}

    def choose_index_options(self) -> None:
        """Open the (window-modal) indexing options dialog; OK applies its values."""
        if self.archive is None:
            self.statusBar().showMessage("Open a folder first: indexing options belong to one folder's index.",
                                         10000)
            return
        if self.options_dialog is not None:
            self.options_dialog.raise_()
            return
        current = None if self._stats is None else (describe_options(self._stats) or "every file is one tile, "
                                                                                      "first three bands, auto stretch")
        dialog = IndexOptionsDialog(self.index_values(), current, self)
        dialog.accepted.connect(lambda: self.apply_index_options(dialog.values()))
        dialog.finished.connect(lambda _r: self._dialog_closed(dialog))
        self.options_dialog = dialog
        dialog.open()

    def _dialog_closed(self, dialog: QDialog) -> None:
        if self.options_dialog is dialog:
            self.options_dialog = None
        dialog.deleteLater()

    def apply_index_options(self, values: dict) -> bool:
        """Keep these options for the open index and index it with them (after a running job: the
        next run). Impossible values are refused with the core's reason in the status bar;
        returns whether they were taken."""
        if self.archive is None:
            return False
        try:
            values = normalised(values)
            check_chip_options(values["chip"], values["overlap"], values["chip_m"])
        except UserError as e:
            self.statusBar().showMessage(f"Indexing options not changed: {e}.", 15000)
            return False
        self.settings.set_index_options(self.archive.index_dir, **values)
        if self._options_pending is None and self._stats is not None and _same(self.index_values(), values):
            self.statusBar().showMessage("This index already uses these options.", 10000)
            return True
        self._options_pending = values
        if self.is_indexing():
            self.statusBar().showMessage("The new options apply to the next indexing run (File ▸ Index Folder).",
                                         15000)
        else:
            self.start_indexing()
        return True
