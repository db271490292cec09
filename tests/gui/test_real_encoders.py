"""The GUI with encoders loaded by the core from a bundle (tiny Hugging Face models on disk),
so model loading happens in the worker threads exactly as with the shipped model."""
from __future__ import annotations

from PySide6.QtCore import Qt

from duch_desktop.gui.main_window import MainWindow


def test_bundle_with_hf_encoders(qtbot, gui_settings, hf_model_dir, tile_folder, tmp_path):
    window = MainWindow(gui_settings, archive_options={"model": hf_model_dir},
                        index_options={"workers": 0, "batch_size": 4}, index_dir=tmp_path / "index")
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.indexing_finished, timeout=60000) as sig:
        window.open_folder(tile_folder)
    assert sig.args[0].added == 12 and sig.args[0].errors == 0
    qtbot.keyClicks(window.search_bar.query, "a dense green forest")
    with qtbot.waitSignal(window.search_finished, timeout=30000) as found:
        qtbot.keyClick(window.search_bar.query, Qt.Key.Key_Return)
    assert len(found.args[0]) == 12
    window.close()
