"""Help ▸ Keyboard Shortcuts and Help ▸ About: what the keys do (read from the actions themselves,
so the list cannot drift from the menus) and what this installation is (versions, model, runtime,
device)."""
from __future__ import annotations

import platform
import sys
from importlib import metadata
from typing import Any

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QMessageBox, QTableWidget, QTableWidgetItem,
                               QVBoxLayout)

from .desktop import device_description, runtime_description

EXTRA_KEYS = [("Enter (in the search box)", "Search"),
              ("Enter / double-click (on a result)", "Open the file with the system viewer"),
              ("Arrow keys (in the results)", "Move between results; the detail pane follows"),
              ("Mouse wheel / drag (on the map)", "Zoom / pan")]


def shortcut_rows(window) -> list[tuple[str, str]]:
    """``(keys, what)`` for every menu action with a shortcut, then the keys that are not menu items."""
    rows = []
    for action in window.findChildren(QAction):
        keys = action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
        if keys and action.text():
            rows.append((keys, action.text().replace("&", "").rstrip("…").strip()))
    return sorted(set(rows), key=lambda r: r[1]) + EXTRA_KEYS


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def about_rows(window) -> list[tuple[str, str]]:
    """``(label, value)``: versions, the model of the open index (or the default one), runtime, device."""
    from PySide6 import __version__ as pyside
    from PySide6.QtCore import qVersion

    rows = [("DUCH Desktop", _version("duch-desktop")),
            ("Python", f"{platform.python_version()} ({sys.platform})"),
            ("Qt", f"{qVersion()} (PySide6 {pyside})"),
            ("PyTorch", _version("torch")), ("ONNX Runtime", _version("onnxruntime")), ("faiss", _version("faiss-cpu"))]
    archive: Any = getattr(window, "archive", None)
    model = getattr(archive, "model", None)
    if model is not None:
        where = getattr(archive, "model_dir", None) or "given by the caller"
        rows += [("Model", f"{where} · {model.bits}-bit codes"),
                 ("Encoders", f"{model.image_encoder} (images), {model.text_encoder} (text)")]
    else:
        rows.append(("Model", "the default model (open a folder to see the one in use)"))
    rows.append(("Runtime", runtime_description(archive)))  # what the encoders run on (onnxruntime or torch)
    rows.append(("Device", device_description()))
    return rows


def show_shortcuts(window) -> QDialog:
    rows = shortcut_rows(window)
    dialog = QDialog(window)
    dialog.setWindowTitle("Keyboard Shortcuts")
    table = QTableWidget(len(rows), 2)
    table.setHorizontalHeaderLabels(["Keys", "Action"])
    table.verticalHeader().setVisible(False)
    table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    for r, (keys, what) in enumerate(rows):
        table.setItem(r, 0, QTableWidgetItem(keys))
        table.setItem(r, 1, QTableWidgetItem(what))
    table.resizeColumnsToContents()
    table.horizontalHeader().setStretchLastSection(True)
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
    buttons.rejected.connect(dialog.close)
    box = QVBoxLayout(dialog)
    box.addWidget(table)
    box.addWidget(buttons)
    dialog.resize(520, 420)
    dialog.show()
    return dialog


def show_about(window) -> QMessageBox:
    rows = "".join(f"<tr><td><b>{k}</b>&nbsp;&nbsp;</td><td>{v}</td></tr>" for k, v in about_rows(window))
    box = QMessageBox(window)
    box.setWindowTitle("About DUCH Desktop")
    box.setText("<h3>DUCH Desktop</h3><p>Offline text → image search over satellite and aerial tiles with "
                "Deep Unsupervised Contrastive Hashing (Mikriukov, Ravanbakhsh &amp; Demir, ICASSP 2022).</p>"
                f"<table>{rows}</table>")
    box.setIcon(QMessageBox.Icon.Information)
    box.open()
    return box
