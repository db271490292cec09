"""Query side of an archive: the Hamming index, query -> code, and the archive's read methods.

:class:`ArchiveQueries` holds everything :class:`index.Archive` answers without writing
(search, similar, captions, tile records, thumbnails, stats); ``index.py`` keeps opening and
indexing. Each thread reads through its own SQLite connection (``self._db()``).

:class:`CodeIndex` wraps a faiss ``IndexBinaryIDMap2(IndexBinaryFlat(bits))`` whose ids are
SQLite row ids. Every access goes through one lock because faiss does not allow a search
while another thread adds or removes codes (the GUI searches while indexing runs). Files are
written atomically: a temp file in the same directory, then ``os.replace``.
"""
from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from . import imagery
from .jobs import UserError

DEFAULT_INPUT_SIZE = 224  # side of the square tile fed to an encoder that does not say


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


# --------------------------------------------------------------------------- query -> code

def text_code(model, text_encoder, text: str) -> np.ndarray:
    """Packed code (1, bits/8) of one typed query; an empty query is a :class:`UserError`."""
    if not isinstance(text, str) or not text.strip():
        raise UserError("type a description to search")
    feats = text_encoder.encode([" ".join(text.split())])
    return model.text_codes(feats)


def image_code(model, image_encoder, path: Path, bands=None, stretch: str = "auto") -> np.ndarray:
    """Packed code (1, bits/8) of any image file, read as the archive reads its tiles.

    When the archive's band choice does not fit this file (an RGB photo queried against a
    13-band archive), the file's own first bands are used instead.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"image not found: {os.fsdecode(path)}")
    size = int(getattr(image_encoder, "input_size", DEFAULT_INPUT_SIZE))
    try:
        try:
            pixels, _ = imagery.read_tile(path, size=size, bands=bands, stretch=stretch)
        except ValueError:
            if bands is None:
                raise
            pixels, _ = imagery.read_tile(path, size=size, bands=None, stretch=stretch)
    except imagery.ImageryError as e:
        raise UserError(f"cannot read {os.fsdecode(path)}: {e}") from e
    except ValueError as e:
        raise UserError(str(e)) from e
    return model.image_codes(image_encoder.encode(pixels[None]))


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between packed codes ``a`` (n, B) and ``b`` (m, B) -> int (n, m)."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    x = np.bitwise_xor(a[:, None, :], b[None, :, :])
    return np.unpackbits(x, axis=2).sum(axis=2).astype(np.int64)


# --------------------------------------------------------------------------- records

@dataclass
class Hit:
    """One search result; ``rel`` is printable, ``path`` is the real file (may hold surrogates)."""

    tile_id: int
    rel: str
    path: Path
    distance: int
    footprint: list | None = None
    rank: int = 0


@dataclass
class CaptionHit:
    """A caption of the caption archive and its Hamming distance to the query image."""

    text: str
    distance: int
    source: str


@dataclass
class TileRecord:
    """Everything stored about one scanned file."""

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


def display_rel(rel_bytes: bytes) -> str:
    """A file name as text SQLite and Qt can hold: undecodable bytes shown as ``\\xNN``."""
    return bytes(rel_bytes).decode("utf-8", "backslashreplace")


def get_meta(conn: sqlite3.Connection, key: str, default=None):
    """One value of the archive's ``meta`` table."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return default if row is None else row[0]


def set_meta(conn: sqlite3.Connection, key: str, value) -> None:
    """Set (or, with None, delete) one ``meta`` value."""
    if value is None:
        conn.execute("DELETE FROM meta WHERE key = ?", (key,))
    else:
        conn.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                     (key, value))


# --------------------------------------------------------------------------- archive reads

class ArchiveQueries:
    """Read-side methods of :class:`index.Archive` (a mixin: state lives in Archive)."""

    THUMB_SIZE = 256

    @property
    def options(self) -> dict:
        """Band/stretch options the tiles were read with."""
        opts = json.loads(get_meta(self._db(), "options") or "{}")
        return {"bands": opts.get("bands"), "stretch": opts.get("stretch") or "auto"}

    @property
    def stale(self) -> bool:
        """True when the index was built with another hashing model than the one loaded."""
        fp = get_meta(self._db(), "model_fingerprint")
        return fp is not None and fp != self.model.fingerprint

    def _check_fresh(self) -> None:
        if self.stale:
            raise UserError("this index was built with another hashing model: index the folder again")

    def search_text(self, query: str, k: int = 20, radius: int | None = None) -> list[Hit]:
        """Tiles whose codes are nearest to the code of ``query``, nearest first."""
        if not isinstance(query, str) or not query.strip():
            raise UserError("type a description to search")
        self._check_fresh()
        return self._hits(self._codes["tiles"].search(text_code(self.model, self.text_encoder, query), k, radius))

    def similar(self, image: int | Path, k: int = 20, radius: int | None = None) -> list[Hit]:
        """Tiles nearest to an indexed tile (by id; itself left out) or to any image file."""
        self._check_fresh()
        code, exclude = self._query_code(image)
        return self._hits(self._codes["tiles"].search(code, k, radius, exclude))

    def captions_for(self, image: int | Path, k: int = 10) -> list[CaptionHit]:
        """Captions of the caption archive nearest to an indexed tile or an image file."""
        self._check_fresh()
        code, _ = self._query_code(image)
        pairs = self._codes["captions"].search(code, k)
        rows = _rows_by_id(self._db(), "SELECT id, text, source FROM captions", [i for i, _ in pairs])
        return [CaptionHit(rows[i][1], d, rows[i][2]) for i, d in pairs if i in rows]

    def _query_code(self, image) -> tuple[np.ndarray, set[int]]:
        if isinstance(image, (int, np.integer)) and not isinstance(image, bool):
            row = self._db().execute("SELECT rel, status, error, code FROM tiles WHERE id = ?", (int(image),)).fetchone()
            if row is None:
                raise UserError(f"no tile with id {int(image)} in this index")
            if row[1] != "ok" or row[3] is None:
                why = f"could not be read ({row[2]})" if row[1] == "error" else "is not indexed yet"
                raise UserError(f"tile {row[0]} {why}")
            return np.frombuffer(row[3], dtype=np.uint8)[None], {int(image)}
        opts = self.options
        return image_code(self.model, self.image_encoder, Path(image), opts["bands"], opts["stretch"]), set()

    def _hits(self, pairs: list[tuple[int, int]]) -> list[Hit]:
        rows = _rows_by_id(self._db(), "SELECT id, rel, rel_bytes, footprint FROM tiles", [i for i, _ in pairs])
        hits = []
        for i, d in pairs:
            row = rows.get(i)
            if row is None:  # removed by a concurrent indexing run between search and lookup
                continue
            hits.append(Hit(i, row[1], self.root / os.fsdecode(bytes(row[2])), d,
                            json.loads(row[3]) if row[3] else None, len(hits) + 1))
        return hits

    def tile(self, tile_id: int) -> TileRecord:
        """The stored record of one tile; unknown ids raise :class:`UserError`."""
        row = self._db().execute(
            "SELECT id, rel, rel_bytes, size, mtime_ns, status, error, meta, footprint, content_hash "
            "FROM tiles WHERE id = ?", (int(tile_id),)).fetchone()
        if row is None:
            raise UserError(f"no tile with id {int(tile_id)} in this index")
        meta = imagery.TileMeta.from_dict(json.loads(row[7])) if row[7] else None
        return TileRecord(row[0], row[1], self.root / os.fsdecode(bytes(row[2])), row[3], row[4], row[5], row[6],
                          meta, json.loads(row[8]) if row[8] else None, row[9])

    def _thumb_path(self, tile_id: int, size: int) -> Path:
        # The common size sits flat in thumbs/ (the documented place); other sizes get a subfolder.
        if size == self.THUMB_SIZE:
            return self.thumbs_dir / f"{int(tile_id)}.jpg"
        return self.thumbs_dir / str(int(size)) / f"{int(tile_id)}.jpg"

    def thumbnail(self, tile_id: int, size: int = 256) -> Path:
        """A cached JPEG of the tile (long side ``size``), made on first request; any thread."""
        dest = self._thumb_path(tile_id, size)
        if dest.is_file():
            return dest
        rec = self.tile(tile_id)
        dest.parent.mkdir(parents=True, exist_ok=True)
        opts = self.options
        try:
            try:
                imagery.make_thumbnail(rec.path, dest, size, bands=opts["bands"], stretch=opts["stretch"])
            except ValueError:  # the archive's band choice does not fit this particular file
                imagery.make_thumbnail(rec.path, dest, size, stretch=opts["stretch"])
        except (imagery.ImageryError, ValueError) as e:
            raise UserError(f"cannot show {rec.rel}: {e}") from e
        return dest

    def _drop_thumbs(self, ids) -> None:
        """Forget cached thumbnails of tiles that changed or vanished (ids are never reused)."""
        if not len(ids) or not self.thumbs_dir.is_dir():
            return
        sizes = [p for p in self.thumbs_dir.iterdir() if p.is_dir()]
        for i in ids:
            for folder in [self.thumbs_dir, *sizes]:
                _unlink(folder / f"{int(i)}.jpg")

    def stats(self) -> dict:
        """Counts, model, encoders, options, root, on-disk size of the index and last run time."""
        conn = self._db()
        counts = dict(conn.execute("SELECT status, COUNT(*) FROM tiles GROUP BY status").fetchall())
        size = sum(f.stat().st_size for f in self.index_dir.iterdir() if f.is_file())
        return {
            "root": display_rel(os.fsencode(self.root)), "index_dir": str(self.index_dir),
            "tiles": counts.get("ok", 0), "errors": counts.get("error", 0), "pending": counts.get("pending", 0),
            "captions": conn.execute("SELECT COUNT(*) FROM captions").fetchone()[0],
            "bits": int(get_meta(conn, "bits", self.model.bits)),
            "model_fingerprint": get_meta(conn, "model_fingerprint"), "loaded_model": self.model.fingerprint,
            "model_dir": get_meta(conn, "model_dir"), "stale": self.stale,
            "image_encoder": get_meta(conn, "image_encoder", self.model.image_encoder),
            "text_encoder": get_meta(conn, "text_encoder", self.model.text_encoder),
            "options": self.options, "index_bytes": size, "last_indexed": get_meta(conn, "last_indexed"),
        }

    def errors(self) -> list[tuple[str, str]]:
        """``(rel, reason)`` of every file that could not be read, by name."""
        return [(r, e or "unreadable") for r, e in self._db().execute(
            "SELECT rel, error FROM tiles WHERE status = 'error' ORDER BY rel_bytes")]


def _rows_by_id(conn: sqlite3.Connection, select: str, ids: list[int]) -> dict[int, tuple]:
    """``{id: row}`` of ``select`` restricted to ``ids`` (a constant SELECT; ids are bound parameters)."""
    out: dict[int, tuple] = {}
    for start in range(0, len(ids), 500):  # stay well below SQLite's bound-parameter limit
        chunk = ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        out.update((r[0], r) for r in conn.execute(f"{select} WHERE id IN ({marks})", chunk))
    return out
