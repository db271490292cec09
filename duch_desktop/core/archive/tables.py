"""The archive's two Hamming tables (tiles, captions) kept in step with SQLite and their faiss files.

``which`` is "tiles" or "captions"; each has a :class:`hamming.HammingTable` and the database
generation it reflects (the tables' counters live in ``meta`` as ``<which>_gen``). SQLite is
the source of truth: a faiss file that is missing, unreadable or older than the database
(``<which>_faiss_gen`` behind ``<which>_gen``) is rebuilt from it.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Sequence

import numpy as np

from .database import FAISS_FILES, Database
from .hamming import HammingTable


class HammingTables:
    """The tiles' and captions' :class:`HammingTable` of one index directory, ``bits`` wide."""

    def __init__(self, index_dir: Path, bits: int):
        self.index_dir, self.bits = Path(index_dir), int(bits)
        self._codes: dict[str, HammingTable] = {}
        self._gens: dict[str, int] = {}

    def __getitem__(self, which: str) -> HammingTable:
        return self._codes[which]

    def load(self, db: Database, which: str) -> None:
        """Load the faiss file of ``which``, rebuilding it from SQLite when not in step with it."""
        gen = int(db.get_meta(f"{which}_gen", 0))
        index = HammingTable.load(self.index_dir / FAISS_FILES[which], self.bits)
        if index is None or index.ntotal != db.count_codes(which) or db.get_meta(f"{which}_faiss_gen") != gen:
            index = self._codes[which] = self._rebuild(db, which)
            self.save(db, which, gen)
        self._codes[which], self._gens[which] = index, gen

    def _rebuild(self, db: Database, which: str) -> HammingTable:
        index = HammingTable(self.bits)
        index.reset(*codes_from_rows(db.codes(which), self.bits))
        return index

    def save(self, db: Database, which: str, gen: int | None = None) -> None:
        """Write one faiss file, then record which database generation it reflects."""
        gen = self._gens[which] if gen is None else gen
        try:
            self._codes[which].save(self.index_dir / FAISS_FILES[which])
            db.set_meta(f"{which}_faiss_gen", gen)
        except (OSError, RuntimeError, sqlite3.Error):
            pass  # a read-only index still works; the next writable open rebuilds the file

    def sync(self, db: Database, which: str) -> None:
        """Make the in-memory index match SQLite (e.g. after an interrupted batch) and save it."""
        gen = int(db.get_meta(f"{which}_gen", 0))
        if gen != self._gens[which] or self._codes[which].bits != self.bits:
            self._codes[which], self._gens[which] = self._rebuild(db, which), gen
        self.save(db, which, gen)

    def clear(self, which: str, gen: int, bits: int) -> None:
        """Start ``which`` empty at ``bits`` (every code was dropped in generation ``gen``)."""
        self.bits = int(bits)
        self._codes[which], self._gens[which] = HammingTable(self.bits), gen

    def update(self, which: str, gen: int, remove: Sequence[int] = (), ids: Sequence[int] = (),
               codes: np.ndarray | None = None) -> None:
        """Apply a committed change of generation ``gen``: drop ``remove``, add ``codes`` under ``ids``."""
        self._codes[which].update(remove=remove, ids=ids, codes=codes)
        self._gens[which] = gen


def codes_from_rows(rows: Sequence[tuple[int, bytes]], bits: int) -> tuple[list[int], np.ndarray]:
    """``[(id, code blob)]`` -> (ids, uint8 (n, bits/8)) ready for :meth:`HammingTable.reset`."""
    ids = [r[0] for r in rows]
    codes = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.uint8).reshape(len(rows), bits // 8)
    return ids, codes
