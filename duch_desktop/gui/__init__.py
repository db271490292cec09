"""Qt desktop front-end (PySide6). All logic lives in the Qt-free ``duch_desktop.core``."""
