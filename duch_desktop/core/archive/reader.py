"""The work of one indexing run (files and chips to encode) and the dataset that decodes it.

:class:`Work` is built by the planning step: a flat list of items, each a whole file or one
chip window of a scene, kept as numpy arrays (a 20 000 x 20 000 px scene has thousands of
chips). :class:`TileReader` is the map-style dataset the decoding processes (:mod:`decoding`)
and Ray read items from; it never raises, errors are data.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..imagery import reading as imagery
from ..files import display_path
from ..imagery.chips import window_text
from ..imagery.budget import MAX_DECODE_BYTES

NODATA_REASON = "all pixels are nodata"  # imagery's reason for a window without a valid pixel


@dataclass
class FileTodo:
    """A scanned file that needs work, with its rows before this run."""

    entry: imagery.ScanEntry
    rows: list  # (id, rel_bytes, size, mtime_ns, content_hash, status, win_col, win_row, win_w, win_h)


class Work:
    """Items to decode and encode: ``item_file`` (index into ``entries``), ``item_id`` (the chip's
    row id, -1 for a whole file, whose row is written when encoded) and ``item_win`` (the window,
    -1s for a whole file). ``remaining``/``fine`` let the run count a file once all its items are in."""

    def __init__(self) -> None:
        self.entries: list[imagery.ScanEntry] = []
        self.paths: list[bytes] = []
        self.known: list[bool] = []
        self.total = 0
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.item_file = np.zeros(0, np.int64)
        self.item_id = np.zeros(0, np.int64)
        self.item_win = np.zeros((0, 4), np.int64)
        self.remaining: list[int] = []
        self.fine: list[bool] = []

    def add_file(self, entry: imagery.ScanEntry, known: bool, ids: np.ndarray | None = None,
                 windows: np.ndarray | None = None) -> None:
        """Add a whole file (no ``ids``) or the chips ``windows`` (n, 4) of a scene, rows ``ids``."""
        f = len(self.entries)
        self.entries.append(entry)
        self.paths.append(os.fsencode(entry.path))
        self.known.append(known)
        if ids is None:
            ids, windows = np.full(1, -1, np.int64), np.full((1, 4), -1, np.int64)
        n = len(ids)
        self._parts.append((np.full(n, f, np.int64), np.asarray(ids, np.int64),
                            np.asarray(windows, np.int64).reshape(n, 4)))
        self.remaining.append(n)
        self.fine.append(False)
        self.total += n

    def finish(self) -> "Work":
        """Pack the items into flat arrays (call once all files are added)."""
        if self._parts:
            self.item_file, self.item_id, self.item_win = (np.concatenate(p) for p in zip(*self._parts))
        self._parts = []
        return self

    def window(self, i: int) -> tuple[int, int, int, int] | None:
        w = self.item_win[i]
        return None if w[0] < 0 else tuple(int(v) for v in w)

    def label(self, i: int) -> str:
        """Printable name of item ``i``: the file, plus the window of a chip."""
        rel = display_path(os.fsencode(self.entries[int(self.item_file[i])].rel))
        window = self.window(i)
        return f"{rel} [{window_text(window)}]" if window else rel


class TileReader:
    """Map-style dataset of the run's items: decodes one item, never raises (errors are data).

    A whole file also gets its content hash and header facts; a chip (its row already holds
    them) only its pixels, read through a rasterio window. A chip without any valid pixel, or
    all black (the collar of a scene that declares no nodata value, the unwritten blocks of a
    sparse GeoTIFF), is ``nodata``, not an error.
    """

    def __init__(self, work: Work, size: int, bands, stretch: str, max_bytes: float | None = MAX_DECODE_BYTES):
        self.work, self.size, self.stretch, self.max_bytes = work, size, stretch, max_bytes
        self.bands = tuple(bands) if bands else None

    def __len__(self) -> int:
        return self.work.total

    @staticmethod
    def failed(i: int, reason: str) -> dict:
        """The item ``i`` as unreadable for ``reason`` (what a decode that never came back gives)."""
        return {"i": i, "pixels": None, "meta": None, "hash": None, "error": reason, "nodata": False}

    def __getitem__(self, i: int) -> dict:
        path = Path(os.fsdecode(self.work.paths[int(self.work.item_file[i])]))
        window = self.work.window(i)
        out = self.failed(i, None)
        try:
            if window is None:
                out["hash"] = imagery.quick_hash(path)
            out["pixels"], meta = imagery.read_tile(path, size=self.size, bands=self.bands, window=window,
                                                    stretch=self.stretch, max_bytes=self.max_bytes)
            if window is None:
                out["meta"] = meta.to_dict()
            elif not out["pixels"].any():  # all black: outside the valid area of a scene without nodata
                out["nodata"] = True
        except (imagery.ImageryError, ValueError) as e:  # ValueError: e.g. band 4 of a 3-band file
            if window is not None and str(e) == NODATA_REASON:
                out["nodata"] = True
            else:
                out["error"] = str(e) or type(e).__name__
        except Exception as e:  # noqa: BLE001 - one odd file must never stop an indexing run
            out["error"] = f"unexpected error: {type(e).__name__}: {e}"[:200]
        if out["error"] is not None or out["nodata"]:
            out["pixels"] = None
        return out
