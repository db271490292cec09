"""The archive: a searchable index of one imagery folder, kept in its own index directory.

Layout of an index directory (never inside the imagery folder by default, see
:func:`defaults.default_index_dir`):

- ``archive.sqlite`` (WAL): ``meta`` (key/value), ``tiles`` (one row per scanned file, ``id`` =
  faiss id, the packed code of readable tiles, the reason for unreadable ones), ``captions``;
- ``tiles.faiss`` / ``captions.faiss``: faiss binary indexes over the codes, ids = row ids;
- ``thumbs/``: JPEG thumbnails made on demand.

SQLite is the source of truth: every batch of tiles commits rows and codes together, and a
faiss file that is missing, unreadable or older than the database (``*_faiss_gen`` behind
``*_gen``) is rebuilt from it on open. So a kill -9 at any moment leaves an index that opens
and resumes without duplicates or lost tiles.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import imagery
from .defaults import (check_encoder_dim, default_workers, load_image_encoder_for, load_text_encoder_for,
                       resolve_model)
from .hashing import DuchModel
from .jobs import Job, Progress, RateMeter, UserError
from .search import (DEFAULT_INPUT_SIZE, ArchiveQueries, CaptionHit, CodeIndex, Hit, TileRecord,
                     codes_from_rows, display_rel, get_meta, set_meta)

# The records live in search.py with the query code; the GUI and CLI import them from here.
__all__ = ["Archive", "IndexReport", "Hit", "CaptionHit", "TileRecord", "read_caption_texts"]

ARCHIVE_DB = "archive.sqlite"
TILES_FAISS = "tiles.faiss"
CAPTIONS_FAISS = "captions.faiss"
FAISS_FILES = {"tiles": TILES_FAISS, "captions": CAPTIONS_FAISS}
THUMBS = "thumbs"
RUN_LOCK = "indexing.lock"
FORMAT = 1
STRETCHES = ("auto", "percentile", "none")
SAVE_EVERY_S = 30.0  # rewrite tiles.faiss this often during a long run (bounds the rebuild after a crash)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS tiles(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rel TEXT NOT NULL,
    rel_bytes BLOB NOT NULL UNIQUE,
    size INTEGER, mtime_ns INTEGER, content_hash TEXT,
    width INTEGER, height INTEGER, bands INTEGER, dtype TEXT, crs TEXT,
    footprint TEXT, meta TEXT,
    status TEXT NOT NULL,
    error TEXT,
    code BLOB);
CREATE INDEX IF NOT EXISTS tiles_status ON tiles(status);
CREATE TABLE IF NOT EXISTS captions(
    id INTEGER PRIMARY KEY AUTOINCREMENT, text TEXT NOT NULL UNIQUE, source TEXT NOT NULL, code BLOB);
"""
# tiles.status: 'ok' (has a code), 'error' (unreadable; reason in error), 'pending' (must be
# re-encoded because the model or the band/stretch options changed; resumable).


@dataclass
class IndexReport:
    """What one indexing run did (counts of files); ``cancelled`` when it was stopped early."""

    added: int = 0
    updated: int = 0
    moved: int = 0
    removed: int = 0
    unchanged: int = 0
    errors: int = 0
    seconds: float = 0.0
    cancelled: bool = False
    warnings: int = 0  # folders/links the scan had to skip (unreadable, outside the folder)


def connect(db: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) with WAL journaling."""
    conn = sqlite3.connect(db, timeout=60, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL is still crash-safe with WAL (a kill -9 never corrupts); it only risks the last
    # commits on power loss, which the next run re-indexes.
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


class Archive(ArchiveQueries):
    """An opened index; safe to query from several threads while one thread indexes."""

    def __init__(self, index_dir: Path, root: Path, model: DuchModel, model_dir: Path | None,
                 image_encoder=None, text_encoder=None):
        self.index_dir, self.root, self.model, self.model_dir = index_dir, root, model, model_dir
        self.db_path = index_dir / ARCHIVE_DB
        self.thumbs_dir = index_dir / THUMBS
        self._image_encoder, self._text_encoder = image_encoder, text_encoder
        self._enc_lock = threading.Lock()
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self.last_report: IndexReport | None = None
        conn = self._db()
        self.bits = int(get_meta(conn, "bits", model.bits))
        self._codes: dict[str, CodeIndex] = {}
        self._gens: dict[str, int] = {}
        for which in FAISS_FILES:
            self._load_codes(conn, which)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, index_dir, model: DuchModel | str | os.PathLike | None = None, image_encoder=None,
             text_encoder=None, create_root: Path | None = None) -> "Archive":
        """Open the index at ``index_dir``, or create it for the folder ``create_root``.

        ``model``: a :class:`DuchModel`, a bundle directory, or None for the bundle recorded in
        the index (else the default bundle). Encoders are loaded lazily from the model's
        identities unless given. Problems the user can fix raise :class:`UserError`.
        """
        index_dir = Path(os.path.abspath(index_dir))
        db = index_dir / ARCHIVE_DB
        root = Path(os.path.abspath(create_root)) if create_root is not None else None
        if not db.is_file():
            if root is None:
                raise UserError(f"no index at {index_dir}: run `duch index FOLDER` first")
            if not root.is_dir():
                raise UserError(f"folder not found: {os.fsdecode(root)}")
            try:
                (index_dir / THUMBS).mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise UserError(f"cannot create the index folder {index_dir}: {e.strerror or e}") from e
        try:
            conn = connect(db)
            conn.executescript(SCHEMA)
            stored = get_meta(conn, "root")
            fmt = int(get_meta(conn, "format", FORMAT))
            recorded_model = get_meta(conn, "model_dir")
            conn.close()
        except sqlite3.DatabaseError as e:
            raise UserError(f"the index at {index_dir} is unreadable ({e}): delete it and index the folder again") from e
        if fmt > FORMAT:
            raise UserError(f"the index at {index_dir} was made by a newer DUCH Desktop: update the app")
        if stored is None and root is None:
            raise UserError(f"the index at {index_dir} is incomplete: index the folder again")
        if stored is not None and root is not None and bytes(stored) != os.fsencode(root):
            raise UserError(f"{index_dir} holds the index of {display_rel(stored)}, not of {os.fsdecode(root)}")
        root = root or Path(os.fsdecode(bytes(stored)))
        (index_dir / THUMBS).mkdir(exist_ok=True)
        model, model_dir = resolve_model(model, recorded_model)
        for enc, dim, kind in ((image_encoder, model.image_dim, "image"), (text_encoder, model.text_dim, "text")):
            if enc is not None:
                check_encoder_dim(enc, dim, kind)
        try:
            archive = cls(index_dir, root, model, model_dir, image_encoder, text_encoder)
            if stored is None:
                conn = archive._db()
                conn.execute("BEGIN IMMEDIATE")
                for k, v in (("root", os.fsencode(root)), ("format", FORMAT), ("created", _now()),
                             ("tiles_gen", 0), ("captions_gen", 0)):
                    set_meta(conn, k, v)
                conn.execute("COMMIT")
        except sqlite3.DatabaseError as e:  # damage past the header shows up on the first real query
            raise UserError(f"the index at {index_dir} is unreadable ({e}): delete it and index the folder again") from e
        return archive

    def _db(self) -> sqlite3.Connection:
        """This thread's connection (SQLite connections must not be shared across threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.db_path)
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def close(self) -> None:
        """Close every connection this archive opened."""
        with self._conns_lock:
            for conn in self._conns:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._conns.clear()
        self._local = threading.local()

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ encoders
    @property
    def image_encoder(self):
        with self._enc_lock:
            if self._image_encoder is None:
                enc = load_image_encoder_for(_encoder_spec(self.model, "image"))
                check_encoder_dim(enc, self.model.image_dim, "image")
                self._image_encoder = enc
            return self._image_encoder

    @property
    def text_encoder(self):
        with self._enc_lock:
            if self._text_encoder is None:
                enc = load_text_encoder_for(_encoder_spec(self.model, "text"))
                check_encoder_dim(enc, self.model.text_dim, "text")
                self._text_encoder = enc
            return self._text_encoder

    # ------------------------------------------------------------------ code indexes
    # ``which`` is "tiles" or "captions"; each has a CodeIndex in self._codes and the database
    # generation it reflects in self._gens (the tables' counters live in meta as <which>_gen).
    def _load_codes(self, conn: sqlite3.Connection, which: str) -> None:
        """Load the faiss file of ``which``, rebuilding it from SQLite when not in step with it."""
        gen = int(get_meta(conn, f"{which}_gen", 0))
        count = conn.execute(_code_rows_sql(which, "COUNT(*)")).fetchone()[0]
        index = CodeIndex.load(self.index_dir / FAISS_FILES[which], self.bits)
        if index is None or index.ntotal != count or get_meta(conn, f"{which}_faiss_gen") != gen:
            index = self._rebuild(conn, which)
            self._save_codes(conn, which, index, gen)
        self._codes[which], self._gens[which] = index, gen

    def _rebuild(self, conn: sqlite3.Connection, which: str) -> CodeIndex:
        index = CodeIndex(self.bits)
        index.reset(*codes_from_rows(conn.execute(_code_rows_sql(which, "id, code")).fetchall(), self.bits))
        return index

    def _save_codes(self, conn: sqlite3.Connection, which: str, index: CodeIndex, gen: int) -> None:
        """Write one faiss file, then record which database generation it reflects."""
        try:
            index.save(self.index_dir / FAISS_FILES[which])
            set_meta(conn, f"{which}_faiss_gen", gen)
        except (OSError, RuntimeError, sqlite3.Error):
            pass  # a read-only index still works; the next writable open rebuilds the file

    def _sync_codes(self, conn: sqlite3.Connection, which: str) -> None:
        """Make the in-memory index match SQLite (e.g. after an interrupted batch) and save it."""
        gen = int(get_meta(conn, f"{which}_gen", 0))
        if gen != self._gens[which] or self._codes[which].bits != self.bits:
            self._codes[which], self._gens[which] = self._rebuild(conn, which), gen
        self._save_codes(conn, which, self._codes[which], gen)

    # ------------------------------------------------------------------ indexing
    def index(self, bands=None, follow_symlinks: bool = False, batch_size: int = 32, workers: int | None = None,
              captions_file=None, stretch: str | None = None) -> Job[IndexReport]:
        """Bring the index up to date with the folder; a generator of Progress, returns IndexReport.

        ``bands`` ("4,3,2" or (4, 3, 2)) and ``stretch`` default to what the index was built
        with (else the first three bands, "auto"); changing either re-encodes every tile.
        Closing the generator cancels: finished batches stay committed, the index stays
        consistent and the next run resumes. Arguments are checked here, before any work.
        """
        bands = _parse_bands(bands)
        if stretch is not None and stretch not in STRETCHES:
            raise UserError(f'unknown stretch "{stretch}": use one of {", ".join(STRETCHES)}')
        if batch_size < 1:
            raise UserError("the batch size must be at least 1")
        user_captions = read_caption_texts(Path(captions_file)) if captions_file is not None else []
        workers = default_workers() if workers is None else max(0, int(workers))
        return self._index_job(bands, stretch, follow_symlinks, batch_size, workers, user_captions)

    def _index_job(self, bands, stretch, follow_symlinks, batch_size, workers, user_captions) -> Job[IndexReport]:
        rep = IndexReport()
        self.last_report = rep
        start = time.perf_counter()
        lock = _RunLock(self.index_dir)
        for name in FAISS_FILES.values():  # temp files of a run that was killed while saving
            for tmp in self.index_dir.glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)
        conn = connect(self.db_path)
        try:
            opts = self._options(conn, bands, stretch)
            yield from self._start_run(conn, opts)
            yield from self._fill_captions(conn, user_captions)
            entries = yield from self._scan(follow_symlinks, rep)
            todo = self._apply_diff(conn, entries, rep)
            yield from self._encode(conn, todo, opts, batch_size, workers, rep)
        except (GeneratorExit, KeyboardInterrupt):
            rep.cancelled = True
            raise
        finally:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                for which in FAISS_FILES:
                    self._sync_codes(conn, which)
                set_meta(conn, "last_indexed", _now())
            finally:
                conn.close()
                lock.release()
                rep.seconds = time.perf_counter() - start
        return rep

    def _options(self, conn, bands, stretch) -> dict:
        """Band/stretch options of this run: the given ones, else those the index was built with."""
        stored = json.loads(get_meta(conn, "options") or "{}")
        return {"bands": list(bands) if bands is not None else stored.get("bands"),
                "stretch": stretch or stored.get("stretch") or "auto"}

    def _start_run(self, conn, opts: dict) -> Job[None]:
        """Record model and options; when either changed, mark every tile (and caption) for re-encoding."""
        fp = self.model.fingerprint
        stored_fp, stored_opts = get_meta(conn, "model_fingerprint"), get_meta(conn, "options")
        new_opts = json.dumps(opts, sort_keys=True)
        reason = ("the hashing model changed" if stored_fp not in (None, fp) else
                  "the band/stretch options changed" if stored_opts not in (None, new_opts) else None)
        conn.execute("BEGIN IMMEDIATE")
        n = 0
        if reason:
            n = conn.execute("UPDATE tiles SET status = 'pending', code = NULL").rowcount
            tiles_gen = _bump(conn, "tiles")
            if stored_fp != fp:
                conn.execute("UPDATE captions SET code = NULL")
                captions_gen = _bump(conn, "captions")
        for key, value in (("model_fingerprint", fp), ("options", new_opts), ("bits", self.model.bits),
                           ("image_encoder", self.model.image_encoder), ("text_encoder", self.model.text_encoder),
                           ("model_dir", str(self.model_dir) if self.model_dir else None)):
            set_meta(conn, key, value)
        conn.execute("COMMIT")
        if reason:
            self.bits = self.model.bits
            self._codes["tiles"], self._gens["tiles"] = CodeIndex(self.bits), tiles_gen
            if stored_fp != fp:
                self._codes["captions"], self._gens["captions"] = CodeIndex(self.bits), captions_gen
            yield Progress("index", 0, 0, f"{reason}: re-encoding all {n} tiles", {"reencode": n})

    def _fill_captions(self, conn, user_captions: list[str]) -> Job[None]:
        """Encode the model bundle's captions (once per model) and the user's captions into the caption archive."""
        fp = self.model.fingerprint
        texts: list[tuple[str, str]] = []
        if get_meta(conn, "captions_fingerprint") != fp and self.model_dir is not None:
            bundle = self.model_dir / "captions.json"
            if bundle.is_file():
                texts += [(t, "model") for t in read_caption_texts(bundle)]
        texts += [(t, "user") for t in user_captions]
        known = {t for (t,) in conn.execute("SELECT text FROM captions")}
        work = [(cid, t, None) for cid, t in conn.execute("SELECT id, text FROM captions WHERE code IS NULL")]
        for text, source in texts:
            if text not in known:
                known.add(text)
                work.append((None, text, source))
        codes = []
        for start in range(0, len(work), 256):
            chunk = [t for _, t, _ in work[start:start + 256]]
            codes.append(self.model.text_codes(self.text_encoder.encode(chunk)))
            yield Progress("captions", min(len(work), start + 256), len(work), "encoding captions")
        conn.execute("BEGIN IMMEDIATE")
        for (cid, text, source), code in zip(work, (c for block in codes for c in block)):
            if cid is None:
                conn.execute("INSERT INTO captions(text, source, code) VALUES(?, ?, ?)", (text, source, code.tobytes()))
            else:
                conn.execute("UPDATE captions SET code = ? WHERE id = ?", (code.tobytes(), cid))
        if work:
            _bump(conn, "captions")
        set_meta(conn, "captions_fingerprint", fp)
        conn.execute("COMMIT")
        if work:
            self._sync_codes(conn, "captions")

    def _scan(self, follow_symlinks: bool, rep: IndexReport) -> Job[list]:
        """Every candidate file under the root (minus the index itself if it sits inside)."""
        problems: list = []
        entries = []
        inside = os.path.relpath(self.index_dir, self.root)
        skip = None if inside == os.pardir or inside.startswith(os.pardir + os.sep) else inside.replace(os.sep, "/") + "/"
        for entry in imagery.scan(self.root, follow_symlinks=follow_symlinks, errors=problems):
            if skip and entry.rel.startswith(skip):
                continue
            entries.append(entry)
            if len(entries) % 2000 == 0:
                yield Progress("scan", len(entries), 0, display_rel(os.fsencode(entry.rel)))
        rep.warnings = len(problems)
        return entries

    def _apply_diff(self, conn, entries: list, rep: IndexReport) -> list[tuple]:
        """Commit moves and removals; return ``[(entry, known)]`` still to encode."""
        by_rel = {bytes(r[1]): r for r in conn.execute(
            "SELECT id, rel_bytes, size, mtime_ns, content_hash, status FROM tiles")}
        todo, new = [], []
        for e in entries:
            row = by_rel.pop(os.fsencode(e.rel), None)
            if row is None:
                new.append(e)
            elif row[5] != "pending" and row[2] == e.size and row[3] == e.mtime_ns:
                rep.unchanged += 1
            else:
                todo.append((e, True))
        # What vanished and what appeared with the same size and content hash was moved/renamed.
        candidates: dict[tuple, list] = {}
        for row in by_rel.values():
            if row[4]:
                candidates.setdefault((row[2], row[4]), []).append(row)
        sizes = {size for size, _ in candidates}
        moves, fresh = [], []
        for e in new:
            match = None
            if e.size in sizes:
                try:
                    match = candidates.get((e.size, imagery.quick_hash(e.path)))
                except imagery.ImageryError:
                    match = None
            if match:
                row = match.pop()
                del by_rel[bytes(row[1])]
                moves.append((row, e))
            else:
                fresh.append(e)
        removed = [row[0] for row in by_rel.values()]
        conn.execute("BEGIN IMMEDIATE")
        for row, e in moves:
            conn.execute("UPDATE tiles SET rel = ?, rel_bytes = ?, size = ?, mtime_ns = ? WHERE id = ?",
                         (display_rel(os.fsencode(e.rel)), os.fsencode(e.rel), e.size, e.mtime_ns, row[0]))
            if row[5] == "pending":
                todo.append((e, True))
        conn.executemany("DELETE FROM tiles WHERE id = ?", [(i,) for i in removed])
        gen = _bump(conn, "tiles") if removed else None
        conn.execute("COMMIT")
        if removed:
            self._codes["tiles"].update(remove=removed)
            self._gens["tiles"] = gen
            self._drop_thumbs(removed)
        rep.moved, rep.removed = len(moves), len(removed)
        return todo + [(e, False) for e in fresh]

    def _encode(self, conn, todo: list[tuple], opts: dict, batch_size: int, workers: int,
                rep: IndexReport) -> Job[None]:
        """Decode in parallel, encode, hash and commit batch by batch, yielding after each commit."""
        total = len(todo)
        if not total:
            return
        encoder = self.image_encoder
        reader = _TileReader([os.fsencode(e.path) for e, _ in todo],
                             int(getattr(encoder, "input_size", DEFAULT_INPUT_SIZE)), opts["bands"], opts["stretch"])
        from torch.utils.data import DataLoader

        # Worker processes only pay off when there is more than one batch to overlap with encoding.
        loader = DataLoader(reader, batch_size=batch_size, shuffle=False, collate_fn=_as_list,
                            num_workers=workers if total > batch_size else 0)
        meter, done, saved = RateMeter(), 0, time.monotonic()
        batches = iter(loader)
        try:
            for batch in batches:
                good = [b for b in batch if b["error"] is None]
                codes = (self.model.image_codes(encoder.encode(np.stack([b["pixels"] for b in good])))
                         if good else np.zeros((0, self.bits // 8), np.uint8))
                code_of = {b["i"]: c for b, c in zip(good, codes)}
                known, ids = [], []
                conn.execute("BEGIN IMMEDIATE")
                for b in batch:
                    entry, was_known = todo[b["i"]]
                    code = code_of.get(b["i"])
                    tid = conn.execute(UPSERT_TILE, _tile_row(entry, b, code)).fetchone()[0]
                    if was_known:
                        known.append(tid)
                    if code is not None:
                        ids.append(tid)
                    if b["error"] is not None:
                        rep.errors += 1
                    elif was_known:
                        rep.updated += 1
                    else:
                        rep.added += 1
                gen = _bump(conn, "tiles")
                conn.execute("COMMIT")
                self._codes["tiles"].update(remove=known, ids=ids, codes=codes)
                self._gens["tiles"] = gen
                self._drop_thumbs(known)
                done += len(batch)
                if time.monotonic() - saved > SAVE_EVERY_S:
                    self._save_codes(conn, "tiles", self._codes["tiles"], gen)
                    saved = time.monotonic()
                yield Progress("index", done, total, display_rel(os.fsencode(todo[batch[-1]["i"]][0].rel)),
                               {"rate": meter.rate(done), "eta": meter.eta(done, total),
                                "errors": rep.errors, "skipped": rep.unchanged})
        finally:
            del batches  # shuts the decoding workers down now, also on cancel


# --------------------------------------------------------------------------- helpers

UPSERT_TILE = """
INSERT INTO tiles(rel, rel_bytes, size, mtime_ns, content_hash, width, height, bands, dtype, crs,
                  footprint, meta, status, error, code)
VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(rel_bytes) DO UPDATE SET
    rel = excluded.rel, size = excluded.size, mtime_ns = excluded.mtime_ns, content_hash = excluded.content_hash,
    width = excluded.width, height = excluded.height, bands = excluded.bands, dtype = excluded.dtype,
    crs = excluded.crs, footprint = excluded.footprint, meta = excluded.meta, status = excluded.status,
    error = excluded.error, code = excluded.code
RETURNING id
"""


class _TileReader:
    """Map-style dataset for the DataLoader: decodes one file, never raises (errors are data)."""

    def __init__(self, paths: list[bytes], size: int, bands, stretch: str):
        self.paths, self.size, self.stretch = paths, size, stretch
        self.bands = tuple(bands) if bands else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        path = Path(os.fsdecode(self.paths[i]))
        out = {"i": i, "pixels": None, "meta": None, "hash": None, "error": None}
        try:
            out["hash"] = imagery.quick_hash(path)
            out["pixels"], meta = imagery.read_tile(path, size=self.size, bands=self.bands, stretch=self.stretch)
            out["meta"] = meta.to_dict()
        except (imagery.ImageryError, ValueError) as e:  # ValueError: e.g. band 4 of a 3-band file
            out["error"] = str(e) or type(e).__name__
        except Exception as e:  # noqa: BLE001 - one odd file must never stop an indexing run
            out["error"] = f"unexpected error: {type(e).__name__}: {e}"[:200]
        if out["error"] is not None:
            out["pixels"] = None
        return out


def _as_list(batch: list) -> list:
    """DataLoader collate that keeps items as they are (errors have no pixels to stack)."""
    return batch


def _tile_row(entry, item: dict, code: np.ndarray | None) -> tuple:
    rel_bytes = os.fsencode(entry.rel)
    m = item["meta"] or {}
    return (display_rel(rel_bytes), rel_bytes, entry.size, entry.mtime_ns, item["hash"],
            m.get("width"), m.get("height"), m.get("bands"), m.get("dtype"), m.get("crs"),
            json.dumps(m["footprint"]) if m.get("footprint") else None, json.dumps(m) if m else None,
            "ok" if code is not None else "error", item["error"], code.tobytes() if code is not None else None)


def _encoder_spec(model: DuchModel, kind: str) -> str:
    # An identity like "hf:resnet18:<hash>" names a local directory it cannot be loaded from;
    # a bundle may record the loadable spec (the directory) as meta "<kind>_encoder_spec".
    return model.meta.get(f"{kind}_encoder_spec") or getattr(model, f"{kind}_encoder")


def _bump(conn: sqlite3.Connection, which: str) -> int:
    """Advance the generation counter of ``which`` inside the caller's transaction; returns it."""
    key = f"{which}_gen"
    conn.execute("INSERT INTO meta(key, value) VALUES(?, 1) ON CONFLICT(key) DO UPDATE SET value = value + 1", (key,))
    return int(get_meta(conn, key))


def _code_rows_sql(which: str, columns: str) -> str:
    # Both arguments are internal constants, never user input.
    if which == "tiles":
        return f"SELECT {columns} FROM tiles WHERE status = 'ok' AND code IS NOT NULL"
    return f"SELECT {columns} FROM captions WHERE code IS NOT NULL"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _parse_bands(bands) -> tuple[int, ...] | None:
    if bands is None:
        return None
    text = bands if isinstance(bands, str) else ",".join(str(b) for b in bands)
    try:
        return imagery.parse_bands(text)
    except ValueError as e:
        raise UserError(str(e)) from e


def read_caption_texts(path: Path) -> list[str]:
    """Distinct caption texts of a captions file, in file order.

    Accepted: a JSON list of strings, or anything :func:`datasets.load_captions_file` reads
    (CSV ``file,caption``, JSON ``{file: [captions]}``, Karpathy-style JSON).
    """
    from .datasets import clean_caption, load_captions_file

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig")) if path.suffix.lower() == ".json" else None
    except (OSError, ValueError):
        data = None  # let load_captions_file produce the plain-sentence error
    if isinstance(data, list) and all(isinstance(t, str) for t in data):
        texts = [clean_caption(t) for t in data]
    else:
        texts = [c for caps in load_captions_file(path).values() for c in caps]
    return list(dict.fromkeys(t for t in texts if t))


class _RunLock:
    """One indexing run per index directory, across threads and processes (released on kill -9)."""

    def __init__(self, index_dir: Path):
        self.file = open(index_dir / RUN_LOCK, "a+b")
        try:
            import fcntl
        except ImportError:  # Windows: fall back to no cross-process lock
            return
        try:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            self.file.close()
            raise UserError("this folder is already being indexed (by another window or process)") from e

    def release(self) -> None:
        self.file.close()
