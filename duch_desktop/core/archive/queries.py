"""Query side of an archive: query -> code, the result records, and the archive's read methods.

:class:`ArchiveQueries` holds everything :class:`index.Archive` answers without writing
(search, similar, captions, tile records, thumbnails, scene previews, stats); ``index.py``
opens, ``indexing.py`` indexes, ``codes.py`` holds the Hamming index. Each thread reads
through its own SQLite connection (``self._db()``).
"""
from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..imagery import reading as imagery
from ..imagery.chips import SCENE_PREVIEWS, ChipOptions, preview_rect, scene_preview
from ..files import display_path, unlink_quietly
from ..jobs import UserError
from .database import get_meta, window_text

__all__ = ["ArchiveQueries", "Hit", "CaptionHit", "TileRecord", "text_code", "image_code", "DEFAULT_INPUT_SIZE"]

DEFAULT_INPUT_SIZE = 224  # side of the square tile fed to an encoder that does not say


# --------------------------------------------------------------------------- query -> code

def text_code(model, text_encoder, text: str) -> np.ndarray:
    """Packed code (1, bits/8) of one typed query; an empty query is a :class:`UserError`."""
    if not isinstance(text, str) or not text.strip():
        raise UserError("type a description to search")
    feats = text_encoder.encode([" ".join(text.split())])
    return model.text_codes(feats)


def query_note(text_encoder, text: str) -> str | None:
    """A note for the user when the text encoder will not read all of ``text`` (None otherwise)."""
    count, limit = getattr(text_encoder, "token_count", None), getattr(text_encoder, "max_tokens", None)
    if count is None or limit is None or not isinstance(text, str) or not text.strip():
        return None
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


# --------------------------------------------------------------------------- records

@dataclass
class Hit:
    """One search result; ``rel`` is printable, ``path`` is the real file (may hold surrogates).

    A chip of a scene has its ``window`` ``(col_off, row_off, width, height)`` in pixels of the
    file and ``footprint`` of the window; ``scene_size`` is the file's ``(width, height)``.
    """

    tile_id: int
    rel: str
    path: Path
    distance: int
    footprint: list | None = None
    rank: int = 0
    window: tuple[int, int, int, int] | None = None
    scene_size: tuple[int, int] | None = None


@dataclass
class CaptionHit:
    """A caption of the caption archive and its Hamming distance to the query image."""

    text: str
    distance: int
    source: str


@dataclass
class TileRecord:
    """Everything stored about one scanned file, or one chip of a scene.

    For a chip, ``window`` is its pixel window, ``footprint`` the window's, while ``meta``,
    ``size``, ``content_hash`` and ``scene_size`` describe the whole file.
    """

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
    window: tuple[int, int, int, int] | None = None
    scene_size: tuple[int, int] | None = None


def _window(row: Sequence) -> tuple[int, int, int, int] | None:
    return None if row[0] is None else tuple(int(v) for v in row)


def _size(w, h) -> tuple[int, int] | None:
    return None if w is None or h is None else (int(w), int(h))


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
    def chip_options(self) -> ChipOptions | None:
        """How scenes were cut into chips (None: every file is one tile)."""
        return ChipOptions.from_json(get_meta(self._db(), "chips"))

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

    def query_note(self, query: str) -> str | None:
        """What the user should know about how ``query`` was read (e.g. truncated), or None."""
        return query_note(self.text_encoder, query)

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
                why = {"error": f"could not be read ({row[2]})", "nodata": "has no valid pixels"}.get(
                    row[1], "is not indexed yet")
                raise UserError(f"tile {row[0]} {why}")
            return np.frombuffer(row[3], dtype=np.uint8)[None], {int(image)}
        opts = self.options
        return image_code(self.model, self.image_encoder, Path(image), opts["bands"], opts["stretch"]), set()

    def _hits(self, pairs: list[tuple[int, int]]) -> list[Hit]:
        rows = _rows_by_id(self._db(), "SELECT id, rel, rel_bytes, footprint, win_col, win_row, win_w, win_h, "
                                       "width, height FROM tiles", [i for i, _ in pairs])
        hits = []
        for i, d in pairs:
            row = rows.get(i)
            if row is None:  # removed by a concurrent indexing run between search and lookup
                continue
            hits.append(Hit(i, row[1], self.root / os.fsdecode(bytes(row[2])), d,
                            json.loads(row[3]) if row[3] else None, len(hits) + 1, _window(row[4:8]),
                            _size(row[8], row[9])))
        return hits

    def tile(self, tile_id: int) -> TileRecord:
        """The stored record of one tile; unknown ids raise :class:`UserError`."""
        row = self._db().execute(
            "SELECT id, rel, rel_bytes, size, mtime_ns, status, error, meta, footprint, content_hash, "
            "win_col, win_row, win_w, win_h, width, height FROM tiles WHERE id = ?", (int(tile_id),)).fetchone()
        if row is None:
            raise UserError(f"no tile with id {int(tile_id)} in this index")
        meta = imagery.TileMeta.from_dict(json.loads(row[7])) if row[7] else None
        return TileRecord(row[0], row[1], self.root / os.fsdecode(bytes(row[2])), row[3], row[4], row[5], row[6],
                          meta, json.loads(row[8]) if row[8] else None, row[9], _window(row[10:14]),
                          _size(row[14], row[15]))

    def _thumb_path(self, tile_id: int, size: int) -> Path:
        # The common size sits flat in thumbs/ (the documented place); other sizes get a subfolder.
        if size == self.THUMB_SIZE:
            return self.thumbs_dir / f"{int(tile_id)}.jpg"
        return self.thumbs_dir / str(int(size)) / f"{int(tile_id)}.jpg"

    def thumbnail(self, tile_id: int, size: int = 256) -> Path:
        """A cached JPEG of the tile (a chip: its window; long side ``size``), made on first request; any thread."""
        dest = self._thumb_path(tile_id, size)
        if dest.is_file():
            return dest
        rec = self.tile(tile_id)
        dest.parent.mkdir(parents=True, exist_ok=True)
        opts = self.options
        try:
            try:
                imagery.make_thumbnail(rec.path, dest, size, bands=opts["bands"], window=rec.window,
                                       stretch=opts["stretch"])
            except ValueError:  # the archive's band choice does not fit this particular file
                imagery.make_thumbnail(rec.path, dest, size, window=rec.window, stretch=opts["stretch"])
        except (imagery.ImageryError, ValueError) as e:
            raise UserError(f"cannot show {rec.rel}: {e}") from e
        return dest

    def scene_preview(self, tile_id: int, size: int = 512) -> tuple[Path, tuple[float, float, float, float]]:
        """A cached JPEG of the whole file a tile belongs to (long side ``size``) and the tile's
        rectangle ``(x0, y0, x1, y1)`` in pixels of that preview (the whole image for a file that
        is one tile); made on first request, any thread."""
        rec = self.tile(tile_id)
        rel_bytes = os.fsencode(rec.path.relative_to(self.root))
        opts = self.options
        try:
            path, px = scene_preview(self.thumbs_dir, rec.path, rel_bytes, rec.content_hash or rec.mtime_ns,
                                     int(size), opts["bands"], opts["stretch"])
        except (imagery.ImageryError, OSError) as e:
            raise UserError(f"cannot show {rec.rel}: {e}") from e
        scene = rec.scene_size or ((rec.meta.width, rec.meta.height) if rec.meta else px)
        return path, preview_rect(rec.window, scene, px)

    def _drop_thumbs(self, ids) -> None:
        """Forget cached thumbnails of tiles that changed or vanished (ids are never reused)."""
        if not len(ids) or not self.thumbs_dir.is_dir():
            return
        sizes = [p for p in self.thumbs_dir.iterdir() if p.is_dir() and p.name != SCENE_PREVIEWS]
        for i in ids:
            for folder in [self.thumbs_dir, *sizes]:
                unlink_quietly(folder / f"{int(i)}.jpg")

    def stats(self) -> dict:
        """Counts, model, encoders, options, root, on-disk size of the index and last run time.

        ``tiles`` counts searchable tiles, chips included (``chips`` of them, from ``scenes``
        files); ``nodata`` the chips skipped for lack of valid pixels; ``chip_options`` is None
        or ``{"chip", "overlap", "chip_m"}``.
        """
        conn = self._db()
        counts = dict(conn.execute("SELECT status, COUNT(*) FROM tiles GROUP BY status").fetchall())
        n_chips, n_scenes = conn.execute("SELECT COUNT(*), COUNT(DISTINCT rel_bytes) FROM tiles "
                                         "WHERE win_col IS NOT NULL AND status = 'ok'").fetchone()
        size = sum(f.stat().st_size for f in self.index_dir.iterdir() if f.is_file())
        cut = self.chip_options
        return {
            "root": display_path(self.root), "index_dir": str(self.index_dir),
            "tiles": counts.get("ok", 0), "errors": counts.get("error", 0), "pending": counts.get("pending", 0),
            "nodata": counts.get("nodata", 0), "chips": n_chips, "scenes": n_scenes,
            "captions": conn.execute("SELECT COUNT(*) FROM captions").fetchone()[0],
            "bits": int(get_meta(conn, "bits", self.model.bits)),
            "model_fingerprint": get_meta(conn, "model_fingerprint"), "loaded_model": self.model.fingerprint,
            "model_dir": get_meta(conn, "model_dir"), "stale": self.stale,
            "image_encoder": get_meta(conn, "image_encoder", self.model.image_encoder),
            "text_encoder": get_meta(conn, "text_encoder", self.model.text_encoder),
            "options": self.options, "chip_options": asdict(cut) if cut else None,
            "index_bytes": size, "last_indexed": get_meta(conn, "last_indexed"),
        }

    def errors(self) -> list[tuple[str, str]]:
        """``(rel, reason)`` of every file (or chip: its window leads the reason) that could not be read."""
        rows = self._db().execute("SELECT rel, error, win_col, win_row, win_w, win_h FROM tiles "
                                  "WHERE status = 'error' ORDER BY rel_bytes, win_row, win_col")
        return [(r[0], (f"{window_text(r[2:])}: " if r[2] is not None else "") + (r[1] or "unreadable"))
                for r in rows]


def _rows_by_id(conn: sqlite3.Connection, select: str, ids: list[int]) -> dict[int, tuple]:
    """``{id: row}`` of ``select`` restricted to ``ids`` (a constant SELECT; ids are bound parameters)."""
    out: dict[int, tuple] = {}
    for start in range(0, len(ids), 500):  # stay well below SQLite's bound-parameter limit
        chunk = ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        out.update((r[0], r) for r in conn.execute(f"{select} WHERE id IN ({marks})", chunk))
    return out

