"""``duch-desktop``: start the GUI, optionally on a folder, the demo or a screenshot run.

    duch-desktop [FOLDER] [--index-dir DIR] [--model DIR]
    duch-desktop --demo
    duch-desktop --screenshot out.png FOLDER "a query"
    duch-desktop --self-test     # load the model, index the demo in a temp dir, run one query; exit 0/1
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from .settings import APPLICATION, ORGANIZATION, Settings

SCREENSHOT_TIMEOUT_S = 600


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="duch-desktop",
                                description="Search a folder of satellite tiles by typed description.")
    p.add_argument("folder", nargs="?", help="folder of tiles to open (and index if needed)")
    p.add_argument("query", nargs="?", help="a search to run once the folder is ready")
    p.add_argument("--index-dir", metavar="DIR", help="where the index lives (default: per-user data folder)")
    p.add_argument("--open-index", metavar="DIR", help="open an existing index instead of a folder")
    p.add_argument("--model", metavar="DIR", help="hashing model bundle (default: the shipped model)")
    p.add_argument("--demo", action="store_true", help="open the bundled demo tiles, index them, ready to search")
    p.add_argument("--screenshot", metavar="PNG",
                   help="index FOLDER, run QUERY, save the window to PNG once thumbnails are loaded, and exit")
    p.add_argument("--no-index", action="store_true", help="open the folder without bringing its index up to date")
    p.add_argument("--self-test", action="store_true",
                   help="check this installation without a window: load the model, index the demo folder into "
                        "a temporary directory, run one query, print a report; exit 0 (ok) or 1")
    return p


def _archive_options(model: str | None) -> dict:
    return {"model": Path(model).expanduser()} if model else {}


class ScreenshotRun:
    """Drive a window through open → index → search → thumbnails → PNG, then quit."""

    def __init__(self, window, out: Path, folder: str | None, query: str | None, index_dir: str | None):
        self.window, self.out, self.query = window, Path(out), query
        self.exit_code = 1
        window.archive_failed.connect(self._fail)
        window.indexing_failed.connect(self._fail)
        window.indexing_done.connect(self._search)
        window.search_finished.connect(self._wait_for_thumbnails)
        window.search_failed.connect(self._fail)
        self._polls = 0
        self._timeout = QTimer(window)
        self._timeout.setSingleShot(True)
        self._timeout.timeout.connect(lambda: self._fail("timed out"))
        self._timeout.start(SCREENSHOT_TIMEOUT_S * 1000)
        if index_dir and not folder:
            window.open_index(index_dir, index=False)
            window.archive_opened.connect(self._search)
        else:
            window.open_folder(folder, index=True)

    def _search(self) -> None:
        if self.query:
            self.window.search(self.query)
        else:
            self._save()

    def _wait_for_thumbnails(self, hits: list) -> None:
        view = self.window.results_view
        if self.window.results_model.rowCount():
            view.setCurrentIndex(self.window.results_model.index(0))
        timer = QTimer(self.window)
        timer.setInterval(50)

        def poll() -> None:
            self._polls += 1
            view.viewport().update()
            loaded = self._visible_loaded()
            if (loaded and self.window.thumbs.is_idle() and self.window.tasks.pending() == 0) or self._polls > 400:
                timer.stop()
                self._save()

        timer.timeout.connect(poll)
        timer.start()

    def _visible_loaded(self) -> bool:
        view, model, thumbs = self.window.results_view, self.window.results_model, self.window.thumbs
        area = view.viewport().rect()
        for row in range(model.rowCount()):
            idx = model.index(row)
            if view.visualRect(idx).intersects(area):
                tile_id = int(model.hit(row).tile_id)
                if thumbs.cached(tile_id) is None and thumbs.error(tile_id) is None:
                    return False
        return True

    def _save(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        ok = self.window.grab().save(str(self.out))
        print(f"screenshot {'saved to' if ok else 'could not be written to'} {self.out}")
        self.exit_code = 0 if ok else 1
        QApplication.instance().exit(self.exit_code)

    def _fail(self, message: str) -> None:
        print(f"duch-desktop: {message}", file=sys.stderr)
        if self.window.archive is not None or self.window.results_model.rowCount():
            self.window.grab().save(str(self.out))
        QApplication.instance().exit(1)


_NATIVE_PLATFORMS = {"linux": ("xcb", "wayland"), "win32": ("windows",), "darwin": ("cocoa",)}


def _qt_checks(archive, hits) -> list[str]:
    """Self-test checks needing Qt: the plugins a real session loads are there and work."""
    from PySide6 import __version__ as pyside_version
    from PySide6.QtCore import QCoreApplication
    from PySide6.QtGui import QGuiApplication, QIcon, QImage

    from . import main_window  # noqa: F401 - every GUI module imports (a frozen bundle missing one fails here)

    thumb = archive.thumbnail(int(hits[0].tile_id), size=128)
    if QImage(str(thumb)).isNull():  # thumbnails are JPEGs: needs the Qt jpeg image-format plugin
        raise RuntimeError(f"Qt cannot read the JPEG thumbnail {thumb} (imageformats plugin missing?)")
    icon = _icon_path()
    if icon is not None and QIcon(str(icon)).pixmap(32, 32).isNull():
        raise RuntimeError(f"Qt cannot render the SVG icon {icon} (iconengines/imageformats svg plugin missing?)")
    plugins = set()
    for base in QCoreApplication.libraryPaths():
        folder = Path(base) / "platforms"
        if folder.is_dir():
            plugins |= {f.name for f in folder.iterdir()}
    native = next((n for n in _NATIVE_PLATFORMS.get(sys.platform, ()) if any(n in p for p in plugins)), None)
    if sys.platform in _NATIVE_PLATFORMS and native is None:
        raise RuntimeError(f"no native Qt platform plugin ({'/'.join(_NATIVE_PLATFORMS[sys.platform])}) in "
                           f"{QCoreApplication.libraryPaths()}")
    return [f"qt:      PySide6 {pyside_version}, platform {QGuiApplication.platformName()}, "
            f"native platform plugin {native or '?'} present, JPEG thumbnail and SVG icon load"]


def _icon_path() -> Path | None:
    icon = Path(__file__).resolve().parents[2] / "resources" / "icons" / "duch-desktop.svg"
    return icon if icon.is_file() else None


def self_test(args) -> int:
    """``--self-test``: the Qt-free self-test of :mod:`duch_desktop.selftest` plus Qt's plugins; 0 or 1."""
    from duch_desktop.selftest import self_test_main

    if args.folder or args.query:
        print("duch-desktop: --self-test runs on the bundled demo folder; it takes no FOLDER or QUERY", file=sys.stderr)
        return 2
    if not os.environ.get("QT_QPA_PLATFORM"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"  # no window is shown; works without a display
    app = QApplication.instance() or QApplication(list(sys.argv[:1]))
    try:
        return self_test_main(model=Path(args.model).expanduser() if args.model else None, extra_check=_qt_checks)
    finally:
        app.processEvents()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.self_test:
        return self_test(args)
    if QApplication.instance() is None:
        from .platform_check import platform_problem

        problem = platform_problem()  # Qt would abort with a hint few users can act on
        if problem:
            print(f"duch-desktop: {problem}", file=sys.stderr)
            return 2
    app = QApplication.instance() or QApplication(list(sys.argv[:1]))
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName("DUCH Desktop")
    icon = _icon_path()
    if icon is not None:
        from PySide6.QtGui import QIcon

        app.setWindowIcon(QIcon(str(icon)))

    from .main_window import MainWindow

    window = MainWindow(Settings(), archive_options=_archive_options(args.model), index_dir=args.index_dir)
    window.show()

    folder = args.folder
    if args.demo:
        from duch_desktop.core.model.defaults import demo_dir

        if folder and not args.query:  # `--demo "a query"`: the one positional is the query
            args.query = folder
        folder = str(demo_dir())
    if args.screenshot:
        if not folder and not args.open_index:
            print("duch-desktop: --screenshot needs a FOLDER (and a query)", file=sys.stderr)
            return 2
        run = ScreenshotRun(window, Path(args.screenshot), folder, args.query, args.open_index)
        app.exec()
        window.close()
        return run.exit_code
    if args.open_index:
        window.open_index(args.open_index, index=not args.no_index)
    elif folder:
        window.open_folder(folder, index=not args.no_index)
    else:
        window.reopen_last_folder(index=not args.no_index)
    if args.query:
        query = args.query
        started = {"done": False}

        def run_query() -> None:
            if not started["done"]:
                started["done"] = True
                window.search(query)

        window.archive_opened.connect(run_query)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
