"""Reading local raster tiles (GeoTIFF, JPEG, PNG, JP2) safely and cheaply; Qt-free.

A bad file only ever raises :class:`ImageryError` (bad arguments raise ``ValueError``).
Rasters are read decimated, so a 10 GB mosaic costs about as much as a 448 px tile, and
nothing is ever written next to the source files.
"""
from __future__ import annotations

import errno
import hashlib
import math
import os
import re
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import rasterio
from PIL import Image
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from ..files import atomic_path
from ..jobs import UserError
from .budget import MAX_DECODE_BYTES, dataset_bytes, over_budget, pixels_bytes

SUPPORTED_SUFFIXES: frozenset[str] = frozenset({".tif", ".tiff", ".jpg", ".jpeg", ".png", ".jp2"})
# The app's own index folder (with thumbnail JPEGs) may sit inside the scanned root.
SKIP_DIR_SUFFIXES = (".duchindex",)

_PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png"}
_STRETCHES = ("auto", "percentile", "none")
_PIL_MAX_PIXELS = 16_000_000  # Pillow decodes whole images; beyond this GDAL decimates
_GDAL_OPTIONS = dict(
    GDAL_PAM_ENABLED="NO",  # never write .aux.xml next to the user's files
    # Bytes (rasterio passes an int straight to GDALSetCacheMax64: a bare 64 meant 64 *bytes*, which
    # made GDAL decode each JPEG block once per output row: 9 s instead of 0.07 s for a 4000 px preview).
    GDAL_CACHEMAX=64 * 2**20,  # a decimated read of a huge raster touches every block (~1.2 GB default)
    GDAL_DISABLE_READDIR_ON_OPEN="TRUE",  # opening one file must not list a 100k-file folder
    GDAL_ERROR_ON_LIBJPEG_WARNING="TRUE",  # a truncated JPEG is an error, not a grey tile
)
_MAGIC = ((b"II*\0", "TIFF"), (b"MM\0*", "TIFF"), (b"II+\0", "TIFF"), (b"MM\0+", "TIFF"),
          (b"\xff\xd8\xff", "JPEG"), (b"\x89PNG", "PNG"), (b"\0\0\0\x0cjP  ", "JPEG 2000"),
          (b"\xffO\xffQ", "JPEG 2000"))
_TEXT_BYTES = bytes(range(32, 256)) + b"\t\n\r\f"
_DAMAGE_WORDS = ("read error", "readencoded", "fill", "ireadblock", "io error", "truncated",
                 "premature", "not recognized", "corrupt", "broken", "invalid", "failed")
_BAND_HELP = 'bad band list "{}": use 1-based band numbers like 4,3,2'
_BAND_COUNT_HELP = 'bad band list "{}": give one band (grey) or three (red,green,blue), like 4,3,2'


class ImageryError(Exception):
    """One file could not be read; ``str(e)`` is a short plain reason."""


class _BadArgument(ValueError):
    """A caller mistake (bands, window); must pass through the error translation."""


@dataclass
class TileMeta:
    """Header facts about one raster (cheap to get, round-trips through strict JSON)."""

    width: int
    height: int
    bands: int
    dtype: str
    crs: str | None = None
    bounds: tuple[float, float, float, float] | None = None
    footprint: list[tuple[float, float]] | None = None
    pixel_size: tuple[float, float] | None = None
    nodata: float | None = None
    footprint_note: str | None = None  # why a georeferenced raster has no footprint

    def to_dict(self) -> dict:
        """JSON-serialisable dict; a NaN/inf nodata is stored as a string (strict JSON has none)."""
        d = asdict(self)
        for key in ("bounds", "pixel_size"):
            d[key] = list(d[key]) if d[key] is not None else None
        d["footprint"] = [list(p) for p in self.footprint] if self.footprint is not None else None
        if self.nodata is not None and not math.isfinite(self.nodata):
            d["nodata"] = str(self.nodata)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TileMeta":
        """Inverse of :meth:`to_dict`."""
        def tup(v):
            return tuple(v) if v is not None else None
        fp = d.get("footprint")
        return cls(int(d["width"]), int(d["height"]), int(d["bands"]), str(d["dtype"]),
                   d.get("crs"), tup(d.get("bounds")), [tuple(p) for p in fp] if fp else None,
                   tup(d.get("pixel_size")),
                   float(d["nodata"]) if d.get("nodata") is not None else None, d.get("footprint_note"))


@dataclass
class ScanEntry:
    """One candidate raster found by :func:`scan`."""

    path: Path
    rel: str
    size: int
    mtime_ns: int


def scan(root: Path, follow_symlinks: bool = False, errors: list | None = None) -> Iterator[ScanEntry]:
    """Yield every file under ``root`` with a supported suffix, depth-first in name order.

    ``rel`` uses '/' separators. Links whose target lies outside ``root`` are skipped unless
    ``follow_symlinks``; links to folders inside ``root`` are never followed (the real folder
    is scanned anyway) and no folder is entered twice, so link loops cannot hang. Unreadable
    folders, broken links and skipped links are reported in ``errors`` as ``(rel, reason)``.
    Raises :class:`UserError` only when ``root`` is not a folder.
    """
    root = Path(os.path.abspath(root))
    if not root.is_dir():
        raise UserError(f"folder not found: {os.fsdecode(root)}")
    real_root = os.path.realpath(root)
    st = os.stat(root)
    visited = {(st.st_dev, st.st_ino)}

    def note(rel: str, reason: str) -> None:
        if errors is not None:
            errors.append((rel, reason))

    def listing(path: str, rel: str) -> Iterator[os.DirEntry]:
        try:
            with os.scandir(path) as it:
                return iter(sorted(it, key=lambda e: e.name))
        except OSError as e:
            note(rel or ".", _os_reason(e))
            return iter(())

    stack = [("", listing(str(root), ""))]
    while stack:
        prefix, it = stack[-1]
        entry = next(it, None)
        if entry is None:
            stack.pop()
            continue
        rel = prefix + entry.name
        try:
            is_link = entry.is_symlink()
            outside = is_link and not _within(os.path.realpath(entry.path), real_root)
            if entry.is_dir(follow_symlinks=True):
                if entry.name.endswith(SKIP_DIR_SUFFIXES):
                    continue
                if is_link and not follow_symlinks:
                    if outside:
                        note(rel, "skipped: link points outside the folder")
                    continue
                dst = entry.stat(follow_symlinks=True)
                if (dst.st_dev, dst.st_ino) not in visited:
                    visited.add((dst.st_dev, dst.st_ino))
                    stack.append((rel + "/", listing(entry.path, rel)))
            elif os.path.splitext(entry.name)[1].lower() not in SUPPORTED_SUFFIXES:
                continue
            elif entry.is_file(follow_symlinks=True):
                if outside and not follow_symlinks:
                    note(rel, "skipped: link points outside the folder")
                    continue
                fst = entry.stat(follow_symlinks=True)
                yield ScanEntry(Path(entry.path), rel, fst.st_size, fst.st_mtime_ns)
            elif is_link:
                note(rel, "broken link")
        except OSError as e:
            note(rel, _os_reason(e))


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _os_reason(e: BaseException) -> str:
    for kind, reason in ((FileNotFoundError, "file vanished"), (PermissionError, "permission denied"),
                         (IsADirectoryError, "not a file")):
        if isinstance(e, kind):
            return reason
    if getattr(e, "errno", None) == errno.ENAMETOOLONG:
        return "path too long for the system"
    return (getattr(e, "strerror", None) or str(e) or type(e).__name__).splitlines()[0][:80]


def _reason(exc: BaseException, path: Path) -> str:
    """A short reason for any library error, sniffing the file when GDAL is vague."""
    if isinstance(exc, MemoryError):
        return "out of memory"
    if isinstance(exc, Image.DecompressionBombError):
        return "image too large"
    if isinstance(exc, OSError) and type(exc).__module__ == "builtins" and exc.errno:
        return _os_reason(exc)
    chain, e = [], exc
    while e is not None and len(chain) < 10:
        chain.append(str(e))
        e = e.__cause__ or e.__context__
    text = " ".join(chain).lower()
    if "no such file" in text:
        return "file vanished"
    if "permission denied" in text:
        return "permission denied"
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as err:
        return _os_reason(err)
    if not head:
        return "empty file"
    kind = next((k for magic, k in _MAGIC if head.startswith(magic)), None)
    if kind is None:
        is_text = not head.translate(None, _TEXT_BYTES)
        return "not a raster (text file?)" if is_text else "not a supported raster format"
    if any(w in text for w in _DAMAGE_WORDS):
        return f"truncated or damaged {kind}"
    first = next((c for c in reversed(chain) if c.strip()), type(exc).__name__)
    return f"cannot read {kind}: {first.splitlines()[0][:60]}"


@contextmanager
def _guard(path: Path):
    """Quiet GDAL, forbid sidecar writes, and turn every failure into ImageryError."""
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            warnings.simplefilter("ignore", RuntimeWarning)  # numpy's, on odd data: the result is checked
            with rasterio.Env(**_GDAL_OPTIONS):
                yield
    except (ImageryError, _BadArgument):
        raise
    except Exception as e:  # noqa: BLE001 - one bad file must never crash a scan
        raise ImageryError(_reason(e, path)) from e


@contextmanager
def _open(path: Path):
    """Open read-only; names that are not valid UTF-8 go through a file descriptor."""
    name, fd = os.fspath(path), None
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        # GDAL wants UTF-8 paths, but a Latin-1 name from an old archive is still a valid file.
        fd = os.open(name, os.O_RDONLY)
        name = next((f"{d}/{fd}" for d in ("/proc/self/fd", "/dev/fd") if os.path.isdir(d)), None)
    try:
        if name is None:
            raise ImageryError("file name is not valid UTF-8")
        with rasterio.open(name, "r", sharing=False) as ds:
            yield ds
    finally:
        if fd is not None:
            os.close(fd)


def read_transform(path: Path):
    """The affine pixel -> CRS transform of a raster; raises :class:`ImageryError` if it is unreadable."""
    with _guard(path):
        with _open(path) as ds:
            return ds.transform


def read_meta(path: Path) -> TileMeta:
    """Header-only facts about ``path``; raises :class:`ImageryError` if it is unreadable."""
    with _guard(path):
        try:
            with _open(path) as ds:
                return _meta_from_ds(ds)
        except (OSError, RasterioError):
            if Path(path).suffix.lower() not in _PHOTO_SUFFIXES:
                raise
            try:  # a photo GDAL rejects but Pillow reads
                with Image.open(path) as img:
                    return TileMeta(img.width, img.height, len(img.getbands()), "uint8")
            except Exception:  # noqa: BLE001 - report GDAL's error, it is the more precise
                pass
            raise


def _meta_from_ds(ds) -> TileMeta:
    crs, t, footprint, note = None, ds.transform, None, None
    if ds.crs:
        epsg = ds.crs.to_epsg()
        crs = f"EPSG:{epsg}" if epsg else ds.crs.to_wkt()
    georef = ds.crs is not None or not t.is_identity
    bounds = tuple(float(v) for v in ds.bounds) if georef else None
    if ds.crs and bounds:
        try:
            with np.errstate(all="ignore"):
                w, s, e, n = transform_bounds(ds.crs, "EPSG:4326", *bounds, densify_pts=21)
            if all(map(math.isfinite, (w, s, e, n))) and -180 <= w <= e <= 180 and -90 <= s <= n <= 90:
                footprint = [(w, s), (e, s), (e, n), (w, n), (w, s)]
            else:  # a broken transform or CRS: no map position beats one at lon 1e12
                note = "no footprint: the georeferencing puts the raster outside valid longitudes/latitudes"
        except Exception:  # noqa: BLE001 - an exotic CRS only costs the map footprint
            note = "no footprint: its coordinate system cannot be converted to longitude/latitude"
    return TileMeta(ds.width, ds.height, ds.count, str(ds.dtypes[0]), crs, bounds, footprint,
                    (math.hypot(t.a, t.d), math.hypot(t.b, t.e)) if georef else None,
                    float(ds.nodata) if ds.nodata is not None else None, note)


def parse_bands(text: str | None) -> tuple[int, ...] | None:
    """'4,3,2' -> (4, 3, 2); None or '' -> None; ValueError for junk or a count other than 1 or 3."""
    if text is None or not text.strip():
        return None
    parts = re.split(r"\s*,\s*|\s+", text.strip())
    if not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise ValueError(_BAND_HELP.format(text))
    if len(parts) not in (1, 3):
        raise ValueError(_BAND_COUNT_HELP.format(text))
    return tuple(int(p) for p in parts)


def _band_indices(bands: Sequence[int] | None, count: int) -> tuple[int, int, int]:
    if bands is None:
        return (1, 2, 3) if count >= 3 else (1, 1, 1)
    b = tuple(bands)
    label = ",".join(map(str, b))
    if not all(isinstance(i, (int, np.integer)) and i >= 1 for i in b):
        raise _BadArgument(_BAND_HELP.format(label))
    if len(b) not in (1, 3):
        raise _BadArgument(_BAND_COUNT_HELP.format(label))
    over = [i for i in b if i > count]
    if over:
        raise _BadArgument(f"band {over[0]} does not exist: this image has {count} band(s)")
    return tuple(int(i) for i in (b * 3 if len(b) == 1 else b))


def _window(window, width: int, height: int) -> tuple[int, int, int, int]:
    """Clip (col, row, w, h) to the raster; ValueError if nothing is left."""
    if window is None:
        return 0, 0, width, height
    c, r, w, h = (int(v) for v in window)
    c2, r2, c, r = min(c + w, width), min(r + h, height), max(c, 0), max(r, 0)
    if w <= 0 or h <= 0 or c2 <= c or r2 <= r:
        raise _BadArgument(f"window {tuple(window)} lies outside the {width}x{height} image")
    return c, r, c2 - c, r2 - r


def _fit(w: int, h: int, long_side: int, grow: bool = False) -> tuple[int, int]:
    if max(w, h) <= long_side and not grow:
        return w, h
    s = long_side / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def _pixels_rasterio(ds, idx, window, max_long, max_bytes):
    c, r, w, h = _window(window, ds.width, ds.height)
    ow, oh = _fit(w, h, max_long)
    uniq = sorted(set(idx))
    refused = over_budget(dataset_bytes(ds, ds.name, (c, r, w, h), len(uniq), max_long), max_bytes)
    if refused:
        raise ImageryError(refused)
    kw = dict(window=Window(c, r, w, h), out_shape=(len(uniq), oh, ow),
              resampling=Resampling.nearest)
    # Nearest keeps a decimated read of a huge raster streaming block by block; the 2x
    # oversampling plus the final Lanczos resize does the anti-aliasing.
    data = ds.read(uniq, **kw)
    valid = np.isfinite(data) if data.dtype.kind in "fc" else np.ones(data.shape, bool)
    nd = ds.nodata
    if nd is not None and math.isfinite(nd):
        if data.dtype.kind not in "iu":
            valid &= data != data.dtype.type(nd)
        elif nd == int(nd) and np.iinfo(data.dtype).min <= nd <= np.iinfo(data.dtype).max:
            valid &= data != int(nd)
    flags = [ds.mask_flag_enums[i - 1] for i in uniq]
    if any(MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in flags):
        valid &= ds.read_masks(uniq, **kw) > 0
    sel = [uniq.index(b) for b in idx]
    return data[sel], valid[sel]


def _pixels_pillow(path, bands, window, max_long, max_bytes):
    """Decode a plain JPEG/PNG exactly as Pillow does, i.e. as photo-trained models saw it.

    Returns None to hand the file to GDAL (huge, 16-bit, or not really a JPEG/PNG).
    """
    with Image.open(path) as img:
        W, H = img.size
        if img.format not in ("JPEG", "PNG") or W * H > _PIL_MAX_PIXELS * (
                64 if img.format == "JPEG" else 1):
            return None
        if img.mode not in ("RGB", "L", "RGBA", "LA", "P", "CMYK", "YCbCr"):
            return None
        c, r, w, h = _window(window, W, H)
        refused = over_budget(pixels_bytes(W if img.format == "PNG" else w, H if img.format == "PNG" else h,
                                           len(img.getbands()), 1), max_bytes)
        if refused:  # a PNG is inflated whole, whatever the window
            raise ImageryError(refused)
        if img.format == "JPEG" and max(w, h) > max_long:
            s = max_long / max(w, h)
            img.draft(img.mode, (math.ceil(W * s), math.ceil(H * s)))  # DCT-domain downscale
            k = img.size[0] / W
            c, r, w, h = int(c * k), int(r * k), max(1, int(w * k)), max(1, int(h * k))
        if img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        elif img.mode in ("CMYK", "YCbCr"):
            img = img.convert("RGB")
        idx = _band_indices(bands, len(img.getbands()))
        if (c, r, w, h) != (0, 0, *img.size):
            img = img.crop((c, r, c + w, r + h))
        if max(w, h) > max_long:
            img = img.resize(_fit(w, h, max_long), Image.BOX)
        a = np.asarray(img)
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    valid = np.broadcast_to(a[-1] > 0 if img.mode in ("RGBA", "LA") else True, a.shape)
    sel = [i - 1 for i in idx]
    return a[sel], valid[sel]


def _stretch(data: np.ndarray, valid: np.ndarray, mode: str) -> np.ndarray:
    """(3, h, w) of any dtype -> (h, w, 3) uint8, invalid pixels 0; complex data shows its magnitude."""
    if np.iscomplexobj(data):
        data = np.abs(data)
    out = np.zeros(data.shape, np.uint8)
    for k in range(data.shape[0]):
        v = valid[k]
        if not v.any():
            continue
        if mode == "auto" and data.dtype == np.uint8:
            out[k] = np.where(v, data[k], 0)
            continue
        x = data[k].astype(np.float64)
        lo, hi = np.percentile(x[v], [2, 98]) if mode != "none" else (0.0, 0.0)
        # A constant band (or 'none') has nothing to stretch: show the raw level, clipped.
        y = (x - lo) * (255.0 / (hi - lo)) if hi > lo else x
        with np.errstate(invalid="ignore"):
            out[k] = np.clip(np.rint(np.where(v, y, 0)), 0, 255).astype(np.uint8)
    return out.transpose(1, 2, 0)


def _load(path: Path, bands, window, max_long: int, stretch: str,
          max_bytes: float | None = MAX_DECODE_BYTES) -> tuple[np.ndarray, TileMeta]:
    if stretch not in _STRETCHES:
        raise ValueError(f'unknown stretch "{stretch}": use one of {", ".join(_STRETCHES)}')
    with _guard(path):
        got = None
        if Path(path).suffix.lower() in _PHOTO_SUFFIXES:
            try:
                got = _pixels_pillow(path, bands, window, max_long, max_bytes)
            except (_BadArgument, ImageryError, FileNotFoundError, PermissionError):
                raise
            except Exception as e:  # noqa: BLE001
                # GDAL silently decodes some truncated PNGs, so trust Pillow about damage, but
                # let GDAL try what Pillow merely does not support (12-bit JPEG, ...).
                if any(w in str(e).lower() for w in ("truncated", "broken", "corrupt")):
                    raise
        if got is not None:
            meta = read_meta(path)
        else:
            with _open(path) as ds:
                meta = _meta_from_ds(ds)
                got = _pixels_rasterio(ds, _band_indices(bands, ds.count), window, max_long, max_bytes)
        data, valid = got
        if not valid.any():
            raise ImageryError("all pixels are nodata")
        return _stretch(data, valid, stretch), meta


def read_tile(path: Path, size: int = 224, bands: Sequence[int] | None = None,
              window: tuple[int, int, int, int] | None = None,
              stretch: str = "auto", max_bytes: float | None = MAX_DECODE_BYTES) -> tuple[np.ndarray, TileMeta]:
    """Return ``(uint8 array (size, size, 3), meta)`` for the whole raster or a pixel window.

    The raster is read decimated (long side at most ``2 * size``) and squashed to a square
    with Lanczos. ``bands`` are 1-based (one band is shown as grey); by default the first
    three, or grey from the first band. ``stretch``: 'auto' keeps uint8 as-is and applies a
    per-band 2-98 % stretch to other dtypes, 'percentile' always stretches, 'none' clips to
    0..255. Nodata, masked and non-finite pixels are ignored by the stretch and shown as 0.
    Plain JPEG/PNG are decoded by Pillow (bit-identical to Pillow-based training pipelines).
    A read that would decode more than ``max_bytes`` (see :mod:`budget`) is refused before decoding.
    Raises ImageryError for an unreadable file, ValueError for impossible arguments.
    """
    rgb, meta = _load(path, bands, window, 2 * size, stretch, max_bytes)
    img = Image.fromarray(rgb, "RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.LANCZOS)
    return np.asarray(img), meta


def make_thumbnail(path: Path, dest: Path, size: int = 256, bands=None, window=None,
                   stretch: str = "auto") -> None:
    """Write a JPEG thumbnail of ``path`` (long side ``size``, aspect kept) atomically to ``dest``.

    ``dest``'s folder must exist; read problems raise ImageryError before anything is written.
    """
    rgb, _ = _load(path, bands, window, 2 * size, stretch)
    h, w = rgb.shape[:2]
    img = Image.fromarray(rgb, "RGB").resize(_fit(w, h, size, grow=True), Image.LANCZOS)
    try:
        with atomic_path(dest) as tmp, open(tmp, "wb") as f:
            img.save(f, "JPEG", quality=88)
    except OSError as e:
        raise ImageryError(f"cannot write thumbnail: {_os_reason(e)}") from e


def whole_jpeg(path: Path) -> bool:
    """Whether a cached thumbnail is a whole JPEG (start and end markers), else it is made again."""
    try:
        with open(path, "rb") as f:
            head = f.read(3)
            f.seek(-2, os.SEEK_END)
            return head == b"\xff\xd8\xff" and f.read(2) == b"\xff\xd9"
    except OSError:  # also a file shorter than 2 bytes
        return False


def quick_hash(path: Path) -> str:
    """Content fingerprint: blake2b-128 hex of the size and the first, middle and last MiB."""
    chunk = 1 << 20
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            h = hashlib.blake2b(size.to_bytes(8, "little"), digest_size=16)
            if size <= 3 * chunk:
                h.update(f.read())  # the three slices would cover it all anyway
            else:
                for off in (0, size // 2 - chunk // 2, size - chunk):
                    f.seek(off)
                    h.update(f.read(chunk))
    except OSError as e:
        raise ImageryError(_os_reason(e)) from e
    return h.hexdigest()
