"""The on-disk layout of an index directory, and :class:`Database`, which owns every SQL statement.

- ``archive.sqlite`` (WAL): ``meta`` (key/value), ``tiles`` (one row per scanned file or per
  chip of a scene, ``id`` = faiss id, the packed code of readable tiles, the reason for
  unreadable ones), ``captions``;
- ``tiles.faiss`` / ``captions.faiss``: faiss binary indexes over the codes, ids = row ids
  (the Hamming tables, :mod:`tables`);
- ``thumbs/``: JPEG thumbnails made on demand (``thumbs/scenes/<size>/``: whole-scene previews);
  ``indexing.lock``: held by the indexing run.

``meta`` keys include ``options`` (bands/stretch JSON) and ``chips`` (chip options JSON, absent
when every file is one tile), ``format``, ``root``, the model's identity and fingerprint.

Each table's writes advance a generation counter in ``meta`` (``<table>_gen``); a faiss file
records the generation it reflects (``<table>_faiss_gen``) so a stale one is rebuilt on open.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from ..imagery import reading as imagery
from ..imagery.chips import ChipOptions, plan_windows
from ..jobs import UserError

ARCHIVE_DB = "archive.sqlite"
TILES_FAISS = "tiles.faiss"
CAPTIONS_FAISS = "captions.faiss"
FAISS_FILES = {"tiles": TILES_FAISS, "captions": CAPTIONS_FAISS}
THUMBS = "thumbs"
RUN_LOCK = "indexing.lock"
FORMAT = 2  # 2: chips (win_* columns; a file may have several rows)

TILE_KEY = "rel_bytes, IFNULL(win_col, -1), IFNULL(win_row, -1), IFNULL(win_w, -1), IFNULL(win_h, -1)"
TILES_TABLE = """
CREATE TABLE IF NOT EXISTS tiles(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rel TEXT NOT NULL,
    rel_bytes BLOB NOT NULL,
    size INTEGER, mtime_ns INTEGER, content_hash TEXT,
    width INTEGER, height INTEGER, bands INTEGER, dtype TEXT, crs TEXT,
    footprint TEXT, meta TEXT,
    status TEXT NOT NULL,
    error TEXT,
    code BLOB,
    win_col INTEGER, win_row INTEGER, win_w INTEGER, win_h INTEGER);
"""
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS captions(
    id INTEGER PRIMARY KEY AUTOINCREMENT, text TEXT NOT NULL UNIQUE, source TEXT NOT NULL, code BLOB);
""" + TILES_TABLE
INDEXES = f"""
CREATE INDEX IF NOT EXISTS tiles_status ON tiles(status);
CREATE UNIQUE INDEX IF NOT EXISTS tiles_key ON tiles({TILE_KEY});
"""
# One row per whole file (win_* NULL) or per chip of a scene (its window in pixels of the file);
# a scene's chips share the file's rel, size, mtime_ns and content_hash, and width/height/meta
# describe the scene, footprint the chip. tiles.status: 'ok' (has a code), 'error' (unreadable;
# reason in error), 'nodata' (a chip without valid pixels: skipped), 'pending' (must be
# (re-)encoded: the model or the options changed, or a scene's chip not encoded yet; resumable).
TILE_COLUMNS = ("id, rel, rel_bytes, size, mtime_ns, content_hash, width, height, bands, dtype, crs, "
                "footprint, meta, status, error, code")
# What the indexing run's diff knows of a file's rows (reader.FileTodo.rows).
ROW_COLUMNS = "id, rel_bytes, size, mtime_ns, content_hash, status, win_col, win_row, win_w, win_h"
HIT_COLUMNS = "id, rel, rel_bytes, footprint, win_col, win_row, win_w, win_h, width, height"
RECORD_COLUMNS = ("id, rel, rel_bytes, size, mtime_ns, status, error, meta, footprint, content_hash, "
                  "win_col, win_row, win_w, win_h, width, height")
UPSERT_TILE = f"""
INSERT INTO tiles(rel, rel_bytes, size, mtime_ns, content_hash, width, height, bands, dtype, crs,
                  footprint, meta, status, error, code)
VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT({TILE_KEY}) DO UPDATE SET
    rel = excluded.rel, size = excluded.size, mtime_ns = excluded.mtime_ns, content_hash = excluded.content_hash,
    width = excluded.width, height = excluded.height, bands = excluded.bands, dtype = excluded.dtype,
    crs = excluded.crs, footprint = excluded.footprint, meta = excluded.meta, status = excluded.status,
    error = excluded.error, code = excluded.code
RETURNING id
"""
INSERT_CHIP = """
INSERT INTO tiles(rel, rel_bytes, size, mtime_ns, content_hash, width, height, bands, dtype, crs,
                  footprint, meta, win_col, win_row, win_w, win_h, status)
VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending')
RETURNING id
"""
RESET_CHIP = ("UPDATE tiles SET size = ?, mtime_ns = ?, content_hash = ?, width = ?, height = ?, bands = ?, "
              "dtype = ?, crs = ?, footprint = ?, meta = ?, status = 'pending', error = NULL, code = NULL WHERE id = ?")


class Database:
    """``archive.sqlite`` of one index: each thread reads through its own connection (SQLite
    connections must not be shared across threads); an indexing run writes through a
    :meth:`dedicated` one. Every statement the archive runs is a method here."""

    def __init__(self, path: Path, conn: sqlite3.Connection | None = None):
        self.path = Path(path)
        self._own = conn
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (or the dedicated one)."""
        if self._own is not None:
            return self._own
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def dedicated(self) -> "Database":
        """A view of the same file through one new connection, for one run; :meth:`close` it."""
        return Database(self.path, connect(self.path))

    def close(self) -> None:
        """Close every connection this object opened."""
        with self._lock:
            conns, self._conns = self._conns + ([self._own] if self._own is not None else []), []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        self._own, self._local = None, threading.local()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back when the block raises."""
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def rollback_open_transaction(self) -> None:
        conn = self.connection()
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    # ------------------------------------------------------------------ schema + meta
    def prepare(self) -> tuple[int, bytes | None, str | None]:
        """Create or migrate the schema (unless the format is newer than this app's);
        returns ``(format, recorded root, recorded model dir)``."""
        conn = self.connection()
        conn.execute("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value)")
        fmt = int(self.get_meta("format", FORMAT))
        if fmt <= FORMAT:
            _create_or_migrate(conn, self)
        return fmt, self.get_meta("root"), self.get_meta("model_dir")

    def get_meta(self, key: str, default=None):
        """One value of the ``meta`` table."""
        row = self.connection().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]

    def set_meta(self, key: str, value) -> None:
        """Set (or, with None, delete) one ``meta`` value."""
        conn = self.connection()
        if value is None:
            conn.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            conn.execute("INSERT INTO meta(key, value) VALUES(?, ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def options(self) -> dict:
        """Band/stretch options the tiles were read with."""
        opts = json.loads(self.get_meta("options") or "{}")
        return {"bands": opts.get("bands"), "stretch": opts.get("stretch") or "auto"}

    def chip_options(self) -> ChipOptions | None:
        """How scenes were cut into chips (None: every file is one tile)."""
        return ChipOptions.from_json(self.get_meta("chips"))

    def bump(self, which: str) -> int:
        """Advance the generation counter of ``which`` inside the caller's transaction; returns it."""
        key = f"{which}_gen"
        self.connection().execute("INSERT INTO meta(key, value) VALUES(?, 1) "
                                  "ON CONFLICT(key) DO UPDATE SET value = value + 1", (key,))
        return int(self.get_meta(key))

    # ------------------------------------------------------------------ codes
    def count_codes(self, which: str) -> int:
        return self.connection().execute(_code_rows_sql(which, "COUNT(*)")).fetchone()[0]

    def codes(self, which: str) -> list[tuple[int, bytes]]:
        """``[(id, code blob)]`` of the rows of ``which`` ("tiles" or "captions") that have a code."""
        return self.connection().execute(_code_rows_sql(which, "id, code")).fetchall()

    def tile_code(self, tile_id: int) -> tuple | None:
        """``(rel, status, error, code)`` of one tile, or None."""
        return self.connection().execute("SELECT rel, status, error, code FROM tiles WHERE id = ?",
                                         (int(tile_id),)).fetchone()

    # ------------------------------------------------------------------ reads
    def hit_rows(self, ids: Sequence[int]) -> dict[int, tuple]:
        return self._rows_by_id(f"SELECT {HIT_COLUMNS} FROM tiles", ids)

    def caption_rows(self, ids: Sequence[int]) -> dict[int, tuple]:
        return self._rows_by_id("SELECT id, text, source FROM captions", ids)

    def record_row(self, tile_id: int) -> tuple | None:
        return self.connection().execute(f"SELECT {RECORD_COLUMNS} FROM tiles WHERE id = ?",
                                         (int(tile_id),)).fetchone()

    def counts(self) -> tuple[dict[str, int], int, int, int]:
        """``({status: tiles}, searchable chips, scenes they come from, captions)``."""
        conn = self.connection()
        by_status = dict(conn.execute("SELECT status, COUNT(*) FROM tiles GROUP BY status").fetchall())
        n_chips, n_scenes = conn.execute("SELECT COUNT(*), COUNT(DISTINCT rel_bytes) FROM tiles "
                                         "WHERE win_col IS NOT NULL AND status = 'ok'").fetchone()
        return by_status, n_chips, n_scenes, conn.execute("SELECT COUNT(*) FROM captions").fetchone()[0]

    def error_rows(self) -> list[tuple]:
        """``(rel, error, win_col, win_row, win_w, win_h)`` of unreadable tiles, by file then window."""
        return self.connection().execute("SELECT rel, error, win_col, win_row, win_w, win_h FROM tiles "
                                         "WHERE status = 'error' ORDER BY rel_bytes, win_row, win_col").fetchall()

    def _rows_by_id(self, select: str, ids: Sequence[int]) -> dict[int, tuple]:
        """``{id: row}`` of ``select`` restricted to ``ids`` (a constant SELECT; ids are bound parameters)."""
        out: dict[int, tuple] = {}
        ids = list(ids)
        for start in range(0, len(ids), 500):  # stay well below SQLite's bound-parameter limit
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            out.update((r[0], r) for r in self.connection().execute(f"{select} WHERE id IN ({marks})", chunk))
        return out

    # ------------------------------------------------------------------ indexing writes
    def file_rows(self) -> list[tuple]:
        """Every tile row as :data:`ROW_COLUMNS` (the diff of an indexing run)."""
        return self.connection().execute(f"SELECT {ROW_COLUMNS} FROM tiles").fetchall()

    def mark_all_pending(self, captions_too: bool) -> int:
        """Drop every code (the model or the options changed); returns the number of tiles."""
        conn = self.connection()
        n = conn.execute("UPDATE tiles SET status = 'pending', code = NULL").rowcount
        if captions_too:
            conn.execute("UPDATE captions SET code = NULL")
        return n

    def mark_pending(self, ids: Sequence[int]) -> None:
        self.connection().executemany("UPDATE tiles SET status = 'pending', code = NULL WHERE id = ?",
                                      [(int(i),) for i in ids])

    def rows_to_rechip(self, cut: ChipOptions | None) -> list[int]:
        """Ids of the rows new chip options change: every chip row, and whole files that now get cut."""
        conn = self.connection()
        ids = [i for (i,) in conn.execute("SELECT id FROM tiles WHERE win_col IS NOT NULL")]
        if cut is not None:
            for tid, meta in conn.execute("SELECT id, meta FROM tiles WHERE win_col IS NULL AND meta IS NOT NULL"):
                try:
                    cut_up = plan_windows(cut, imagery.TileMeta.from_dict(json.loads(meta))) is not None
                except (imagery.ImageryError, ValueError, KeyError, TypeError):
                    cut_up = True  # let the planning step decide from the file itself
                if cut_up:
                    ids.append(tid)
        return ids

    def caption_texts(self) -> tuple[set[str], list[tuple[int, str]]]:
        """(every caption text, ``[(id, text)]`` of captions without a code)."""
        conn = self.connection()
        return ({t for (t,) in conn.execute("SELECT text FROM captions")},
                conn.execute("SELECT id, text FROM captions WHERE code IS NULL").fetchall())

    def put_captions(self, rows: Sequence[tuple[int | None, str, str | None, bytes]]) -> None:
        """Insert captions (``(None, text, source, code)``) and set the codes of existing ones
        (``(id, text, source, code)``); in one statement each, as a model's bank holds ~25,000."""
        conn = self.connection()
        conn.executemany("INSERT INTO captions(text, source, code) VALUES(?, ?, ?)",
                         [(text, source, code) for cid, text, source, code in rows if cid is None])
        conn.executemany("UPDATE captions SET code = ? WHERE id = ?",
                         [(code, cid) for cid, text, source, code in rows if cid is not None])

    def move_file(self, old_rel_bytes: bytes, rel: str, rel_bytes: bytes, size: int, mtime_ns: int) -> None:
        self.connection().execute("UPDATE tiles SET rel = ?, rel_bytes = ?, size = ?, mtime_ns = ? WHERE rel_bytes = ?",
                                  (rel, rel_bytes, size, mtime_ns, old_rel_bytes))

    def delete_tiles(self, ids: Sequence[int]) -> None:
        self.connection().executemany("DELETE FROM tiles WHERE id = ?", [(int(i),) for i in ids])

    def upsert_tile(self, row: tuple) -> int:
        """Insert a whole file's row (or update it in place); returns its id."""
        return self.connection().execute(UPSERT_TILE, row).fetchone()[0]

    def set_tile_result(self, tile_id: int, status: str, error: str | None, code: bytes | None) -> None:
        self.connection().execute("UPDATE tiles SET status = ?, error = ?, code = ? WHERE id = ?",
                                  (status, error, code, tile_id))

    def reset_chips(self, rows: Sequence[tuple]) -> None:
        """Rows of :data:`RESET_CHIP` (the scene's facts, then the id): back to pending."""
        self.connection().executemany(RESET_CHIP, rows)

    def insert_chip(self, row: tuple) -> int:
        return self.connection().execute(INSERT_CHIP, row).fetchone()[0]


def connect(db: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) with WAL journaling."""
    try:
        conn = sqlite3.connect(db, timeout=60, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError:
        if not (Path(db).is_file() and _read_only(Path(db).parent)):
            raise
        # WAL needs its -shm file even to read; on a read-only file system nothing can change the
        # database under us, so it is opened as immutable: queries work, writes fail plainly.
        conn = sqlite3.connect(f"{Path(db).absolute().as_uri()}?immutable=1", uri=True, isolation_level=None,
                               check_same_thread=False)
        return conn
    # NORMAL is still crash-safe with WAL (a kill -9 never corrupts); it only risks the last
    # commits on power loss, which the next run re-indexes.
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _create_or_migrate(conn: sqlite3.Connection, db: Database) -> None:
    """Create missing tables; bring a format-1 database (one row per file) to this format.

    Format 1 had ``rel_bytes UNIQUE``, which SQLite cannot drop: the table is copied into the
    new layout with its ids (so faiss ids, thumbnails and ``sqlite_sequence`` stay valid).
    """
    conn.executescript(SCHEMA)
    columns = {r[1] for r in conn.execute("PRAGMA table_info(tiles)")}
    if "win_col" not in columns:
        with db.transaction():
            seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'tiles'").fetchone()
            conn.execute("DROP INDEX IF EXISTS tiles_status")
            conn.execute("ALTER TABLE tiles RENAME TO tiles_v1")
            conn.execute(TILES_TABLE)
            conn.execute(f"INSERT INTO tiles({TILE_COLUMNS}) SELECT {TILE_COLUMNS} FROM tiles_v1")
            conn.execute("DROP TABLE tiles_v1")
            if seq is not None:
                conn.execute("DELETE FROM sqlite_sequence WHERE name = 'tiles'")
                conn.execute("INSERT INTO sqlite_sequence(name, seq) VALUES('tiles', ?)", (seq[0],))
            if db.get_meta("format") is not None:
                db.set_meta("format", FORMAT)
    conn.executescript(INDEXES)


def _code_rows_sql(which: str, columns: str) -> str:
    """SELECT of the rows of ``which`` ("tiles" or "captions") that have a code."""
    # Both arguments are internal constants, never user input.
    if which == "tiles":
        return f"SELECT {columns} FROM tiles WHERE status = 'ok' AND code IS NOT NULL"
    return f"SELECT {columns} FROM captions WHERE code IS NOT NULL"


def now() -> str:
    """Local time stamp stored in ``meta`` (created, last_indexed)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# SQLite result codes (primary) that mean the storage, not the index, is the problem.
_SQLITE_STORAGE = {3: "permission denied", 8: "the index is read-only", 10: "disk I/O error",
                   13: "the disk is full", 14: "cannot open the database file"}
_OS_STORAGE = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
               errno.EROFS: "it is on a read-only file system", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied"}


def storage_error(e: BaseException, index_dir: Path) -> UserError | None:
    """A plain :class:`UserError` when ``e`` says the index cannot be written or read for a reason of
    its storage (disk full, read-only, permissions) rather than damage; None otherwise. The index
    itself is then intact: the sentence says what to fix, never to delete anything."""
    reason = None
    if isinstance(e, sqlite3.Error):
        code = getattr(e, "sqlite_errorcode", None)
        reason = _SQLITE_STORAGE.get(code & 0xFF) if isinstance(code, int) else None
        text = str(e).lower()
        if reason is None:
            reason = next((r for key, r in (("disk is full", "the disk is full"), ("readonly", "the index is read-only"),
                                            ("disk i/o error", "disk I/O error"),
                                            ("unable to open", "cannot open the database file")) if key in text), None)
    elif isinstance(e, OSError):
        reason = _OS_STORAGE.get(e.errno)
    if reason is None:
        return None
    if reason in ("disk I/O error", "cannot open the database file", "the index is read-only"):
        if _read_only(index_dir):
            reason = "it is on a read-only file system"
        elif _nearly_full(index_dir):
            reason = "the disk is full"
    return UserError(f"cannot use the index at {index_dir}: {reason} (the index is intact: "
                     "try again once that is fixed)")


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows)
        return False


def _nearly_full(path: Path) -> bool:
    try:
        return shutil.disk_usage(path).free < 1 << 20
    except OSError:
        return False
