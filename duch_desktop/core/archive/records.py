"""What the archive answers with: search results, captions, stored tile records, its statistics."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from ..imagery import reading as imagery
from ..imagery.chips import ChipOptions


@dataclass
class Hit:
    """One search result; ``rel`` is printable, ``path`` is the real file (may hold surrogates).

    A chip of a scene has its ``window`` ``(col_off, row_off, width, height)`` in pixels of the
    file and ``footprint`` of the window; ``scene_size`` is the file's ``(width, height)``.
    """

    tile_id: int
    rel: str
    path: Path
    distance: int
    footprint: list | None = None
    rank: int = 0
    window: tuple[int, int, int, int] | None = None
    scene_size: tuple[int, int] | None = None


@dataclass
class CaptionHit:
    """A caption of the caption archive and its Hamming distance to the query image."""

    text: str
    distance: int
    source: str


@dataclass
class TileRecord:
    """Everything stored about one scanned file, or one chip of a scene.

    For a chip, ``window`` is its pixel window, ``footprint`` the window's, while ``meta``,
    ``size``, ``content_hash`` and ``scene_size`` describe the whole file.
    """

    tile_id: int
    rel: str
    path: Path
    size: int
    mtime_ns: int
    status: str
    error: str | None
    meta: imagery.TileMeta | None
    footprint: list | None
    content_hash: str | None
    window: tuple[int, int, int, int] | None = None
    scene_size: tuple[int, int] | None = None


@dataclass
class ArchiveStats:
    """Counts, model, encoders, options, root, on-disk size of the index and last run time.

    ``tiles`` counts searchable tiles, chips included (``chips`` of them, from ``scenes`` files);
    ``errors`` the unreadable files and chips, ``pending`` those still to encode, ``nodata`` the
    chips skipped for lack of valid pixels. ``stale``: built with another hashing model than
    ``loaded_model``. ``chip_options`` is None when every file is one tile.
    """

    root: str
    index_dir: str
    tiles: int
    errors: int
    pending: int
    nodata: int
    chips: int
    scenes: int
    captions: int
    bits: int
    model_fingerprint: str | None
    loaded_model: str
    model_dir: str | None
    stale: bool
    image_encoder: str
    text_encoder: str
    options: dict
    chip_options: ChipOptions | None
    index_bytes: int
    last_indexed: str | None

    def to_dict(self) -> dict:
        """Plain JSON-able values (``chip_options`` as ``{"chip", "overlap", "chip_m"}`` or None)."""
        return asdict(self)


def window_of_row(row: Sequence) -> tuple[int, int, int, int] | None:
    return None if row[0] is None else tuple(int(v) for v in row)


def size_of(w, h) -> tuple[int, int] | None:
    return None if w is None or h is None else (int(w), int(h))
