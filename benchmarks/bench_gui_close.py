"""How long the desktop app takes to close: idle (Ctrl+Q after a search) and in the middle of
indexing (the current batch commits first), measured from the close request to the process exit.

Runs the real app offscreen on a folder (default: the bundled demo) with the default model, in a
child process per case so that interpreter shutdown (torch, faiss, Qt) is part of the figure.
The index goes to a temporary folder. Run: ``python benchmarks/bench_gui_close.py [FOLDER]``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import os, sys, time
from pathlib import Path
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
from duch_desktop.gui.main_window import MainWindow
from duch_desktop.gui.settings import Settings, use_settings_dir

folder, index_dir, case = sys.argv[1], sys.argv[2], sys.argv[3]
use_settings_dir(index_dir + "-settings")
app = QApplication([])
window = MainWindow(Settings(), index_dir=index_dir)
window.show()
marks = {}

def close_now():
    marks["close"] = time.monotonic()
    print(f"close requested at {marks['close']:.3f} ({'indexing' if window.is_indexing() else 'idle'})", flush=True)
    window.close()

def progress(event):
    if case == "indexing" and event.stage == "index" and event.done >= 32 and "close" not in marks:
        marks["close"] = 0
        QTimer.singleShot(0, close_now)

def searched(_hits):
    if case == "idle" and "close" not in marks:
        marks["close"] = 0
        QTimer.singleShot(500, close_now)

window.indexing_done.connect(lambda: case == "idle" and window.search("airplanes parked at an airport"))
window.search_finished.connect(searched)
window.open_folder(folder)
orig = window._on_progress
window._on_progress = lambda e: (orig(e), progress(e))
app.exec()
print(f"window closed at {time.monotonic():.3f}", flush=True)
"""


def run(folder: str, case: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen([sys.executable, "-c", CHILD, folder, str(Path(tmp) / "index"), case], env=env,
                                stdout=subprocess.PIPE, text=True)
        requested = closed = None
        for line in proc.stdout:
            if line.startswith("close requested at"):
                requested = float(line.split()[3])
                print(f"  {line.strip()}")
            elif line.startswith("window closed at"):
                closed = float(line.split()[3])
        proc.wait()
        ended = time.monotonic()
        if requested is None:
            print(f"{case}: the close was never requested (exit {proc.returncode})")
            return
        print(f"{case}: window gone {closed - requested:.2f} s after the close request, "
              f"process exited {ended - requested:.2f} s after it (exit {proc.returncode})")


def main() -> None:
    from duch_desktop.core.model.defaults import demo_dir

    folder = sys.argv[1] if len(sys.argv) > 1 else str(demo_dir())
    print(f"folder {folder}; load average {os.getloadavg()[0]:.1f}")
    for case in ("idle", "indexing"):
        run(folder, case)


if __name__ == "__main__":
    main()
