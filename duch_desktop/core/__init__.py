"""Qt-free core: imagery, encoders, hashing, index, search, evaluation.

Nothing under this package may import Qt; ``tests/core/test_no_qt.py`` enforces it.
"""
