"""The archive: a searchable index of one imagery folder, kept in its own index directory.

:class:`Archive` opens and closes an index (the layout is described in :mod:`database`; never
inside the imagery folder by default, see :func:`defaults.default_index_dir`) and is composed
of its parts:

- ``db`` (:class:`database.Database`): ``archive.sqlite``, which owns every SQL statement;
- ``tables`` (:class:`tables.HammingTables`): the Hamming tables of tiles and captions (faiss),
  rebuilt from SQLite when not in step with it;
- ``thumbs`` (:class:`thumbs.Thumbnails`): the thumbnail cache;
- ``encoders`` (:class:`defaults.Encoders`): the hashing model and its frozen encoders;
- ``indexer`` (:class:`indexing.Indexer`): the write side (scan, diff, plan chips, encode);
- ``queries`` (:class:`queries.Queries`): the read side (search, records, thumbnails, stats).

SQLite is the source of truth: every batch of tiles commits rows and codes together, and a
faiss file that is missing, unreadable or older than the database is rebuilt from it on open.
So a kill -9 at any moment leaves an index that opens and resumes without duplicates or lost
tiles.
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ..files import display_path
from ..imagery.chips import ChipOptions
from ..jobs import Job, UserError
from ..model.defaults import Encoders, resolve_model
from .database import (ARCHIVE_DB, CAPTIONS_FAISS, FAISS_FILES, FORMAT, RUN_LOCK, THUMBS, TILES_FAISS, Database, now,
                       storage_error)
from .captions import read_caption_texts
from .indexing import SAVE_EVERY_S, STRETCHES, Indexer, IndexReport
from .queries import Queries
from .records import ArchiveStats, CaptionHit, Hit, TileRecord
from .tables import HammingTables
from .thumbs import Thumbnails

# The GUI and the CLI import the records and the run report from here.
__all__ = ["Archive", "ArchiveStats", "IndexReport", "Hit", "CaptionHit", "TileRecord", "read_caption_texts",
           "ARCHIVE_DB", "TILES_FAISS", "CAPTIONS_FAISS", "THUMBS", "RUN_LOCK", "FORMAT", "STRETCHES",
           "SAVE_EVERY_S"]


class Archive:
    """An opened index; safe to query from several threads while one thread indexes."""

    THUMB_SIZE = Thumbnails.SIZE

    def __init__(self, index_dir: Path, root: Path, model, model_dir: Path | None,
                 image_encoder=None, text_encoder=None, runtime: str | None = None):
        self.index_dir, self.root, self.model, self.model_dir = index_dir, root, model, model_dir
        self.db = Database(index_dir / ARCHIVE_DB)
        self.encoders = Encoders(model, image_encoder, text_encoder, runtime)
        self.thumbs = Thumbnails(index_dir / THUMBS)
        self.tables = HammingTables(index_dir, int(self.db.get_meta("bits", model.bits)))
        for which in FAISS_FILES:
            self.tables.load(self.db, which)
        self.indexer = Indexer(self.db, self.tables, self.thumbs, self.encoders, root, index_dir, model_dir)
        self.queries = Queries(self.db, self.tables, self.thumbs, self.encoders, root, index_dir)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, index_dir, model=None, image_encoder=None,
             text_encoder=None, create_root: Path | None = None, runtime: str | None = None) -> "Archive":
        """Open the index at ``index_dir``, or create it for the folder ``create_root``.

        ``model``: a :class:`DuchModel`, a bundle directory, or None for the bundle recorded in
        the index (else the default bundle). Encoders are loaded lazily from the model's
        identities unless given, on ``runtime`` (auto/onnx/torch, see :mod:`runtime`; codes do not
        depend on it). Problems the user can fix raise :class:`UserError`.
        """
        index_dir = Path(os.path.abspath(index_dir))
        root = Path(os.path.abspath(create_root)) if create_root is not None else None
        if not (index_dir / ARCHIVE_DB).is_file():
            _check_new_index(index_dir, root)
        fmt, stored, recorded_model = _prepare(index_dir)
        if fmt > FORMAT:
            raise UserError(f"the index at {index_dir} was made by a newer DUCH Desktop: update the app")
        if stored is None and root is None:
            raise UserError(f"the index at {index_dir} is incomplete: index the folder again")
        if stored is not None and root is not None and bytes(stored) != os.fsencode(root):
            raise UserError(f"{index_dir} holds the index of {display_path(stored)}, not of {os.fsdecode(root)}")
        root = root or Path(os.fsdecode(bytes(stored)))
        try:
            (index_dir / THUMBS).mkdir(exist_ok=True)
        except OSError:  # a cache: a thumbnail asked for later says what is wrong
            pass
        model, model_dir = resolve_model(model, recorded_model)
        try:
            archive = cls(index_dir, root, model, model_dir, image_encoder, text_encoder, runtime)
            if stored is None:
                with archive.db.transaction():
                    for k, v in (("root", os.fsencode(root)), ("format", FORMAT), ("created", now()),
                                 ("tiles_gen", 0), ("captions_gen", 0)):
                        archive.db.set_meta(k, v)
        except sqlite3.DatabaseError as e:  # damage past the header shows up on the first real query
            raise _damaged(e, index_dir) from e
        return archive

    def close(self) -> None:
        """Close every connection this archive opened."""
        self.db.close()

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ the parts' public faces
    @property
    def bits(self) -> int:
        return self.tables.bits

    @property
    def runtime(self) -> str | None:
        """The runtime of the encoders loaded from the model's identities (None: the default)."""
        return self.encoders.runtime

    def use_runtime(self, runtime: str | None) -> None:
        """Load the encoders on ``runtime`` from now on (None: the default); see :meth:`Encoders.use_runtime`."""
        self.encoders.use_runtime(runtime)

    def describe_runtime(self) -> str:
        """What the encoders run on, or will once loaded (see :meth:`Encoders.describe_runtime`)."""
        return self.encoders.describe_runtime()

    def watch_encoders(self, callback) -> None:
        """Call ``callback()`` whenever an encoder is loaded or the runtime changes (any thread)."""
        self.encoders.watch(callback)

    @property
    def image_encoder(self):
        return self.encoders.image

    @property
    def text_encoder(self):
        return self.encoders.text

    @property
    def loaded_image_encoder(self):
        """The image encoder given to :meth:`open` or loaded since; None while it is not (no loading here)."""
        return self.encoders.loaded_image

    @property
    def options(self) -> dict:
        """Band/stretch options the tiles were read with."""
        return self.db.options()

    @property
    def chip_options(self) -> ChipOptions | None:
        """How scenes were cut into chips (None: every file is one tile)."""
        return self.db.chip_options()

    @property
    def stale(self) -> bool:
        """True when the index was built with another hashing model than the one loaded."""
        return self.queries.stale

    @property
    def last_report(self) -> IndexReport | None:
        """The report of the latest indexing run of this object (also of a cancelled one)."""
        return self.indexer.last_report

    def index(self, **options) -> Job[IndexReport]:
        """Bring the index up to date with the folder: see :meth:`indexing.Indexer.index`."""
        return self.indexer.index(**options)

    def search_text(self, query: str, k: int = 20, radius: int | None = None) -> list[Hit]:
        return self.queries.search_text(query, k, radius)

    def query_note(self, query: str) -> str | None:
        return self.queries.query_note(query)

    def similar(self, image: int | Path, k: int = 20, radius: int | None = None) -> list[Hit]:
        return self.queries.similar(image, k, radius)

    def captions_for(self, image: int | Path, k: int = 10) -> list[CaptionHit]:
        return self.queries.captions_for(image, k)

    def tile(self, tile_id: int) -> TileRecord:
        return self.queries.tile(tile_id)

    def thumbnail(self, tile_id: int, size: int = THUMB_SIZE) -> Path:
        return self.queries.thumbnail(tile_id, size)

    def scene_preview(self, tile_id: int, size: int = 512) -> tuple[Path, tuple[float, float, float, float]]:
        return self.queries.scene_preview(tile_id, size)

    def stats(self) -> ArchiveStats:
        return self.queries.stats()

    def errors(self) -> list[tuple[str, str]]:
        return self.queries.errors()

    def skipped(self) -> list[tuple[str, str]]:
        return self.queries.skipped()


def _check_new_index(index_dir: Path, root: Path | None) -> None:
    """A new index needs a folder to index, and a place to live."""
    if root is None:
        raise UserError(f"no index at {index_dir}: run `duch index FOLDER` first")
    if not root.is_dir():
        raise UserError(f"folder not found: {os.fsdecode(root)}")
    try:
        (index_dir / THUMBS).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the index folder {index_dir}: {e.strerror or e}") from e


def _prepare(index_dir: Path) -> tuple[int, bytes | None, str | None]:
    """Create or migrate the database; ``(format, recorded root, recorded model dir)``."""
    db = Database(index_dir / ARCHIVE_DB)
    try:
        return db.prepare()
    except sqlite3.DatabaseError as e:
        raise _damaged(e, index_dir) from e
    finally:
        db.close()


def _damaged(e: sqlite3.DatabaseError, index_dir: Path) -> UserError:
    """Storage trouble (disk full, read-only, permissions) in one plain sentence; real damage with the way out."""
    return storage_error(e, index_dir) or UserError(
        f"the index at {index_dir} is unreadable ({e}): delete it and index the folder again")
