"""The archive: a searchable index of one imagery folder, kept in its own index directory.

The layout of an index directory is described in :mod:`store` (never inside the imagery
folder by default, see :func:`defaults.default_index_dir`). This module opens and closes an
archive (migrating an older database), loads its encoders and keeps its faiss code indexes
(:mod:`codes`) in step with SQLite. The indexing run lives in :mod:`indexing` (with the
planning of scene chips in :mod:`chips` and decoding in :mod:`reader`), the read side
(search, records, thumbnails, scene previews) in :mod:`search`.

SQLite is the source of truth: every batch of tiles commits rows and codes together, and a
faiss file that is missing, unreadable or older than the database (``*_faiss_gen`` behind
``*_gen``) is rebuilt from it on open. So a kill -9 at any moment leaves an index that opens
and resumes without duplicates or lost tiles.
"""
from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from ..model.defaults import (check_encoder_dim, encoder_spec, load_image_encoder_for, load_text_encoder_for,
                              resolve_model)
from ..model.bundle import DuchModel
from .indexing import SAVE_EVERY_S, STRETCHES, Indexing, IndexReport, read_caption_texts
from .hamming import CodeIndex, codes_from_rows
from ..files import display_path
from ..jobs import UserError
from .queries import ArchiveQueries, CaptionHit, Hit, TileRecord
from .database import (ARCHIVE_DB, CAPTIONS_FAISS, FAISS_FILES, FORMAT, RUN_LOCK, THUMBS, TILES_FAISS,
                    code_rows_sql, connect, create_or_migrate, get_meta, now, set_meta)

# The records live in search.py with the query code, the run report in indexing.py; the GUI
# and CLI import them from here.
__all__ = ["Archive", "IndexReport", "Hit", "CaptionHit", "TileRecord", "read_caption_texts",
           "ARCHIVE_DB", "TILES_FAISS", "CAPTIONS_FAISS", "THUMBS", "RUN_LOCK", "FORMAT", "STRETCHES",
           "SAVE_EVERY_S", "connect"]


class Archive(Indexing, ArchiveQueries):
    """An opened index; safe to query from several threads while one thread indexes."""

    def __init__(self, index_dir: Path, root: Path, model: DuchModel, model_dir: Path | None,
                 image_encoder=None, text_encoder=None, runtime: str | None = None):
        self.index_dir, self.root, self.model, self.model_dir = index_dir, root, model, model_dir
        self.runtime = runtime  # of the encoders loaded from the model's identities (None: the default)
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
             text_encoder=None, create_root: Path | None = None, runtime: str | None = None) -> "Archive":
        """Open the index at ``index_dir``, or create it for the folder ``create_root``.

        ``model``: a :class:`DuchModel`, a bundle directory, or None for the bundle recorded in
        the index (else the default bundle). Encoders are loaded lazily from the model's
        identities unless given, on ``runtime`` (auto/onnx/torch, see :mod:`runtime`; codes do not
        depend on it). Problems the user can fix raise :class:`UserError`.
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
            conn.execute("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value)")
            fmt = int(get_meta(conn, "format", FORMAT))
            if fmt <= FORMAT:
                create_or_migrate(conn)
            stored = get_meta(conn, "root")
            recorded_model = get_meta(conn, "model_dir")
            conn.close()
        except sqlite3.DatabaseError as e:
            raise UserError(f"the index at {index_dir} is unreadable ({e}): delete it and index the folder again") from e
        if fmt > FORMAT:
            raise UserError(f"the index at {index_dir} was made by a newer DUCH Desktop: update the app")
        if stored is None and root is None:
            raise UserError(f"the index at {index_dir} is incomplete: index the folder again")
        if stored is not None and root is not None and bytes(stored) != os.fsencode(root):
            raise UserError(f"{index_dir} holds the index of {display_path(stored)}, not of {os.fsdecode(root)}")
        root = root or Path(os.fsdecode(bytes(stored)))
        (index_dir / THUMBS).mkdir(exist_ok=True)
        model, model_dir = resolve_model(model, recorded_model)
        for enc, dim, kind in ((image_encoder, model.image_dim, "image"), (text_encoder, model.text_dim, "text")):
            if enc is not None:
                check_encoder_dim(enc, dim, kind)
        try:
            archive = cls(index_dir, root, model, model_dir, image_encoder, text_encoder, runtime)
            if stored is None:
                conn = archive._db()
                conn.execute("BEGIN IMMEDIATE")
                for k, v in (("root", os.fsencode(root)), ("format", FORMAT), ("created", now()),
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
                enc = load_image_encoder_for(encoder_spec(self.model, "image"), self.runtime)
                check_encoder_dim(enc, self.model.image_dim, "image")
                self._image_encoder = enc
            return self._image_encoder

    @property
    def loaded_image_encoder(self):
        """The image encoder given to :meth:`open` or loaded since; None while it is not (no loading here)."""
        with self._enc_lock:
            return self._image_encoder

    @property
    def text_encoder(self):
        with self._enc_lock:
            if self._text_encoder is None:
                enc = load_text_encoder_for(encoder_spec(self.model, "text"), self.runtime)
                check_encoder_dim(enc, self.model.text_dim, "text")
                self._text_encoder = enc
            return self._text_encoder

    # ------------------------------------------------------------------ code indexes
    # ``which`` is "tiles" or "captions"; each has a CodeIndex in self._codes and the database
    # generation it reflects in self._gens (the tables' counters live in meta as <which>_gen).
    def _load_codes(self, conn: sqlite3.Connection, which: str) -> None:
        """Load the faiss file of ``which``, rebuilding it from SQLite when not in step with it."""
        gen = int(get_meta(conn, f"{which}_gen", 0))
        count = conn.execute(code_rows_sql(which, "COUNT(*)")).fetchone()[0]
        index = CodeIndex.load(self.index_dir / FAISS_FILES[which], self.bits)
        if index is None or index.ntotal != count or get_meta(conn, f"{which}_faiss_gen") != gen:
            index = self._rebuild(conn, which)
            self._save_codes(conn, which, index, gen)
        self._codes[which], self._gens[which] = index, gen

    def _rebuild(self, conn: sqlite3.Connection, which: str) -> CodeIndex:
        index = CodeIndex(self.bits)
        index.reset(*codes_from_rows(conn.execute(code_rows_sql(which, "id, code")).fetchall(), self.bits))
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
