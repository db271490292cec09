"""Persistent GUI preferences (QSettings): recent folders, last folder, window layout, grid or
map view of the results, the search bar (results, max distance, last query), and per index the
indexing options (chips, bands, stretch); the encoder runtime.

Everything goes through :class:`Settings` so tests can point it at a temporary INI file
(``Settings(QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat))``) or redirect the
default location with :func:`use_settings_dir`.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from PySide6.QtCore import QByteArray, QCoreApplication, QSettings

from duch_desktop.core.model.runtime import RUNTIMES

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

    def choice(self, key: str, allowed: tuple[str, ...]) -> str:
        """The stored value of ``key`` if it is one of ``allowed``, else ``allowed[0]`` (the default)."""
        value = str(self.q.value(key, allowed[0]))
        return value if value in allowed else allowed[0]

    def set_choice(self, key: str, value: str, allowed: tuple[str, ...]) -> None:
        self.q.setValue(key, value if value in allowed else allowed[0])
        self.q.sync()

    # ------------------------------------------------------------------ results view
    def results_mode(self) -> str:
        return self.choice("view/results", RESULTS_MODES)

    def set_results_mode(self, mode: str) -> None:
        self.set_choice("view/results", mode, RESULTS_MODES)

    # ------------------------------------------------------------------ encoder runtime
    def runtime(self) -> str:
        """What runs the encoders: auto, onnx or torch (see ``core.model.runtime``)."""
        return self.choice("model/runtime", RUNTIMES)

    def set_runtime(self, name: str) -> None:
        self.set_choice("model/runtime", name, RUNTIMES)

    # ------------------------------------------------------------------ search
    def search_options(self) -> tuple[int, int]:
        """``(results, max distance)`` of the search bar; -1 = any distance."""
        return self.int_value("search/results", 20), self.int_value("search/max_distance", -1)

    def set_search_options(self, results: int, max_distance: int) -> None:
        self.q.setValue("search/results", int(results))
        self.q.setValue("search/max_distance", int(max_distance))

    def last_query(self) -> str:
        return str(self.q.value("search/last_query", "") or "")

    def set_last_query(self, query: str) -> None:
        self.q.setValue("search/last_query", query)

    def splitter_state(self) -> QByteArray | None:
        value = self.q.value("window/splitter", None)
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def set_splitter_state(self, state: QByteArray) -> None:
        self.q.setValue("window/splitter", state)

    # ------------------------------------------------------------------ indexing options
    # Kept per index (keyed by its directory): options chosen for one folder never leak into another.
    @staticmethod
    def _index_key(index_dir: str | Path) -> str:
        return "indexes/" + hashlib.sha1(os.fsencode(str(index_dir))).hexdigest()[:16]

    def index_options(self, index_dir: str | Path) -> dict:
        """``{"chip", "overlap", "chip_m", "bands", "stretch"}`` as ``Archive.index`` takes them,
        named as the CLI's --chip / --overlap / --chip-m / --bands / --stretch (0, None = off or
        the index's own); not validated here (the core refuses bad ones)."""
        key = self._index_key(index_dir)
        bands = str(self.q.value(f"{key}/bands", "") or "").strip()
        stretch = str(self.q.value(f"{key}/stretch", "") or "").strip()
        return {"chip": self.int_value(f"{key}/chip", 0), "overlap": self.float_value(f"{key}/overlap", 0.0),
                "chip_m": self.float_value(f"{key}/chip_m", 0.0), "bands": bands or None,
                "stretch": stretch or None}

    def set_index_options(self, index_dir: str | Path, chip: int, overlap: float, chip_m: float,
                          bands: str | None = None, stretch: str | None = None) -> None:
        key = self._index_key(index_dir)
        self.q.setValue(f"{key}/folder", str(index_dir))
        self.q.setValue(f"{key}/chip", int(chip))
        self.q.setValue(f"{key}/overlap", float(overlap))
        self.q.setValue(f"{key}/chip_m", float(chip_m))
        self.q.setValue(f"{key}/bands", bands or "")
        self.q.setValue(f"{key}/stretch", stretch or "")
        self.q.sync()
