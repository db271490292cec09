"""DUCH Desktop: offline cross-modal (text <-> image) hashing search over local imagery."""

__version__ = "0.1.0"
