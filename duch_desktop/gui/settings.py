"""Persistent GUI preferences (QSettings): recent folders, last folder, window geometry,
grid or map view of the results, chip options for indexing.

Everything goes through :class:`Settings` so tests can point it at a temporary INI file
(``Settings(QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat))``) or redirect the
default location with :func:`use_settings_dir`.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QCoreApplication, QSettings

ORGANIZATION = "DUCH"
APPLICATION = "DUCH Desktop"
MAX_RECENT = 8
RESULTS_MODES = ("grid", "map")


def use_settings_dir(directory: str | Path) -> None:
    """Store all default settings as INI files under ``directory`` (tests, portable installs)."""
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(directory))


class Settings:
    """Typed access to the handful of values the app remembers."""

    def __init__(self, qsettings: QSettings | None = None):
        if qsettings is None:
            if not QCoreApplication.organizationName():
                QCoreApplication.setOrganizationName(ORGANIZATION)
            if not QCoreApplication.applicationName():
                QCoreApplication.setApplicationName(APPLICATION)
            qsettings = QSettings()
        self.q = qsettings

    # ------------------------------------------------------------------ folders
    def recent_folders(self) -> list[str]:
        value = self.q.value("recent/folders", [])
        if isinstance(value, str):  # a one-element list comes back as a plain string from INI
            value = [value] if value else []
        return [str(v) for v in (value or [])]

    def add_recent_folder(self, folder: str | Path) -> list[str]:
        folder = str(folder)
        items = [folder] + [f for f in self.recent_folders() if f != folder]
        items = items[:MAX_RECENT]
        self.q.setValue("recent/folders", items)
        self.q.setValue("recent/last_folder", folder)
        self.q.sync()
        return items

    def clear_recent_folders(self) -> None:
        self.q.remove("recent/folders")
        self.q.sync()

    def last_folder(self) -> str | None:
        value = self.q.value("recent/last_folder", None)
        return str(value) if value else None

    # ------------------------------------------------------------------ window
    def geometry(self) -> QByteArray | None:
        value = self.q.value("window/geometry", None)
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def window_state(self) -> QByteArray | None:
        value = self.q.value("window/state", None)
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def save_window(self, geometry: QByteArray, state: QByteArray) -> None:
        self.q.setValue("window/geometry", geometry)
        self.q.setValue("window/state", state)
        self.q.sync()

    # ------------------------------------------------------------------ search options
    def int_value(self, key: str, default: int) -> int:
        try:
            return int(self.q.value(key, default))
        except (TypeError, ValueError):
            return default

    def set_value(self, key: str, value) -> None:
        self.q.setValue(key, value)

    def float_value(self, key: str, default: float) -> float:
        try:
            value = float(self.q.value(key, default))
        except (TypeError, ValueError):
            return default
        return value if value == value else default  # NaN from a hand-edited file

    # ------------------------------------------------------------------ results view
    def results_mode(self) -> str:
        value = str(self.q.value("view/results", "grid"))
        return value if value in RESULTS_MODES else "grid"

    def set_results_mode(self, mode: str) -> None:
        self.q.setValue("view/results", mode if mode in RESULTS_MODES else "grid")
        self.q.sync()

    # ------------------------------------------------------------------ indexing options
    def chip_options(self) -> dict:
        """``{"chip", "overlap", "chip_m"}`` as ``Archive.index`` takes them (0 = off), named as
        the CLI's --chip / --overlap / --chip-m; not validated here (the core refuses bad ones)."""
        return {"chip": self.int_value("index/chip", 0), "overlap": self.float_value("index/overlap", 0.0),
                "chip_m": self.float_value("index/chip_m", 0.0)}

    def set_chip_options(self, chip: int, overlap: float, chip_m: float) -> None:
        self.q.setValue("index/chip", int(chip))
        self.q.setValue("index/overlap", float(overlap))
        self.q.setValue("index/chip_m", float(chip_m))
        self.q.sync()
