"""The core must stay importable without Qt (the GUI is one client among several)."""
import subprocess
import sys


def test_core_imports_no_qt():
    code = (
        "import sys, pkgutil, importlib, duch_desktop.core as c\n"
        "for m in pkgutil.iter_modules(c.__path__): importlib.import_module('duch_desktop.core.' + m.name)\n"
        "bad = [m for m in sys.modules if m.startswith(('PySide6', 'PyQt', 'shiboken'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
