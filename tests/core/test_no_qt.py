"""The core must stay importable without Qt (the GUI is one client among several), and its
modules must import in any order: an import cycle inside the package shows up as an ImportError
when a module of the cycle is imported first in a fresh interpreter."""
import pkgutil
import subprocess
import sys

import duch_desktop.core as core


def _core_modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(core.__path__, "duch_desktop.core.")]


def test_core_imports_no_qt():
    code = (
        "import sys, importlib\n"
        f"for m in {_core_modules()!r}: importlib.import_module(m)\n"
        "bad = [m for m in sys.modules if m.startswith(('PySide6', 'PyQt', 'shiboken'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_core_is_in_rooms():
    """Every core module lives in a room (imagery, model, training, archive, research) but the
    job protocol and the file helpers shared by all of them."""
    top = sorted(m.name for m in pkgutil.iter_modules(core.__path__) if not m.ispkg)
    assert top == ["files", "jobs"], top
