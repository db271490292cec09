"""The read side of an archive: query -> code -> Hamming table -> records.

:class:`Queries` answers everything that does not write (search, similar, captions, tile
records, thumbnails, scene previews, stats, errors) from the parts :class:`archive.Archive`
gives it: the :class:`database.Database`, the :class:`tables.HammingTables`, the thumbnail cache
and the model with its encoders. Each thread reads through its own SQLite connection.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..files import display_path
from ..imagery import reading as imagery
from ..imagery.chips import preview_rect, window_text
from ..jobs import UserError
from ..model.defaults import Encoders
from .database import Database
from .records import ArchiveStats, CaptionHit, Hit, TileRecord, size_of, window_of_row
from .tables import HammingTables
from .thumbs import Thumbnails

DEFAULT_INPUT_SIZE = 224  # side of the square tile fed to an encoder that does not say


# --------------------------------------------------------------------------- query -> code

def clean_query(text) -> str:
    """A typed query as text a tokenizer takes: bytes that are not UTF-8 (a command line in another
    encoding arrives as lone surrogates) and lone surrogates become U+FFFD; anything else is kept."""
    if isinstance(text, (bytes, bytearray)):
        return bytes(text).decode("utf-8", "replace")
    if not isinstance(text, str):
        raise UserError("type a description to search")
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace")


def text_code(model, text_encoder, text: str) -> np.ndarray:
    """Packed code (1, bits/8) of one typed query; an empty query is a :class:`UserError`."""
    text = clean_query(text)
    if not text.strip():
        raise UserError("type a description to search")
    feats = text_encoder.encode([" ".join(text.split())])
    return model.text_codes(feats)


def query_note(text_encoder, text: str) -> str | None:
    """A note for the user when the text encoder will not read all of ``text`` (None otherwise)."""
    count, limit = getattr(text_encoder, "token_count", None), getattr(text_encoder, "max_tokens", None)
    if count is None or limit is None or not isinstance(text, (str, bytes)) or not clean_query(text).strip():
        return None
    text = clean_query(text)
    n = count(" ".join(text.split()))
    if n <= limit:
        return None
    kept = text_encoder.kept_text(" ".join(text.split()))
    return (f"the description is {n} tokens long; the text encoder reads only the first {limit}, "
            f"so the search used “{kept[:60]}…” ({len(kept.split())} words)")


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


# --------------------------------------------------------------------------- archive reads

class Queries:
    """Read-side operations of one archive."""

    def __init__(self, db: Database, tables: HammingTables, thumbs: Thumbnails, encoders: Encoders,
                 root: Path, index_dir: Path):
        self.db, self.tables, self.thumbs, self.encoders = db, tables, thumbs, encoders
        self.model, self.root, self.index_dir = encoders.model, root, index_dir

    @property
    def stale(self) -> bool:
        """True when the index was built with another hashing model than the one loaded."""
        fp = self.db.get_meta("model_fingerprint")
        return fp is not None and fp != self.model.fingerprint

    def _check_fresh(self) -> None:
        if self.stale:
            raise UserError("this index was built with another hashing model: index the folder again")

    def search_text(self, query: str, k: int = 20, radius: int | None = None) -> list[Hit]:
        """Tiles whose codes are nearest to the code of ``query``, nearest first."""
        if not isinstance(query, str) or not query.strip():
            raise UserError("type a description to search")
        self._check_fresh()
        return self._hits(self.tables["tiles"].search(text_code(self.model, self.encoders.text, query), k, radius))

    def query_note(self, query: str) -> str | None:
        """What the user should know about how ``query`` was read (e.g. truncated), or None."""
        return query_note(self.encoders.text, query)

    def similar(self, image: int | Path, k: int = 20, radius: int | None = None) -> list[Hit]:
        """Tiles nearest to an indexed tile (by id; itself left out) or to any image file."""
        self._check_fresh()
        code, exclude = self._query_code(image)
        return self._hits(self.tables["tiles"].search(code, k, radius, exclude))

    def captions_for(self, image: int | Path, k: int = 10) -> list[CaptionHit]:
        """Captions of the caption archive nearest to an indexed tile or an image file."""
        self._check_fresh()
        code, _ = self._query_code(image)
        pairs = self.tables["captions"].search(code, k)
        rows = self.db.caption_rows([i for i, _ in pairs])
        return [CaptionHit(rows[i][1], d, rows[i][2]) for i, d in pairs if i in rows]

    def _query_code(self, image) -> tuple[np.ndarray, set[int]]:
        if isinstance(image, (int, np.integer)) and not isinstance(image, bool):
            row = self.db.tile_code(int(image))
            if row is None:
                raise UserError(f"no tile with id {int(image)} in this index")
            if row[1] != "ok" or row[3] is None:
                why = {"error": f"could not be read ({row[2]})", "nodata": "has no valid pixels"}.get(
                    row[1], "is not indexed yet")
                raise UserError(f"tile {row[0]} {why}")
            return np.frombuffer(row[3], dtype=np.uint8)[None], {int(image)}
        opts = self.db.options()
        return image_code(self.model, self.encoders.image, Path(image), opts["bands"], opts["stretch"]), set()

    def _hits(self, pairs: list[tuple[int, int]]) -> list[Hit]:
        rows = self.db.hit_rows([i for i, _ in pairs])
        hits = []
        for i, d in pairs:
            row = rows.get(i)
            if row is None:  # removed by a concurrent indexing run between search and lookup
                continue
            hits.append(Hit(i, row[1], self.root / os.fsdecode(bytes(row[2])), d,
                            json.loads(row[3]) if row[3] else None, len(hits) + 1, window_of_row(row[4:8]),
                            size_of(row[8], row[9])))
        return hits

    def tile(self, tile_id: int) -> TileRecord:
        """The stored record of one tile; unknown ids raise :class:`UserError`."""
        row = self.db.record_row(int(tile_id))
        if row is None:
            raise UserError(f"no tile with id {int(tile_id)} in this index")
        meta = imagery.TileMeta.from_dict(json.loads(row[7])) if row[7] else None
        return TileRecord(row[0], row[1], self.root / os.fsdecode(bytes(row[2])), row[3], row[4], row[5], row[6],
                          meta, json.loads(row[8]) if row[8] else None, row[9], window_of_row(row[10:14]),
                          size_of(row[14], row[15]))

    def thumbnail(self, tile_id: int, size: int = 256) -> Path:
        """A cached JPEG of the tile (a chip: its window; long side ``size``), made on first request; any thread."""
        dest = self.thumbs.path(tile_id, size)
        if dest.is_file() and imagery.whole_jpeg(dest):  # a damaged cached thumbnail is made again
            return dest
        rec = self.tile(tile_id)
        try:
            self.thumbs.make(rec.path, dest, size, self.db.options(), rec.window)
        except (imagery.ImageryError, ValueError) as e:
            raise UserError(f"cannot show {rec.rel}: {e}") from e
        return dest

    def scene_preview(self, tile_id: int, size: int = 512) -> tuple[Path, tuple[float, float, float, float]]:
        """A cached JPEG of the whole file a tile belongs to (long side ``size``) and the tile's
        rectangle ``(x0, y0, x1, y1)`` in pixels of that preview (the whole image for a file that
        is one tile); made on first request, any thread."""
        rec = self.tile(tile_id)
        rel_bytes = os.fsencode(rec.path.relative_to(self.root))
        try:
            path, px = self.thumbs.scene(rec.path, rel_bytes, rec.content_hash or rec.mtime_ns, int(size),
                                         self.db.options())
        except (imagery.ImageryError, OSError) as e:
            raise UserError(f"cannot show {rec.rel}: {e}") from e
        scene = rec.scene_size or ((rec.meta.width, rec.meta.height) if rec.meta else px)
        return path, preview_rect(rec.window, scene, px)

    def stats(self) -> ArchiveStats:
        """Counts, model, encoders, options, root, on-disk size of the index and last run time."""
        db = self.db
        counts, n_chips, n_scenes, n_captions = db.counts()
        return ArchiveStats(
            root=display_path(self.root), index_dir=str(self.index_dir),
            tiles=counts.get("ok", 0), errors=counts.get("error", 0), pending=counts.get("pending", 0),
            nodata=counts.get("nodata", 0), chips=n_chips, scenes=n_scenes, captions=n_captions,
            bits=int(db.get_meta("bits", self.model.bits)),
            model_fingerprint=db.get_meta("model_fingerprint"), loaded_model=self.model.fingerprint,
            model_dir=db.get_meta("model_dir"), stale=self.stale,
            image_encoder=db.get_meta("image_encoder", self.model.image_encoder),
            text_encoder=db.get_meta("text_encoder", self.model.text_encoder),
            options=db.options(), chip_options=db.chip_options(),
            index_bytes=sum(f.stat().st_size for f in self.index_dir.iterdir() if f.is_file()),
            last_indexed=db.get_meta("last_indexed"))

    def skipped(self) -> list[tuple[str, str]]:
        """``(rel, reason)`` of what the last indexing run's scan skipped: folders it could not read,
        links leading outside the folder, paths too long, broken links."""
        text = self.db.get_meta("skipped")
        try:
            return [(str(rel), str(reason)) for rel, reason in json.loads(text)] if text else []
        except (ValueError, TypeError):
            return []

    def errors(self) -> list[tuple[str, str]]:
        """``(rel, reason)`` of every file (or chip: its window leads the reason) that could not be read."""
        return [(r[0], (f"{window_text(r[2:])}: " if r[2] is not None else "") + (r[1] or "unreadable"))
                for r in self.db.error_rows()]
