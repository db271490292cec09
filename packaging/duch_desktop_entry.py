"""Entry point of the packaged app (PyInstaller): the GUI, or the ``duch`` CLI when started as ``duch``.

The one-folder bundle has one executable, ``duch-desktop``; ``build_linux.sh`` adds a ``duch``
symlink next to it (Linux/macOS). ``duch-desktop --cli ARGS`` runs the CLI too (e.g. on Windows).
"""
import multiprocessing
import os
import sys


def main() -> int:
    multiprocessing.freeze_support()  # DataLoader decoding workers (spawn on Windows/macOS)
    name = os.path.splitext(os.path.basename(sys.argv[0]))[0].lower()
    if name == "duch" or sys.argv[1:2] == ["--cli"]:
        from duch_desktop.cli import main as cli_main

        args = sys.argv[1:]
        if args[:1] == ["--cli"]:
            args = args[1:]
        sys.argv[0] = "duch"
        return cli_main(args)
    from duch_desktop.gui.app import main as gui_main

    return gui_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
