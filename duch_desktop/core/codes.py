"""The Hamming code index: packed binary codes keyed by SQLite row id, searchable by distance.

:class:`CodeIndex` wraps a faiss ``IndexBinaryIDMap2(IndexBinaryFlat(bits))`` whose ids are
SQLite row ids. Every access goes through one lock because faiss does not allow a search
while another thread adds or removes codes (the GUI searches while indexing runs). Files are
written atomically: a temp file in the same directory, then ``os.replace``.
"""
from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np


class CodeIndex:
    """Packed binary codes keyed by integer id, searchable by Hamming distance."""

    def __init__(self, bits: int):
        self.bits = bits
        self.lock = threading.RLock()
        self._index = self._empty()

    def _empty(self):
        import faiss

        return faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(self.bits))

    @property
    def ntotal(self) -> int:
        with self.lock:
            return int(self._index.ntotal)

    def reset(self, ids: Sequence[int] = (), codes: np.ndarray | None = None) -> None:
        """Replace the whole content by ``codes`` (n, bits/8) uint8 under ``ids``."""
        fresh = self._empty()
        if len(ids):
            fresh.add_with_ids(_codes(codes, self.bits), np.asarray(ids, dtype=np.int64))
        with self.lock:
            self._index = fresh

    def update(self, remove: Sequence[int] = (), ids: Sequence[int] = (), codes: np.ndarray | None = None) -> None:
        """Drop the ids in ``remove``, then add ``codes`` under ``ids``, as one step for readers."""
        remove = np.asarray(remove, dtype=np.int64)
        with self.lock:
            if len(remove):
                self._index.remove_ids(remove)
            if len(ids):
                self._index.add_with_ids(_codes(codes, self.bits), np.asarray(ids, dtype=np.int64))

    def search(self, code: np.ndarray, k: int, radius: int | None = None,
               exclude: Iterable[int] = ()) -> list[tuple[int, int]]:
        """``[(id, hamming distance)]`` of the ``k`` nearest codes, nearest first.

        ``radius`` keeps only distances <= radius; ids in ``exclude`` are skipped (the query
        tile itself). Ties are ordered by id so that results are reproducible.
        """
        exclude = set(exclude)
        q = _codes(np.asarray(code).reshape(1, -1), self.bits)
        with self.lock:
            n = int(self._index.ntotal)
            if n == 0 or k <= 0:
                return []
            kk = min(n, k + len(exclude))
            dist, ids = _single_thread_search(self._index, q, kk)
        pairs = sorted((int(d), int(i)) for d, i in zip(dist[0], ids[0]) if i >= 0 and int(i) not in exclude)
        if radius is not None:
            pairs = [p for p in pairs if p[0] <= radius]
        return [(i, d) for d, i in pairs[:k]]

    def save(self, path: Path) -> None:
        """Write atomically to ``path`` (temp file in the same folder + os.replace)."""
        import faiss

        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            with self.lock:
                faiss.write_index_binary(self._index, tmp)
            os.replace(tmp, path)
        except BaseException:
            _unlink(tmp)
            raise

    @classmethod
    def load(cls, path: Path, bits: int) -> "CodeIndex | None":
        """The index stored at ``path``, or None when it is missing, unreadable or of other bits."""
        import faiss

        if not Path(path).is_file():
            return None
        try:
            index = faiss.read_index_binary(str(path))
        except Exception:  # noqa: BLE001 - faiss raises RuntimeError for any damage; we rebuild
            return None
        if not isinstance(index, faiss.IndexBinaryIDMap2) or index.d != bits:
            return None
        out = cls(bits)
        out._index = index
        return out


def _single_thread_search(index, q: np.ndarray, k: int):
    """Search with one OpenMP thread in the calling thread, then restore its setting.

    A single query gains little from threads, and when the cores are busy (indexing runs
    while the GUI searches) OpenMP's wake-up/spin costs 100+ ms instead of ~2 ms for 1M codes.
    The OpenMP thread count is per calling thread, so other threads are unaffected.
    """
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return index.search(q, k)
    finally:
        faiss.omp_set_num_threads(before)


def _codes(codes: np.ndarray | None, bits: int) -> np.ndarray:
    a = np.ascontiguousarray(codes, dtype=np.uint8)
    if a.ndim != 2 or a.shape[1] * 8 != bits:
        raise ValueError(f"expected packed codes of {bits} bits, got shape {a.shape}")
    return a


def _unlink(path: str | Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def blob_to_code(blob: bytes) -> np.ndarray:
    """A code stored in SQLite -> uint8 (bits/8,)."""
    return np.frombuffer(blob, dtype=np.uint8)


def codes_from_rows(rows: Sequence[tuple[int, bytes]], bits: int) -> tuple[list[int], np.ndarray]:
    """``[(id, code blob)]`` -> (ids, uint8 (n, bits/8)) ready for :meth:`CodeIndex.reset`."""
    ids = [r[0] for r in rows]
    codes = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.uint8).reshape(len(rows), bits // 8)
    return ids, codes


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between packed codes ``a`` (n, B) and ``b`` (m, B) -> int (n, m)."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    x = np.bitwise_xor(a[:, None, :], b[None, :, :])
    return np.unpackbits(x, axis=2).sum(axis=2).astype(np.int64)
