"""Tools ▸ Train Model…, Help ▸ Keyboard Shortcuts / About, a bare start, and a machine whose
Qt platform plugin cannot load."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from duch_desktop.core.model.bundle import DuchModel
from duch_desktop.gui import help as gui_help
from duch_desktop.gui.platform_check import platform_problem
from duch_desktop.gui.training import progress_line
from duch_desktop.core.jobs import Progress

from tests.conftest import CLASSES, PER_CLASS

from .conftest import N_TILES
from .test_main_window import index_folder, make_window, search  # noqa: F401 - fixture

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def all_captions(tmp_path) -> Path:
    """Two captions for every tile of ``tile_folder`` (CSV file,caption), outside the folder."""
    lines = ["file,caption"]
    for cls, (_colour, texts) in CLASSES.items():
        for i in range(PER_CLASS):
            rel = f"{cls}/{cls}_{i}.{'tif' if i >= 2 else 'png'}"
            lines += [f"{rel},{t}" for t in texts]
    path = tmp_path / "captions.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_train_a_model_in_the_app_and_use_it(qtbot, make_window, archive_options, tile_folder, all_captions,
                                            tmp_path):
    window = make_window(archive_options)
    index_folder(qtbot, window, tile_folder)
    assert window.train_action.isEnabled() and "coming soon" not in window.train_action.toolTip()
    window.train_action.trigger()
    dialog = window.train_dialog
    assert dialog.isVisible() and dialog.folder.text() == str(tile_folder)
    dialog.captions.setText(str(all_captions))
    dialog.bits.setValue(16)
    assert dialog.recipe.currentData() == "paper" and dialog.epochs.value() == 100
    dialog.recipe.setCurrentIndex(dialog.recipe.findData("contrastive"))
    assert dialog.epochs.value() == 40  # the recipe's own
    dialog.epochs.setValue(3)
    dialog.out.setText(str(tmp_path / "my-model"))
    lines = []
    with qtbot.waitSignal(dialog.finished_training, timeout=120000) as sig:
        dialog.train_button.click()
        assert not dialog.train_button.isEnabled() and dialog.cancel_button.text() == "Cancel"
        dialog.worker.progress.connect(lambda _e: lines.append(dialog.status.text()))
    assert any(line.startswith("Training · epoch ") and "loss " in line for line in lines), lines
    assert dialog.status.text().startswith(f"Saved the model in {tmp_path / 'my-model'} (16 bits")
    trained = DuchModel.load(tmp_path / "my-model")
    assert trained.bits == 16 and sig.args[0]["bits"] == 16
    assert trained.meta["train_config"]["temperature"] == 0.2 and trained.meta["train_config"]["epochs"] == 3
    assert (tmp_path / "my-model" / "captions.json").is_file() and list((tmp_path / "my-model").glob("captions-*.npy"))
    qtbot.waitUntil(lambda: dialog.worker is None, timeout=5000)
    assert dialog.use_button.isVisible() and dialog.train_button.isEnabled()

    with qtbot.waitSignal(window.indexing_finished, timeout=60000) as sig:
        dialog.use_button.click()  # the open folder is indexed again with the new model
    assert sig.args[0].updated + sig.args[0].added == N_TILES
    assert window.archive.model.bits == 16 and Path(window.archive.model_dir) == tmp_path / "my-model"
    assert len(search(qtbot, window, "a dense green forest")) == N_TILES


def test_training_can_be_cancelled_and_refuses_bad_input(qtbot, make_window, archive_options, tile_folder,
                                                         all_captions, tmp_path):
    window = make_window(archive_options)
    window.train_action.trigger()  # no folder open: still available, nothing to use the model for
    dialog = window.train_dialog
    dialog.folder.setText(str(tmp_path / "nowhere"))
    assert not dialog.start() and dialog.status.text().startswith("Cannot train: folder not found")
    dialog.folder.setText(str(tile_folder))
    dialog.bits.setValue(20)
    assert not dialog.start() and "multiple of 8" in dialog.status.text()
    dialog.bits.setValue(16)
    dialog.captions.setText(str(all_captions))
    dialog.epochs.setValue(5000)
    dialog.out.setText(str(tmp_path / "never"))
    assert dialog.start()
    qtbot.waitUntil(lambda: dialog.status.text().startswith("Training · epoch"), timeout=120000)
    dialog.cancel_button.click()
    assert dialog.status.text().startswith("Cancelling")
    qtbot.waitUntil(lambda: dialog.worker is None, timeout=30000)
    assert dialog.status.text().startswith("Training cancelled; no model was saved")
    assert not (tmp_path / "never" / "model.json").exists() and not dialog.use_button.isVisible()


def test_progress_line_of_training():
    event = Progress("train", 30, 120, "epoch 3/12", {"epoch": 3, "losses": {"inter": 1.5, "intra_image": 0.25,
                                                                            "intra_text": 0.5, "total": 2.0}})
    assert progress_line(event, started=0.0, now=10.0) == ("Training · epoch 3/12 · loss 2.000 (inter 1.500, "
                                                           "intra-image 0.250, intra-text 0.500) · ETA 0:30")
    assert progress_line(Progress("image features", 5, 20), 0.0, 1.0).endswith("5 / 20 · ETA 0:03")


def test_help_menu_lists_shortcuts_and_what_is_installed(qtbot, make_window, archive_options, tile_folder):
    window = make_window(archive_options)
    rows = dict((what, keys) for keys, what in gui_help.shortcut_rows(window))
    assert rows["Open Folder"] == "Ctrl+O" and rows["Find"] == "Ctrl+F" and rows["Results on a Map"] == "Ctrl+2"
    assert rows["Quit"] == "Ctrl+Q" and rows["Search"].startswith("Enter")
    dialog = gui_help.show_shortcuts(window)
    assert dialog.isVisible() and dialog.findChild(gui_help.QTableWidget).rowCount() == len(rows)
    dialog.close()
    index_folder(qtbot, window, tile_folder)
    about = dict(gui_help.about_rows(window))
    assert about["Model"].endswith("16-bit codes") and (about["Device"] == "CPU" or about["Device"].startswith("CUDA"))
    assert about["Qt"] and about["PyTorch"] and about["Encoders"].startswith("test-random")
    box = gui_help.show_about(window)
    assert "16-bit codes" in box.text() and "PyTorch" in box.text()
    box.close()


def test_a_bare_start_reopens_the_last_folder(qtbot, make_window, archive_options, tile_folder, gui_settings,
                                              tmp_path):
    gui_settings.add_recent_folder(str(tmp_path / "gone"))
    window = make_window(archive_options)
    assert not window.reopen_last_folder()
    assert "The folder of the last session" in window.message.text() and "no longer there" in window.message.text()
    gui_settings.add_recent_folder(str(tile_folder))
    with qtbot.waitSignal(window.indexing_finished, timeout=30000):
        assert window.reopen_last_folder()
    assert window.folder == tile_folder


def test_missing_system_libraries_are_named():
    missing = {"libxcb-cursor.so.0", "libxcb-icccm.so.4"}
    env = {"DISPLAY": ":0"}
    problem = platform_problem(env, "linux", loads=lambda soname: soname not in missing)
    assert "sudo apt-get install libxcb-cursor0 libxcb-icccm4 " in problem
    assert platform_problem(env, "linux", loads=lambda soname: True) is None
    assert platform_problem({"QT_QPA_PLATFORM": "offscreen"}, "linux", loads=lambda s: False) is None
    assert platform_problem({"WAYLAND_DISPLAY": "wayland-0", "XDG_SESSION_TYPE": "wayland"}, "linux",
                            loads=lambda s: False) is None
    assert platform_problem(env, "darwin", loads=lambda s: False) is None
    assert "no display" in platform_problem({}, "linux", loads=lambda s: True)


def test_duch_desktop_says_which_packages_are_missing_instead_of_aborting(tmp_path):
    code = ("import sys; from duch_desktop.gui import platform_check as p; "
            "p._loads = lambda soname: soname != 'libxcb-cursor.so.0'; "
            "from duch_desktop.gui.app import main; sys.exit(main([]))")
    env = {"PATH": "/usr/bin:/bin", "DISPLAY": ":0", "HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.startswith("duch-desktop: the desktop window cannot start") and "libxcb-cursor0" in run.stderr
