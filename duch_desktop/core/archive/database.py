"""The on-disk layout of an index directory and the SQLite helpers every part of the archive uses.

- ``archive.sqlite`` (WAL): ``meta`` (key/value), ``tiles`` (one row per scanned file or per
  chip of a scene, ``id`` = faiss id, the packed code of readable tiles, the reason for
  unreadable ones), ``captions``;
- ``tiles.faiss`` / ``captions.faiss``: faiss binary indexes over the codes, ids = row ids;
- ``thumbs/``: JPEG thumbnails made on demand (``thumbs/scenes/<size>/``: whole-scene previews);
  ``indexing.lock``: held by the indexing run.

``meta`` keys include ``options`` (bands/stretch JSON) and ``chips`` (chip options JSON, absent
when every file is one tile), ``format``, ``root``, the model's identity and fingerprint.

Each table's writes advance a generation counter in ``meta`` (``<table>_gen``); a faiss file
records the generation it reflects (``<table>_faiss_gen``) so a stale one is rebuilt on open.
"""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

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


def create_or_migrate(conn: sqlite3.Connection) -> None:
    """Create missing tables; bring a format-1 database (one row per file) to this format.

    Format 1 had ``rel_bytes UNIQUE``, which SQLite cannot drop: the table is copied into the
    new layout with its ids (so faiss ids, thumbnails and ``sqlite_sequence`` stay valid).
    """
    conn.executescript(SCHEMA)
    columns = {r[1] for r in conn.execute("PRAGMA table_info(tiles)")}
    if "win_col" not in columns:
        conn.execute("BEGIN IMMEDIATE")
        try:
            seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'tiles'").fetchone()
            conn.execute("DROP INDEX IF EXISTS tiles_status")
            conn.execute("ALTER TABLE tiles RENAME TO tiles_v1")
            conn.execute(TILES_TABLE)
            conn.execute(f"INSERT INTO tiles({TILE_COLUMNS}) SELECT {TILE_COLUMNS} FROM tiles_v1")
            conn.execute("DROP TABLE tiles_v1")
            if seq is not None:
                conn.execute("DELETE FROM sqlite_sequence WHERE name = 'tiles'")
                conn.execute("INSERT INTO sqlite_sequence(name, seq) VALUES('tiles', ?)", (seq[0],))
            if get_meta(conn, "format") is not None:
                set_meta(conn, "format", FORMAT)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    conn.executescript(INDEXES)


def connect(db: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) with WAL journaling."""
    conn = sqlite3.connect(db, timeout=60, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL is still crash-safe with WAL (a kill -9 never corrupts); it only risks the last
    # commits on power loss, which the next run re-indexes.
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


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


def bump(conn: sqlite3.Connection, which: str) -> int:
    """Advance the generation counter of ``which`` inside the caller's transaction; returns it."""
    key = f"{which}_gen"
    conn.execute("INSERT INTO meta(key, value) VALUES(?, 1) ON CONFLICT(key) DO UPDATE SET value = value + 1", (key,))
    return int(get_meta(conn, key))


def code_rows_sql(which: str, columns: str) -> str:
    """SELECT of the rows of ``which`` ("tiles" or "captions") that have a code."""
    # Both arguments are internal constants, never user input.
    if which == "tiles":
        return f"SELECT {columns} FROM tiles WHERE status = 'ok' AND code IS NOT NULL"
    return f"SELECT {columns} FROM captions WHERE code IS NOT NULL"


def window_text(window) -> str:
    """A chip window ``(col_off, row_off, width, height)`` as 'x 224, y 448, 256x256' ('' for None)."""
    if window is None:
        return ""
    c, r, w, h = (int(v) for v in window)
    return f"x {c}, y {r}, {w}x{h}"


def now() -> str:
    """Local time stamp stored in ``meta`` (created, last_indexed)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
