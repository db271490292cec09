"""Plain helpers of the main window: messages, device name, system integration, summaries."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QProcess, QUrl
from PySide6.QtGui import QDesktopServices

if TYPE_CHECKING:
    from duch_desktop.core.archive.records import ArchiveStats

NO_FOLDER = ("No folder open.\n\nChoose a folder of satellite tiles with File ▸ Open Folder… (Ctrl+O), "
             "or open an existing index with File ▸ Open Index…")
NO_INDEX = "This folder has no index yet.\n\nUse File ▸ Index Folder (Ctrl+R) to build one."
NO_IMAGES = ("No images were found in {folder}.\n\nDUCH Desktop indexes raster files (GeoTIFF, JPEG, PNG, …); "
             "choose another folder with File ▸ Open Folder… (Ctrl+O).")
NO_READABLE = ("None of the files in {folder} could be read.\n\n"
               "The reasons are listed under “Files that could not be indexed”.")
STALE = ("This index was built with another hashing model than the one loaded.\n\n"
         "Use File ▸ Index Folder (Ctrl+R) to encode the tiles again with this model.")
READY = "Type a description above and press Enter to search{}."


def device_description() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"CUDA · {torch.cuda.get_device_name(0)}"
    except Exception:  # noqa: BLE001 - the status bar must never break the window
        pass
    return "CPU"


def default_opener(index_dir: Path, create_root: Path | None = None, **kwargs: Any):
    from duch_desktop.core.archive.archive import Archive

    return Archive.open(index_dir, create_root=create_root, **kwargs)


def open_with_system(path: str) -> None:
    QDesktopServices.openUrl(QUrl.fromLocalFile(path))


def reveal_in_file_manager(path: str) -> None:
    if sys.platform == "darwin":
        QProcess.startDetached("open", ["-R", path])
    elif sys.platform.startswith("win"):
        QProcess.startDetached("explorer", ["/select,", str(Path(path))])
    else:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(path).parent)))


def default_index_dir(folder: Path) -> Path:
    from duch_desktop.core.model import defaults

    return defaults.default_index_dir(folder)


def stats_text(stats: ArchiveStats) -> str:
    parts = [f"{stats.tiles:,} tiles"]
    if stats.errors:
        parts.append(f"{stats.errors} unreadable")
    parts.append(f"{stats.bits}-bit codes")
    return " · ".join(parts)


def report_text(report: Any) -> str:
    fields = ("added", "updated", "moved", "removed", "unchanged", "errors")
    counts = {f: getattr(report, f, 0) for f in fields}
    counts = {f: len(v) if isinstance(v, (list, tuple)) else v for f, v in counts.items()}
    parts = [f"{v} {f}" for f, v in counts.items() if v]
    seconds = getattr(report, "seconds", None)
    tail = f" in {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
    return "Indexing finished: " + (", ".join(parts) or "nothing to do") + tail
