"""How much a read will decode, estimated from the file's header before anything is decoded.

A 21 KB TIFF whose 60 000 tiles all point at one deflate block decodes to 10 GB; a 1.5 MB
interlaced PNG of 40 000 x 40 000 px must be inflated whole. Such files are refused by size
(:data:`MAX_DECODE_BYTES`), not by the time they would take: for a TIFF the estimate counts
the blocks a read touches that are really stored (a sparse GeoTIFF's unwritten blocks cost
nothing) at their decoded size, or the overview GDAL reads instead; for any other format it
is the decoded size of the pixels read. The time limit of a decode is enforced by whoever
runs it in a separate process (:mod:`archive.decoding`).
"""
from __future__ import annotations

import math
import os

import numpy as np

MAX_DECODE_BYTES = 2_000_000_000  # 2 GB of decoded pixels per read; raise it for huge scenes without overviews
DECODE_SECONDS = 60.0  # per file: past this a decode is stopped and the file recorded as too slow

_TIFF_TYPES = {3: "u2", 4: "u4", 16: "u8"}
_TILE_BYTE_COUNTS, _STRIP_BYTE_COUNTS = 325, 279


def size_text(n: float) -> str:
    """Bytes as '10 GB', '2.5 GB', '740 MB'."""
    if n >= 1e10:
        return f"{n / 1e9:.0f} GB"
    if n >= 1e9:
        return f"{n / 1e9:.1f}".rstrip("0").rstrip(".") + " GB"
    return f"{max(n, 1e6) / 1e6:.0f} MB"


def over_budget(n: float, limit: float | None) -> str | None:
    """The reason to refuse a read decoding ``n`` bytes, or None when within ``limit`` (None: no limit)."""
    if limit is None or n <= limit:
        return None
    return f"decodes to {size_text(n)}, over the {size_text(limit)} limit"


def pixels_bytes(width: int, height: int, bands: int, itemsize: int) -> int:
    return int(width) * int(height) * int(bands) * int(itemsize)


def dataset_bytes(ds, path, window: tuple[int, int, int, int], bands: int, max_long: int) -> int:
    """Decoded bytes of reading ``bands`` bands of ``window`` of the open dataset ``ds`` with its long side
    brought down to ``max_long`` (GDAL then reads an overview where the file has one)."""
    c, r, w, h = window
    itemsize = np.dtype(ds.dtypes[0]).itemsize
    factor = max(w, h) / max_long if max(w, h) > max_long else 1.0
    levels = [f for f in (ds.overviews(1) if ds.count else []) if f <= factor]
    if levels:
        f = max(levels)
        return pixels_bytes(math.ceil(w / f), math.ceil(h / f), bands, itemsize)
    if ds.driver == "GTiff":
        counts = _tiff_block_bytes(path)
        got = _stored_blocks_bytes(ds, counts, window, itemsize) if counts is not None else None
        if got is not None:
            return got
    return pixels_bytes(w, h, bands, itemsize)


def _stored_blocks_bytes(ds, counts: np.ndarray, window, itemsize: int) -> int | None:
    """Decoded bytes of the stored (non-empty) blocks of the first IFD that ``window`` touches."""
    bh, bw = ds.block_shapes[0]
    nx, ny = math.ceil(ds.width / bw), math.ceil(ds.height / bh)
    if nx * ny == 0 or len(counts) % (nx * ny):
        return None
    planes = len(counts) // (nx * ny)
    per_block = bw * bh * itemsize * (1 if planes > 1 else ds.count)
    c, r, w, h = window
    grid = counts.reshape(planes, ny, nx)[:, r // bh:(r + h - 1) // bh + 1, c // bw:(c + w - 1) // bw + 1]
    return int(np.count_nonzero(grid)) * per_block


def _tiff_block_bytes(path) -> np.ndarray | None:
    """TileByteCounts (or StripByteCounts) of the first IFD of a TIFF, or None when unreadable."""
    try:
        with open(os.fspath(path), "rb") as f:
            head = f.read(16)
            order = {b"II": "<", b"MM": ">"}.get(head[:2])
            if order is None:
                return None
            version = int.from_bytes(head[2:4], "little" if order == "<" else "big")
            big = version == 43
            if version not in (42, 43):
                return None
            off = int(np.frombuffer(head[8:16] if big else head[4:8], order + ("u8" if big else "u4"))[0])
            f.seek(off)
            n = int(np.frombuffer(f.read(8 if big else 2), order + ("u8" if big else "u2"))[0])
            size = 20 if big else 12
            if not 0 < n < 10_000:
                return None
            entries = f.read(n * size)
            for k in range(n):
                e = entries[k * size:(k + 1) * size]
                tag, kind = np.frombuffer(e[:4], order + "u2")
                if tag not in (_TILE_BYTE_COUNTS, _STRIP_BYTE_COUNTS) or int(kind) not in _TIFF_TYPES:
                    continue
                dtype = np.dtype(order + _TIFF_TYPES[int(kind)])
                count = int(np.frombuffer(e[4:12] if big else e[4:8], order + ("u8" if big else "u4"))[0])
                value = e[12:20] if big else e[8:12]
                if count * dtype.itemsize <= len(value):
                    return np.frombuffer(value[:count * dtype.itemsize], dtype).copy()
                if count > 50_000_000:
                    return None
                f.seek(int(np.frombuffer(value, order + ("u8" if big else "u4"))[0]))
                data = f.read(count * dtype.itemsize)
                return np.frombuffer(data, dtype).copy() if len(data) == count * dtype.itemsize else None
    except (OSError, ValueError, IndexError):
        return None
    return None
