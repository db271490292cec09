"""File helpers every room shares: atomic writes, paths shown as text, the user cache dir, the
installation's resources folder.

Every file the app writes (model bundles, faiss files, thumbnails, feature caches, exports,
results) goes through :func:`atomic_path`: a temp file ``.<name>.<random>.tmp`` in the same
folder, then ``os.replace``, so an interrupted write never leaves half a file under the real
name (and a killed one leaves only a temp file the next run can recognise by its name).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

APP_NAME = "duch-desktop"  # names the per-user data, cache and settings folders
# The repository's resources/, or the bundle's: PyInstaller puts the package and resources/ side by side too.
_RESOURCES = Path(__file__).resolve().parents[2] / "resources"


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """A temp path next to ``path`` to write; moved onto ``path`` when the block ends without error,
    removed when it raises. The file gets the permissions of a newly created file (0666 less the
    umask: 0644 usually), as a bundle or an export is meant to be shared (``mkstemp`` makes it private)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str, newline: str | None = None) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline=newline) as f:
        f.write(text)


def unlink_quietly(path: str | os.PathLike) -> None:
    """Remove a file if it is there; a file that cannot be removed stays (a cache entry, a temp file)."""
    try:
        os.unlink(path)
    except OSError:
        pass


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (model weights, exported graphs)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def display_path(path: str | bytes | os.PathLike) -> str:
    """A path or file name as printable text: bytes that are not UTF-8 appear as ``\\xNN`` (never an
    encode error), so SQLite, Qt, a terminal and a CSV file can all hold it."""
    raw = bytes(path) if isinstance(path, (bytes, bytearray, memoryview)) else os.fsencode(path)
    return raw.decode("utf-8", "backslashreplace")


def user_cache(sub: str) -> Path:
    """``sub`` in the app's per-user cache dir (feature cache, ONNX graphs, caption banks): what we
    write there can always be made again, unlike the indexes under the data dir."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir(APP_NAME)) / sub


def resources_dir() -> Path:
    """The installation's read-only ``resources`` folder (default model, demo, icons, shipped ONNX graphs)."""
    return _RESOURCES
