"""Plain helpers of the main window: messages, device name, system integration, summaries."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QProcess, QUrl
from PySide6.QtGui import QDesktopServices

from duch_desktop.core.model.runtime import describe as describe_runtime

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
PICK_A_RESULT = "Click a result to see its details."
READY = "Type a description above and press Enter to search{}."


# A search whose best result is this share of the code length away (or more) found nothing that
# matches well. Measured with benchmarks/weak_match.py (default 64-bit UCM + RSICD model, 2,100 UCM
# tiles): a best match >= 16 bits away flags 94 % of 80 nonsense queries, 7 of 30 typed descriptions
# and none of 400 UCM captions (the model before its head+inner-block image features: 95 %, 7 of 30);
# 0.25 x 64 = 16. Re-run it when the default model changes.
WEAK_FRACTION = 0.25


def is_weak(distance: int, bits: int) -> bool:
    """Whether a best-match ``distance`` (of ``bits``-bit codes) means "no good match"."""
    return WEAK_FRACTION > 0 and distance >= WEAK_FRACTION * bits


def device_description() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"CUDA · {torch.cuda.get_device_name(0)}"
    except Exception:  # noqa: BLE001 - the status bar must never break the window
        pass
    return "CPU"


def runtime_description(archive: Any) -> str:
    """What the encoders of ``archive`` run on (loaded ones as they really are), else what the
    runtime setting would give the default encoders."""
    describe = getattr(archive, "describe_runtime", None)
    return describe() if describe is not None else describe_runtime()


def default_opener(index_dir: Path, create_root: Path | None = None, **kwargs: Any):
    from duch_desktop.core.archive.archive import Archive

    return Archive.open(index_dir, create_root=create_root, **kwargs)


def open_with_system(path: str) -> bool:
    """Open ``path`` in the system's viewer; False when none could be started."""
    return bool(QDesktopServices.openUrl(QUrl.fromLocalFile(path)))


def reveal_in_file_manager(path: str) -> bool:
    """Show ``path`` in the file manager; False when none could be started."""
    if sys.platform == "darwin":
        return bool(QProcess.startDetached("open", ["-R", path]))
    if sys.platform.startswith("win"):
        return bool(QProcess.startDetached("explorer", ["/select,", str(Path(path))]))
    return bool(QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(path).parent))))


def default_index_dir(folder: Path) -> Path:
    from duch_desktop.core.model import defaults

    return defaults.default_index_dir(folder)


def stats_text(stats: ArchiveStats) -> str:
    parts = [f"{stats.tiles:,} tiles"]
    if stats.errors:
        parts.append(f"{stats.errors} unreadable")
    parts.append(f"{stats.bits}-bit codes")
    from .index_options import describe_options

    options = describe_options(stats)  # chips, bands, stretch: shown whenever they are not the defaults
    if options:
        parts.append(options)
    return " · ".join(parts)


def report_text(report: Any) -> str:
    fields = ("added", "updated", "moved", "removed", "unchanged", "errors")
    counts = {f: getattr(report, f, 0) for f in fields}
    counts = {f: len(v) if isinstance(v, (list, tuple)) else v for f, v in counts.items()}
    parts = [f"{v} {f}" for f, v in counts.items() if v]
    seconds = getattr(report, "seconds", None)
    tail = f" in {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
    return "Indexing finished: " + (", ".join(parts) or "nothing to do") + tail
