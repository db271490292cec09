"""The Hamming table: packed binary codes keyed by SQLite row id, searchable by distance.

:class:`HammingTable` holds either a faiss ``IndexBinaryIDMap2(IndexBinaryFlat(bits))`` (small
archives: a flat scan of 100k codes takes ~0.1 ms) or, from :attr:`HammingTable.CLUSTER_MIN` codes
on, a faiss ``IndexBinaryIVF`` whose lists are searched *exactly*: every list ``c`` carries an
upper bound ``R_c`` on the Hamming distance of its codes to its centroid, so no code of a list
can be nearer to the query ``q`` than ``d(q, c) - R_c`` (triangle inequality). Lists are read in
order of that bound; once k codes are found, only lists whose bound is below the current k-th
distance are read (see :class:`_Clustered`). The result is the true k nearest (the same multiset
of distances as a brute-force scan). Clustered codes, as a trained hashing model gives, let a
search read a few per cent of the archive (1M codes: ~0.2 ms instead of ~1.2 ms); codes with
no structure (uniform random) would make it read every list, so there the index stays flat
(:attr:`HammingTable.PAYOFF`).

Ids are SQLite row ids. Every access goes through one lock because faiss does not allow a
search while another thread adds or removes codes (the GUI searches while indexing runs).
Files are written atomically: a temp file in the same directory, then ``os.replace``.
"""
from __future__ import annotations

import math
import os
import threading
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..files import atomic_path

_FAR = 1 << 30  # "never": the lower bound of an empty list, the k-th distance before k codes are found


class HammingTable:
    """Packed binary codes keyed by integer id, searchable by Hamming distance.

    ``max_scan`` (None: exact, the default) makes searches approximate: a search reads lists
    (nearest lower bound first) until it holds about ``max_scan * ntotal`` codes, or less when
    the result is already proven exact. It applies from :attr:`CLUSTER_MIN` codes on (smaller
    indexes stay flat), and keeps the clustered form even where exact searches would not gain.
    """

    CLUSTER_MIN = 131_072  # from this many codes on, a clustered (IVF) index is tried
    PAYOFF = 0.5  # ...and kept when a typical search reads at most this share of the codes
    REGROW = 4  # clustering is tried again when the index has grown this many times since the last try

    def __init__(self, bits: int, max_scan: float | None = None):
        self.bits = bits
        self.max_scan = max_scan
        self.lock = threading.RLock()
        self._index = self._empty()  # IndexBinaryIDMap2 (flat) or _Clustered
        self._version = 0  # bumped by every change, so that a re-clustering built outside the lock is not stale
        self._retry_at = 0  # no clustering try before this many codes (nor before CLUSTER_MIN)

    def _empty(self):
        import faiss

        return faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(self.bits))

    @property
    def ntotal(self) -> int:
        with self.lock:
            return int(self._index.ntotal)

    @property
    def clustered(self) -> bool:
        """Whether searches go through the clustered (IVF) index rather than a flat scan."""
        with self.lock:
            return isinstance(self._index, _Clustered)

    def _build(self, ids: np.ndarray, codes: np.ndarray | None) -> tuple[object, int]:
        """(index holding ``codes`` under ``ids``, the size from which to try clustering again)."""
        n = len(ids)
        if n >= self.CLUSTER_MIN:  # one thread: OpenMP on busy cores is far slower, not faster
            clustered = _single_thread(_Clustered.build, ids, codes, self.bits)
            if self.max_scan is not None or _single_thread(clustered.median_read, codes) <= self.PAYOFF * n:
                return clustered, self.REGROW * n
        fresh = self._empty()
        if n:
            fresh.add_with_ids(codes, ids)
        return fresh, self.REGROW * n if n >= self.CLUSTER_MIN else 0

    def reset(self, ids: Sequence[int] = (), codes: np.ndarray | None = None) -> None:
        """Replace the whole content by ``codes`` (n, bits/8) uint8 under ``ids``."""
        ids = np.asarray(ids, dtype=np.int64)
        fresh = self._build(ids, _codes(codes, self.bits) if len(ids) else None)
        with self.lock:
            self._index, self._retry_at = fresh
            self._version += 1

    def update(self, remove: Sequence[int] = (), ids: Sequence[int] = (), codes: np.ndarray | None = None) -> None:
        """Drop the ids in ``remove``, then add ``codes`` under ``ids``, as one step for readers.

        When the index has outgrown its form (flat past :attr:`CLUSTER_MIN` codes, or
        :attr:`REGROW` times bigger than at the last clustering try), it is rebuilt from a snapshot
        outside the lock, so that searches go on meanwhile, and swapped in unless it changed.
        """
        remove = np.asarray(remove, dtype=np.int64)
        with self.lock:
            if len(remove):
                self._index.remove_ids(remove)
            if len(ids):
                self._index.add_with_ids(_codes(codes, self.bits), np.asarray(ids, dtype=np.int64))
            self._version += 1
            version, n = self._version, int(self._index.ntotal)
            snapshot = _contents(self._index) if n >= max(self.CLUSTER_MIN, self._retry_at) else None
        if snapshot is not None:
            fresh = self._build(*snapshot)
            with self.lock:
                if self._version == version:
                    self._index, self._retry_at = fresh

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
            if isinstance(self._index, _Clustered):
                dist, ids = _single_thread(self._index.search, q, kk, self.max_scan)
            else:
                dist, ids = _single_thread(self._index.search, q, kk)
        pairs = sorted((d, i) for d, i in zip(dist[0].tolist(), ids[0].tolist()) if i >= 0 and i not in exclude)
        if radius is not None:
            pairs = [p for p in pairs if p[0] <= radius]
        return [(i, d) for d, i in pairs[:k]]

    def save(self, path: Path) -> None:
        """Write atomically to ``path`` (see :func:`files.atomic_path`)."""
        import faiss

        with atomic_path(path) as tmp:
            with self.lock:
                index = self._index.ivf if isinstance(self._index, _Clustered) else self._index
                faiss.write_index_binary(index, tmp)
                expected = int(index.ntotal) * (self.bits // 8 + 8)  # codes and ids, before any header
            _check_written(tmp, expected)

    @classmethod
    def load(cls, path: Path, bits: int) -> "HammingTable | None":
        """The index stored at ``path``, or None when it is missing, unreadable or of other bits.

        A flat file of :attr:`CLUSTER_MIN` codes or more (written before the clustered form
        existed) is clustered in memory; the next save writes the clustered form.
        """
        import faiss

        if not Path(path).is_file():
            return None
        try:
            index = faiss.read_index_binary(str(path))
        except Exception:  # noqa: BLE001 - faiss raises RuntimeError for any damage; we rebuild
            return None
        out = cls(bits)
        if isinstance(index, faiss.IndexBinaryIDMap2) and index.d == bits:
            if index.ntotal >= cls.CLUSTER_MIN:
                out._index, out._retry_at = out._build(*_contents(index))
            else:
                out._index = index
        elif isinstance(index, faiss.IndexBinaryIVF) and index.d == bits:
            try:
                out._index = _Clustered(index)
            except Exception:  # noqa: BLE001 - inconsistent lists: rebuild from SQLite
                return None
            out._retry_at = cls.REGROW * out._index.ntotal
        else:
            return None
        return out


class _Clustered:
    """An ``IndexBinaryIVF`` searched exactly, with each list's radius bound and size.

    ``radius[c]`` >= the Hamming distance between centroid ``c`` and any code in list ``c``
    (removals leave it as an upper bound; -1 for a list that never held a code).
    """

    def __init__(self, ivf, radius: np.ndarray | None = None, clustered_at: int | None = None):
        import faiss

        self.ivf = ivf
        self.nlist = int(ivf.nlist)
        self.centroids = faiss.vector_to_array(faiss.downcast_IndexBinary(ivf.quantizer).xb).reshape(
            self.nlist, ivf.code_size)
        if radius is None:  # a loaded index: measure each list
            radius = np.full(self.nlist, -1, dtype=np.int64)
            for c in range(self.nlist):
                codes = self._list(c)[1]
                if len(codes):
                    radius[c] = hamming(codes, self.centroids[c]).max()
        self.radius = radius
        self.sizes = self._sizes()
        self._zeros = np.zeros(self.nlist, dtype=np.int32)
        self.clustered_at = int(ivf.ntotal) if clustered_at is None else clustered_at
        self.last_read = 0  # codes read by the last search (for the benchmark)

    @classmethod
    def build(cls, ids: np.ndarray, codes: np.ndarray, bits: int) -> "_Clustered":
        """Cluster ``codes`` (binary k-means on a sample, ~sqrt(n)/4 lists) and add them all."""
        import faiss

        n = len(ids)
        nlist = int(min(n, 1024, max(16, round(math.sqrt(n) / 4))))
        ivf = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(bits), bits, nlist)
        ivf.cp.niter = 10
        ivf.cp.min_points_per_centroid = 1  # tiny test archives: no faiss warning
        rng = np.random.default_rng(0)
        sample = codes[np.sort(rng.choice(n, min(n, 40 * nlist), replace=False))]
        ivf.train(sample)
        out = cls(ivf, np.full(nlist, -1, dtype=np.int64), n)
        out.add_with_ids(codes, ids)
        return out

    @property
    def ntotal(self) -> int:
        return int(self.ivf.ntotal)

    def _list(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, codes) of list ``c``, copied."""
        import faiss

        inv = self.ivf.invlists
        m = int(inv.list_size(c))
        if m == 0:
            return np.empty(0, np.int64), np.empty((0, self.ivf.code_size), np.uint8)
        ids = faiss.rev_swig_ptr(inv.get_ids(c), m).copy()
        codes = faiss.rev_swig_ptr(inv.get_codes(c), m * self.ivf.code_size).copy()
        return ids, codes.reshape(m, self.ivf.code_size)

    def _sizes(self) -> np.ndarray:
        inv = self.ivf.invlists
        sizes = np.array([inv.list_size(c) for c in range(self.nlist)], dtype=np.int64)
        self._penalty = np.where(sizes > 0, 0, _FAR)  # an empty list's bound: never read
        self._nonempty = int((sizes > 0).sum())
        return sizes

    def median_read(self, codes: np.ndarray, trials: int = 32, k: int = 20) -> float:
        """Median number of codes a search reads, for ``trials`` of ``codes`` as queries."""
        rng = np.random.default_rng(1)
        reads = []
        for i in rng.choice(len(codes), min(trials, len(codes)), replace=False):
            self.search(np.ascontiguousarray(codes[i:i + 1]), k)
            reads.append(self.last_read)
        return float(np.median(reads))

    def contents(self) -> tuple[np.ndarray, np.ndarray]:
        parts = [self._list(c) for c in range(self.nlist)]
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))

    def add_with_ids(self, codes: np.ndarray, ids: np.ndarray) -> None:
        import faiss

        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        dist, assign = _single_thread(self.ivf.quantizer.search, codes, 1)
        assign = np.ascontiguousarray(assign[:, 0], dtype=np.int64)
        np.maximum.at(self.radius, assign, dist[:, 0].astype(np.int64))
        self.ivf.add_core(len(ids), faiss.swig_ptr(codes), faiss.swig_ptr(ids), faiss.swig_ptr(assign))
        self.sizes = self._sizes()

    def remove_ids(self, ids: np.ndarray) -> None:
        self.ivf.remove_ids(ids)
        self.sizes = self._sizes()

    def _probe(self, q: np.ndarray, k: int, lists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(distances, ids) of the k nearest in ``lists``, nearest first (fewer when they hold < k)."""
        import faiss

        dist = np.empty(k, dtype=np.int32)
        ids = np.empty(k, dtype=np.int64)
        self.ivf.nprobe = len(lists)
        # the C++ method (faiss renames it when it wraps it for numpy); the binary scanner
        # does not use centroid distances: zeros
        raw = getattr(self.ivf, "search_preassigned_c", None) or self.ivf.search_preassigned
        raw(1, faiss.swig_ptr(q), k, faiss.swig_ptr(lists), faiss.swig_ptr(self._zeros),
            faiss.swig_ptr(dist), faiss.swig_ptr(ids), False)
        n = int(np.count_nonzero(ids >= 0))  # faiss puts missing results (-1) last
        return dist[:n], ids[:n]

    def search(self, q: np.ndarray, k: int, max_scan: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(distances (1, m), ids (1, m)) holding the ``k`` nearest codes (m >= k, unsorted).

        Lists are read nearest lower bound first: first enough lists for a few times ``k`` codes
        (at least 1/64 of the index); their k-th distance ``dk`` then rules out every list whose
        bound is >= dk, and the remaining lists are read in a second pass. With ``max_scan``
        both passes stop after about ``max_scan * ntotal`` codes (approximate).
        """
        import faiss

        to_centroid = np.empty(self.nlist, dtype=np.int32)
        faiss.hammings(faiss.swig_ptr(q), faiss.swig_ptr(self.centroids), 1, self.nlist, self.ivf.code_size,
                       faiss.swig_ptr(to_centroid))
        bound = to_centroid - self.radius + self._penalty
        order = np.argsort(bound * (self.ivf.d + 1) + to_centroid)[:self._nonempty]  # by bound, then centroid
        bound = bound[order]
        read = np.cumsum(self.sizes[order])
        cap = len(order)
        if max_scan is not None:
            cap = min(cap, int(np.searchsorted(read, max(k, max_scan * read[-1]))) + 1)
        first = min(cap, int(np.searchsorted(read, max(8 * k, read[-1] // 64))) + 1)
        dist, ids = self._probe(q, k, order[:first])
        dk = int(dist[k - 1]) if len(dist) >= k else _FAR
        last = max(first, min(cap, int(np.searchsorted(bound, dk))))  # lists first..last-1 have bound < dk
        self.last_read = int(read[last - 1])
        if last > first:
            d2, i2 = self._probe(q, k, order[first:last])
            dist, ids = np.concatenate([dist, d2]), np.concatenate([ids, i2])
        return dist[None], ids[None]


def _contents(index) -> tuple[np.ndarray, np.ndarray]:
    """(ids, codes) held by a flat IDMap2 index or a :class:`_Clustered` one."""
    import faiss

    if isinstance(index, _Clustered):
        return index.contents()
    flat = faiss.downcast_IndexBinary(index.index)
    ids = faiss.vector_to_array(index.id_map).astype(np.int64)
    return ids, faiss.vector_to_array(flat.xb).reshape(len(ids), flat.code_size)


def _single_thread(fn, *args):
    """Run a faiss search with one OpenMP thread in the calling thread, then restore its setting.

    A single query gains little from threads, and when the cores are busy (indexing runs
    while the GUI searches) OpenMP's wake-up/spin costs 100+ ms instead of ~2 ms for 1M codes.
    The OpenMP thread count is per calling thread, so other threads are unaffected.
    """
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return fn(*args)
    finally:
        faiss.omp_set_num_threads(before)


def _codes(codes: np.ndarray | None, bits: int) -> np.ndarray:
    a = np.ascontiguousarray(codes, dtype=np.uint8)
    if a.ndim != 2 or a.shape[1] * 8 != bits:
        raise ValueError(f"expected packed codes of {bits} bits, got shape {a.shape}")
    return a


def hamming(a: np.ndarray, b: np.ndarray, chunk_bytes: int = 1 << 26) -> np.ndarray:
    """Hamming distances between packed uint8 codes ``a`` (n, B) and ``b`` (m, B) -> int32 (n, m).

    The one Hamming function of the package (the archive's tables, the research metrics); rows of
    ``a`` are taken ``chunk_bytes`` of XOR at a time so that big evaluations stay in memory.
    """
    a, b = np.atleast_2d(np.asarray(a, np.uint8)), np.atleast_2d(np.asarray(b, np.uint8))
    out = np.empty((len(a), len(b)), np.int32)
    step = max(1, chunk_bytes // max(1, b.size))
    for s in range(0, len(a), step):
        out[s:s + step] = np.bitwise_count(a[s:s + step, None, :] ^ b[None, :, :]).sum(-1, dtype=np.int32)
    return out


def _check_written(tmp: str, expected: int) -> None:
    """OSError unless ``tmp`` really holds more than ``expected`` bytes on disk.

    faiss reports a failed write on a full disk only on stderr ("close error") and returns; the
    size check and the fsync (which surfaces a delayed ENOSPC) keep a short file from replacing
    a good one.
    """
    import errno

    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if size <= expected:
        raise OSError(errno.ENOSPC, f"faiss wrote {size} of at least {expected + 1} bytes (disk full?)", tmp)
