"""Scenes cut into chips: the chip grid, chip footprints, scene previews (geometry; the archive plans a run's chips).

A raster larger than the chip size (a 10 000 x 10 000 px orthophoto, a Sentinel-2 granule) is
indexed as windows ``(col_off, row_off, width, height)`` in pixels of the file, each read
with a rasterio window (never the whole scene) and encoded as a tile of its own.

- The grid steps by ``chip - overlap``; the last window of a row/column is shifted back to
  end at the raster's edge (no padding), so every window lies inside the raster and has the
  chip's size. A raster no larger than the chip both ways stays one tile (a long strip only
  one chip high is cut along its length).
- ``chip_m`` gives the chip size in metres where the ground pixel size is known (projected
  CRS in metres/feet, or degrees converted at the scene's latitude): the window then spans
  ``chip_m`` metres and is resampled to the encoder's input size, i.e. to about the ground
  resolution the model was trained on. Elsewhere the ``chip`` pixel size applies.
- ``overlap`` is in the unit of the chip size: metres with ``chip_m``, else pixels.
- A chip's row id is stable while its file and window are: :mod:`archive.planning` reconciles a
  scene's planned windows with its rows (kept windows keep their ids, see ``indexing.py``).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from . import reading as imagery
from ..jobs import UserError

DEFAULT_CHIP = 256  # pixels: chip size used with chip_m where the pixel size is unknown
MIN_CHIP = 32  # pixels: smaller windows say nothing the model can read (and explode in number)
MAX_CHIPS_PER_FILE = 2_000_000  # a guard against a 1-px chip of a huge mosaic
SCENE_PREVIEWS = "scenes"  # subfolder of thumbs/ holding whole-scene previews

@dataclass(frozen=True)
class ChipOptions:
    """How scenes are cut: ``chip`` px and/or ``chip_m`` metres, ``overlap`` in the chip's unit."""

    chip: int | None = None
    overlap: float = 0
    chip_m: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> "ChipOptions | None":
        if not text:
            return None
        d = json.loads(text)
        return cls(d.get("chip"), d.get("overlap") or 0, d.get("chip_m"))

    def describe(self) -> str:
        """Short text for ``duch info`` and the GUI: '256 px, overlap 32 px'."""
        if self.chip_m:
            size = f"{self.chip_m:g} m (else {self.chip or DEFAULT_CHIP} px)"
            return f"{size}, overlap {self.overlap:g} m"
        return f"{self.chip} px, overlap {self.overlap:g} px"


def resolve_options(stored: ChipOptions | None, chip=None, overlap=None, chip_m=None) -> ChipOptions | None:
    """The chip options of a run: the given ones, else the stored ones; None when chipping is off.

    ``chip=0`` turns chipping off (unless ``chip_m`` is given too); ``chip_m=0`` drops the
    metre size. Impossible values raise :class:`UserError` before any work.
    """
    if chip is None and overlap is None and chip_m is None:
        return stored
    base = stored or ChipOptions()
    new_chip = base.chip if chip is None else (int(chip) or None)
    new_m = base.chip_m if chip_m is None else (float(chip_m) or None)
    if chip == 0 and chip_m is None:
        new_m = None
    if new_chip is None and new_m is None:
        if overlap:
            raise UserError("an overlap needs a chip size: give --chip or --chip-m")
        return None
    new_overlap = float(overlap) if overlap is not None else (base.overlap if stored else 0)
    if new_chip is not None and new_chip < MIN_CHIP:
        raise UserError(f"the chip size must be at least {MIN_CHIP} pixels")
    if new_m is not None and not (math.isfinite(new_m) and new_m > 0):
        raise UserError("the chip size in metres must be a positive number")
    limit = new_m if new_m is not None else new_chip
    if not (math.isfinite(new_overlap) and 0 <= new_overlap < limit):
        unit = "metres" if new_m is not None else "pixels"
        raise UserError(f"the overlap must be at least 0 and less than the chip size ({limit:g} {unit})")
    if new_m is None:
        new_overlap = int(round(new_overlap))
    return ChipOptions(new_chip, new_overlap, new_m)


def ground_pixel_size(meta: imagery.TileMeta) -> float | None:
    """Metres per pixel (mean of x and y) of a georeferenced raster, or None when unknown."""
    if not meta.crs or not meta.pixel_size:
        return None
    try:
        from rasterio.crs import CRS

        crs = CRS.from_user_input(meta.crs)
        px, py = float(meta.pixel_size[0]), float(meta.pixel_size[1])
        if crs.is_geographic:  # degrees: metres at the scene's latitude
            lat = _centre_lat(meta)
            if lat is None:
                return None
            size = (px * 111_320.0 * math.cos(math.radians(lat)) + py * 110_574.0) / 2
        else:
            size = (px + py) / 2 * float(crs.linear_units_factor[1])
    except Exception:  # noqa: BLE001 - an exotic CRS only costs the metre chip size
        return None
    return size if math.isfinite(size) and size > 0 else None


def _centre_lat(meta: imagery.TileMeta) -> float | None:
    if meta.footprint:
        lats = [p[1] for p in meta.footprint]
        return (min(lats) + max(lats)) / 2
    if meta.bounds:
        return (meta.bounds[1] + meta.bounds[3]) / 2
    return None


def chip_pixels(opts: ChipOptions, meta: imagery.TileMeta) -> tuple[int, int]:
    """``(chip side, overlap)`` in pixels of this raster."""
    gsd = ground_pixel_size(meta) if opts.chip_m else None
    if gsd is not None:
        side = max(MIN_CHIP, int(round(opts.chip_m / gsd)))
        overlap = int(round(opts.overlap / gsd))
    elif opts.chip_m:  # metre options, unknown pixel size: the pixel chip, same overlap fraction
        side = opts.chip or DEFAULT_CHIP
        overlap = int(round(opts.overlap / opts.chip_m * side))
    else:
        side, overlap = int(opts.chip), int(opts.overlap)
    return side, min(max(overlap, 0), side - 1)


def offsets(length: int, side: int, overlap: int) -> list[int]:
    """Window starts along one axis: a step of ``side - overlap``, the last one ending at the edge."""
    if length <= side:
        return [0]
    step = side - overlap
    starts = list(range(0, length - side, step))
    starts.append(length - side)
    return starts


def plan_windows(opts: ChipOptions | None, meta: imagery.TileMeta) -> np.ndarray | None:
    """The chip windows of a raster as an int64 array (n, 4), or None when it stays one tile."""
    if opts is None:
        return None
    side, overlap = chip_pixels(opts, meta)
    w, h = int(meta.width), int(meta.height)
    if w <= side and h <= side:
        return None
    cols, rows = offsets(w, side, overlap), offsets(h, side, overlap)
    if len(cols) * len(rows) > MAX_CHIPS_PER_FILE:
        raise imagery.ImageryError(f"too many chips ({len(cols) * len(rows)}): use a larger chip size")
    c, r = np.meshgrid(np.asarray(cols, np.int64), np.asarray(rows, np.int64))
    out = np.empty((c.size, 4), np.int64)
    out[:, 0], out[:, 1] = c.ravel(), r.ravel()  # row-major: left to right, then top to bottom
    out[:, 2], out[:, 3] = min(side, w), min(side, h)
    return out


@dataclass
class Header:
    """What planning needs of a scene that gets cut: header facts, transform, windows, content hash."""

    meta: imagery.TileMeta
    transform: object  # affine.Affine, or None when not georeferenced
    windows: np.ndarray  # (n, 4) int64
    content_hash: str


def read_header(path: Path, opts: ChipOptions) -> Header | None:
    """The :class:`Header` of a raster larger than the chip; None for one that stays one tile
    (or that cannot be read: reading it as a whole file then reports why)."""
    try:
        meta = imagery.read_meta(path)
        windows = plan_windows(opts, meta)
        if windows is None:
            return None
        transform = None
        if meta.bounds is not None:  # georeferenced (a plain photo has no transform to read)
            transform = imagery.read_transform(path)
        return Header(meta, transform, windows, imagery.quick_hash(path))
    except imagery.ImageryError:
        return None


def read_headers(paths: Sequence[Path], opts: ChipOptions | None) -> Iterator[Header | None]:
    """:func:`read_header` of each path, lazily; all None (no I/O) when chipping is off."""
    for path in paths:
        yield read_header(path, opts) if opts is not None else None


def window_footprints(transform, crs: str | None, windows: np.ndarray) -> list[list | None]:
    """WGS84 lon/lat rings (closed, 5 points) of the windows' bounding boxes; None where unknown."""
    n = len(windows)
    if transform is None or not crs or n == 0:
        return [None] * n
    try:
        from rasterio.warp import transform as warp

        c0, r0 = windows[:, 0].astype(np.float64), windows[:, 1].astype(np.float64)
        c1, r1 = c0 + windows[:, 2], r0 + windows[:, 3]
        cols = np.concatenate([c0, c1, c1, c0])
        rows = np.concatenate([r0, r0, r1, r1])
        a, b, xoff, d, e, yoff = (transform.a, transform.b, transform.c, transform.d, transform.e, transform.f)
        xs, ys = a * cols + b * rows + xoff, d * cols + e * rows + yoff
        lon, lat = (np.asarray(v).reshape(4, n) for v in warp(crs, "EPSG:4326", xs.tolist(), ys.tolist()))
    except Exception:  # noqa: BLE001 - an exotic CRS only costs the map footprints
        return [None] * n
    w, e_, s, n_ = lon.min(0), lon.max(0), lat.min(0), lat.max(0)
    out: list[list | None] = []
    for i in range(n):
        box = (float(w[i]), float(s[i]), float(e_[i]), float(n_[i]))
        out.append([[box[0], box[1]], [box[2], box[1]], [box[2], box[3]], [box[0], box[3]], [box[0], box[1]]]
                   if all(map(math.isfinite, box)) and -180 <= box[0] <= box[2] <= 180
                   and -90 <= box[1] <= box[3] <= 90 else None)  # broken georeferencing: no footprint
    return out


def preview_rect(window: Sequence[int] | None, scene_size: tuple[int, int],
                 preview_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The window as ``(x0, y0, x1, y1)`` in pixels of a preview of the whole scene."""
    W, H = (max(1, int(v)) for v in scene_size)
    pw, ph = preview_size
    c, r, w, h = window if window is not None else (0, 0, W, H)
    sx, sy = pw / W, ph / H
    return (round(c * sx, 2), round(r * sy, 2), round((c + w) * sx, 2), round((r + h) * sy, 2))


def scene_preview(thumbs_dir: Path, path: Path, rel_bytes: bytes, version: str, size: int,
                  bands=None, stretch: str = "auto") -> tuple[Path, tuple[int, int]]:
    """A cached JPEG of a whole scene (long side ``size``) and its pixel size; made on first call.

    Cached under ``thumbs/scenes/<size>/`` by file name and ``version`` (content hash), so a
    changed scene gets a new preview and its old ones are removed. Raises ImageryError.
    """
    from PIL import Image

    folder = Path(thumbs_dir) / SCENE_PREVIEWS / str(int(size))
    key = hashlib.sha1(bytes(rel_bytes)).hexdigest()[:16]
    dest = folder / f"{key}-{hashlib.sha1(str(version).encode()).hexdigest()[:12]}.jpg"
    if not (dest.is_file() and imagery.whole_jpeg(dest)):  # a damaged cached preview is made again
        folder.mkdir(parents=True, exist_ok=True)
        try:
            imagery.make_thumbnail(path, dest, size, bands=bands, stretch=stretch)
        except ValueError:  # the archive's band choice does not fit this particular file
            imagery.make_thumbnail(path, dest, size, stretch=stretch)
        for old in folder.glob(f"{key}-*.jpg"):
            if old != dest:
                old.unlink(missing_ok=True)
    with Image.open(dest) as im:
        return dest, im.size


def window_text(window) -> str:
    """A chip window ``(col_off, row_off, width, height)`` as 'x 224, y 448, 256x256' ('' for None)."""
    if window is None:
        return ""
    c, r, w, h = (int(v) for v in window)
    return f"x {c}, y {r}, {w}x{h}"
