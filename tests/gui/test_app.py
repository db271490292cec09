"""The duch-desktop entry point: argument parsing and the --screenshot run."""
from __future__ import annotations

from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication

from duch_desktop.gui import app


def test_parser():
    args = app.build_parser().parse_args(["--screenshot", "out.png", "folder", "a river", "--index-dir", "ix"])
    assert (args.screenshot, args.folder, args.query, args.index_dir) == ("out.png", "folder", "a river", "ix")
    assert app.build_parser().parse_args(["--demo"]).demo


def test_screenshot_run(qtbot, qapp, tmp_path, tile_folder, tiny_model_dir):
    out = tmp_path / "shot.png"
    code = app.main(["--screenshot", str(out), str(tile_folder), "green forest", "--model", str(tiny_model_dir),
                     "--index-dir", str(tmp_path / "index")])
    assert code == 0 and out.is_file()
    img = QImage(str(out))
    assert img.width() > 400 and img.height() > 300
    assert QApplication.instance() is qapp


def test_screenshot_without_model_fails_plainly(qtbot, tmp_path, tile_folder, capsys):
    out = tmp_path / "shot.png"
    code = app.main(["--screenshot", str(out), str(tile_folder), "x", "--model", str(tmp_path / "missing"),
                     "--index-dir", str(tmp_path / "index")])
    assert code == 1
    err = capsys.readouterr().err
    assert "no hashing model" in err and "Traceback" not in err
