"""Before Qt starts: can its X11 (xcb) platform plugin load? Qt itself answers a missing system
library with an abort and a hint few users can act on; this names the Debian/Ubuntu packages.

No Qt import here: it runs before the QApplication exists (a failed platform load kills the process).
"""
from __future__ import annotations

import ctypes
import os
import sys
from typing import Callable

# The libraries Qt 6's xcb plugin loads (libQt6XcbQpa and the plugin itself, `ldd`), with the
# Debian/Ubuntu package that ships each; Fedora and others use similar names (xcb-util-cursor ...).
XCB_LIBRARIES = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libX11.so.6": "libx11-6",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libEGL.so.1": "libegl1",
    "libfontconfig.so.1": "libfontconfig1",
    "libdbus-1.so.3": "libdbus-1-3",
}


def uses_xcb(environ=os.environ, platform: str = sys.platform) -> bool:
    """Whether Qt will pick its xcb plugin here (Linux, no other platform asked for, not Wayland)."""
    if not platform.startswith("linux"):
        return False
    asked = environ.get("QT_QPA_PLATFORM", "")
    if asked:
        return asked.split(";")[0].split(":")[0] == "xcb"
    return not (environ.get("WAYLAND_DISPLAY") and environ.get("XDG_SESSION_TYPE") == "wayland")


def _loads(soname: str) -> bool:
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def missing_packages(loads: Callable[[str], bool] | None = None) -> list[str]:
    """Debian/Ubuntu packages whose library the xcb plugin needs and the dynamic loader cannot find."""
    loads = loads or _loads
    return sorted({package for soname, package in XCB_LIBRARIES.items() if not loads(soname)})


def platform_problem(environ=os.environ, platform: str = sys.platform,
                     loads: Callable[[str], bool] | None = None) -> str | None:
    """A plain explanation when the window cannot open on this machine, else None."""
    if not uses_xcb(environ, platform):
        return None
    missing = missing_packages(loads)
    if missing:
        return ("the desktop window cannot start: Qt's X11 platform plugin needs system libraries that are "
                f"not installed. On Debian/Ubuntu: sudo apt-get install {' '.join(missing)} "
                "(the `duch` command line works without them)")
    if not environ.get("DISPLAY") and not environ.get("QT_QPA_PLATFORM"):
        return ("the desktop window cannot start: there is no display (DISPLAY is not set). Run it in a desktop "
                "session, or use the `duch` command line; `duch-desktop --self-test` checks an install without one")
    return None
