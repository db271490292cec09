"""The encoder runtime in the GUI: a Tools menu setting that is remembered, applied to the open
archive's encoders, and named in the status bar (and Help ▸ About) as what the encoders really run
on: torch when onnxruntime cannot be loaded or the encoders fell back to it."""
import sys

from duch_desktop.core.model import encoders, runtime
from duch_desktop.gui.main_window import MainWindow


class _Archive:
    root = "."
    text_encoder = None  # what the window loads again after a runtime change

    def __init__(self):
        self.runtimes = []

    def use_runtime(self, name):
        self.runtimes.append(name)


def test_runtime_menu_sets_remembers_and_shows_the_runtime(qtbot, gui_settings, monkeypatch):
    monkeypatch.delenv("DUCH_RUNTIME", raising=False)
    gui_settings.set_runtime("torch")
    window = MainWindow(gui_settings)
    qtbot.addWidget(window)
    try:
        assert window.runtime_actions["torch"].isChecked()
        assert runtime.default_runtime() == "torch" and "Runtime: torch" in window.device_label.text()
        window.archive = _Archive()
        window.runtime_actions["onnx"].trigger()
        assert gui_settings.runtime() == "onnx" and window.runtime_actions["onnx"].isChecked()
        assert runtime.default_runtime() == "onnx" and window.archive.runtimes == [None]
        assert "Runtime: onnx (onnxruntime" in window.device_label.text()
        window.archive = None
    finally:
        runtime.set_default_runtime(None)


def test_status_bar_and_about_name_torch_when_onnxruntime_cannot_be_loaded(qtbot, gui_settings, monkeypatch):
    from duch_desktop.gui.help import about_rows

    monkeypatch.delenv("DUCH_RUNTIME", raising=False)
    monkeypatch.setattr(runtime, "cuda_available", lambda: False)  # so that auto means onnx, here too
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    gui_settings.set_runtime("auto")
    window = MainWindow(gui_settings)
    qtbot.addWidget(window)
    try:
        text = window.device_label.text()
        assert "Runtime: torch (" in text and text.endswith("onnxruntime unavailable"), text
        assert dict(about_rows(window))["Runtime"] == text.split("Runtime: ", 1)[1]
    finally:
        runtime.set_default_runtime(None)


def test_status_bar_names_what_the_loaded_encoders_run_on_after_a_fallback(
        qtbot, gui_settings, monkeypatch, hf_model_dir, tile_folder, tmp_path, caplog):
    """auto picks onnx, onnxruntime is there, but the encoders cannot be made on it: they load on
    torch, and the status bar (which said onnx before they loaded) says torch."""
    from duch_desktop.gui.help import about_rows

    def export_fails(*_a, **_k):
        raise RuntimeError("the exporter crashed")

    monkeypatch.delenv("DUCH_RUNTIME", raising=False)
    monkeypatch.setattr(runtime, "choose", lambda name, *a, **k: "torch" if name == "torch" else "onnx")
    monkeypatch.setattr(encoders, "onnx_image_encoder", export_fails)
    monkeypatch.setattr(encoders, "onnx_text_encoder", export_fails)
    gui_settings.set_runtime("auto")
    window = MainWindow(gui_settings, archive_options={"model": hf_model_dir},
                        index_options={"workers": 0, "batch_size": 4}, index_dir=tmp_path / "index")
    qtbot.addWidget(window)
    try:
        assert "Runtime: onnx (onnxruntime" in window.device_label.text()  # what the setting gives, nothing loaded
        with qtbot.waitSignal(window.indexing_finished, timeout=60000):
            window.open_folder(tile_folder)
        on_torch = runtime.describe("torch")
        qtbot.waitUntil(lambda: window.device_label.text().endswith(f"Runtime: {on_torch}"), timeout=30000)
        assert dict(about_rows(window))["Runtime"] == on_torch
        assert window.archive.loaded_image_encoder.runtime == "torch"
        assert any("using torch" in r.getMessage() for r in caplog.records)
    finally:
        window.close()
        runtime.set_default_runtime(None)
