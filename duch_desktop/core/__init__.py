"""Qt-free core, in rooms: imagery/, model/, training/, archive/, research/ (see docs/architecture.md);
the job protocol (jobs) and file helpers (files) are shared by all of them.

Nothing under this package may import Qt; ``tests/core/test_no_qt.py`` enforces it.
"""
