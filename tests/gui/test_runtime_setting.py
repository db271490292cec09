"""The encoder runtime in the GUI: a Tools menu setting that is remembered, applied to the open
archive's encoders, and named in the status bar."""
from duch_desktop.core.model import runtime
from duch_desktop.gui.main_window import MainWindow


class _Archive:
    root = "."

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
