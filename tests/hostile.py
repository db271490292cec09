"""A small corpus of hostile raster files for reader and indexer tests.

``make_hostile_corpus(root)`` returns ``{rel: 'ok' | 'error'}`` for exactly the files that
``imagery.scan(root)`` should yield (default options). Things that must *not* be yielded
(links leaving the folder, a link loop, broken links, .txt/.xml) are created too and listed
in :data:`NOT_SCANNED`. Every raster is tiny, except one sparse 40000x40000 GeoTIFF that
occupies ~50 kB on disk. One link target lives in a sibling folder ``<root>.outside``.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning
from affine import Affine
from rasterio.windows import Window

UTM33 = "EPSG:32633"
UTM_TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5800640.0)  # 64 px -> 640 m tiles
HUGE = 40000
# 13-band file: band i (1-based) holds the constant value 10 * i.
S2_FILE = "multispectral/s2_13band.tif"
NON_UTF8_NAME = b"caf\xe9.tif"
NOT_SCANNED = (
    "link_outside.tif", "nested/loop", "dangling.tif", "notes.txt", "meta.xml",
    "nested/a/readme.TXT",
)


def write_geotiff(path: Path, data: np.ndarray, **profile) -> Path:
    """Write ``data`` (bands, rows, cols) as a GeoTIFF with ``profile`` overrides; returns ``path``."""
    count, h, w = data.shape
    prof = dict(driver="GTiff", width=w, height=h, count=count, dtype=data.dtype.name)
    prof.update(profile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **prof) as ds:
            ds.write(data)
    return path


def _rgb(h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 4, yy * 4, (xx + yy) * 2]).astype(np.int32)
    return np.clip(base + rng.integers(0, 20, base.shape), 0, 255).astype(np.uint8)


def _photo(fmt: str, mode: str = "RGB", **kw) -> bytes:
    img = Image.fromarray(_rgb().transpose(1, 2, 0), "RGB").convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _readable_when_locked(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.read(1)
        return True
    except PermissionError:
        return False


def jp2_available() -> bool:
    """True when this GDAL build can write (and so read) JPEG 2000."""
    with rasterio.Env() as env:
        return "JP2OpenJPEG" in env.drivers()


def make_hostile_corpus(root: Path) -> dict[str, str]:
    """Create the corpus under ``root`` and return the expected outcome per scanned file."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    exp: dict[str, str] = {}

    def tif(rel: str, data: np.ndarray, outcome: str = "ok", **profile) -> Path:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        write_geotiff(p, data, **profile)
        exp[rel] = outcome
        return p

    def raw(rel: str, content: bytes, outcome: str) -> Path:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)
        exp[rel] = outcome
        return p

    geo = dict(crs=UTM33, transform=UTM_TRANSFORM)
    yy, xx = np.mgrid[0:64, 0:64]
    ramp = (xx * 64 + yy).astype(np.float32)

    # --- valid files -------------------------------------------------------------------
    good = tif("rgb_utm.tif", _rgb(), **geo)
    raw("photo.jpg", _photo("JPEG", quality=90), "ok")
    raw("photo.png", _photo("PNG"), "ok")
    raw("grey.png", _photo("PNG", "L"), "ok")
    raw("palette.png", _photo("PNG", "P"), "ok")
    raw("cmyk.jpg", _photo("JPEG", "CMYK"), "ok")
    rgba = Image.fromarray(_rgb().transpose(1, 2, 0), "RGB").convert("RGBA")
    rgba.putalpha(Image.fromarray(np.where(xx < 32, 0, 255).astype(np.uint8)))
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    raw("rgba_half_transparent.png", buf.getvalue(), "ok")
    buf = io.BytesIO()
    Image.fromarray((ramp * 16).astype(np.uint16)).save(buf, "PNG")  # 16-bit grey: GDAL path
    raw("grey16.png", buf.getvalue(), "ok")
    raw("jpeg_named_as.tif", _photo("JPEG"), "ok")  # GDAL sniffs content, not suffix
    tif("tiff_named_as.png", _rgb())
    tif("multispectral/ms16_4band.tif", (_rgb().astype(np.uint16) * 40)[[0, 1, 2, 0]], **geo)
    tif(S2_FILE, np.stack([np.full((64, 64), 10 * i, np.uint16) for i in range(1, 14)]), **geo)
    f = ramp.copy()
    f[:8] = np.nan
    f[8:12] = np.inf
    f[12:14] = -np.inf
    tif("float/nan_inf.tif", f[None], **geo)
    f = ramp.copy()
    f[:, :20] = -9999.0
    tif("float/nodata.tif", f[None], nodata=-9999.0, **geo)
    f = ramp.copy()
    f[:, 40:] = np.nan
    tif("float/nan_nodata.tif", f[None], nodata=float("nan"))
    tif("float/constant64.tif", np.full((1, 16, 16), 3.5, np.float64))
    i16 = (ramp - 2000).astype(np.int16)
    i16[:10] = -32768
    tif("int16_nodata.tif", i16[None], nodata=-32768)
    tif("uint8_nodata0.tif", np.where(xx < 32, 0, _rgb()).astype(np.uint8), nodata=0)
    tif("two_band.tif", np.stack([ramp, ramp * 2]).astype(np.uint16))
    tif("one_pixel.tif", np.array([[[7]]], np.uint8))
    tif("sliver_64x1.tif", _rgb(1, 64))
    tif("nested/a/b/deep.tif", _rgb(seed=3))
    tif("nested/UPPER.TIF", _rgb(seed=4))
    tif("nested/mixed.Tiff", _rgb(seed=5))
    tif("l" * 236 + ".tif", _rgb(seed=6))  # 240-byte name, near the 255-byte limit
    tif("dir_named.tif/inside.tif", _rgb(seed=7))  # a folder with a raster suffix
    if jp2_available():
        tif("sat.jp2", _rgb(), driver="JP2OpenJPEG", **geo)
    try:
        name = os.fsdecode(NON_UTF8_NAME)
        (root / name).write_bytes(good.read_bytes())
        exp[name] = "ok"
    except (OSError, UnicodeError):  # filesystems that insist on UTF-8 names (macOS)
        pass
    # Sparse 40000x40000: only one 64 px window holds data; everything else is never written.
    big = root / "huge_sparse.tif"
    with rasterio.open(big, "w", driver="GTiff", width=HUGE, height=HUGE, count=3,
                       dtype="uint8", tiled=True, blockxsize=512, blockysize=512,
                       compress="deflate", SPARSE_OK="TRUE", **geo) as ds:
        ds.write(_rgb(), window=Window(20000, 20000, 64, 64))
    exp["huge_sparse.tif"] = "ok"

    # --- broken files ------------------------------------------------------------------
    tif("all_nodata.tif", np.full((1, 32, 32), -9999, np.float32), "error", nodata=-9999)
    tif("all_nan.tif", np.full((1, 32, 32), np.nan, np.float32), "error")
    raw("empty.tif", b"", "error")
    raw("text.tif", b"this is not an image\n" * 20, "error")
    raw("garbage.png", np.random.default_rng(1).integers(0, 256, 4000, np.uint8).tobytes(), "error")
    whole = good.read_bytes()
    raw("truncated.tif", whole[: len(whole) // 2], "error")
    jpg = _photo("JPEG", quality=95)
    raw("truncated.jpg", jpg[: len(jpg) // 2], "error")
    png = _photo("PNG")
    raw("truncated.png", png[: len(png) // 2], "error")
    # Header (and tile index) intact, claims 40000x40000; the one data tile is cut off.
    claim = big.read_bytes()
    raw("huge_truncated.tif", claim[: len(claim) - 300], "error")
    locked = tif("no_read_permission.tif", _rgb(seed=8))
    os.chmod(locked, 0)
    exp["no_read_permission.tif"] = "ok" if _readable_when_locked(locked) else "error"
    locked_dir = root / "locked_dir"
    tif("locked_dir/inside.tif", _rgb(seed=9))
    os.chmod(locked_dir, 0)
    if not os.access(locked_dir, os.R_OK | os.X_OK):  # root can still list it
        del exp["locked_dir/inside.tif"]

    # --- things scan must not yield ----------------------------------------------------
    outside = root.parent / f"{root.name}.outside"
    outside.mkdir(exist_ok=True)
    write_geotiff(outside / "outside.tif", _rgb(seed=10))
    os.symlink(outside / "outside.tif", root / "link_outside.tif")
    os.symlink(".", root / "nested" / "loop")  # nested/loop -> nested
    os.symlink(root / "no_such_target.tif", root / "dangling.tif")
    os.symlink("rgb_utm.tif", root / "alias_inside.tif")  # inside root: scanned
    exp["alias_inside.tif"] = "ok"
    (root / "notes.txt").write_text("not an image")
    (root / "meta.xml").write_text("<xml/>")
    (root / "nested" / "a" / "readme.TXT").write_text("ignored")
    return exp


# --------------------------------------------------------------------------- decompression bombs

def _ifd_arrays(data: bytes) -> dict[int, tuple[int, int, str]]:
    """{tag: (file offset of its values, count, numpy dtype)} of the first IFD of a classic little-endian TIFF."""
    assert data[:4] == b"II*\0"
    off = int.from_bytes(data[4:8], "little")
    n = int.from_bytes(data[off:off + 2], "little")
    out = {}
    for k in range(n):
        e = data[off + 2 + 12 * k: off + 14 + 12 * k]
        tag, kind = int.from_bytes(e[:2], "little"), int.from_bytes(e[2:4], "little")
        count, value = int.from_bytes(e[4:8], "little"), int.from_bytes(e[8:12], "little")
        out[tag] = (value, count, {3: "<u2", 4: "<u4"}[kind]) if kind in (3, 4) else (value, count, "")
    return out


def write_tiff_bomb(path: Path, size: int = HUGE, block: int = 512) -> Path:
    """A small TIFF of ``size`` x ``size`` RGB whose tiles all point at one deflate block.

    40000 px with 512 px tiles: 6 241 tiles of 786 kB each, so about 4.9 GB decoded from a
    file of ~60 kB (the block table is most of it).
    """
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8", tiled=True,
                       blockxsize=block, blockysize=block, compress="deflate", SPARSE_OK="TRUE") as ds:
        ds.write(_rgb(block, block), window=Window(0, 0, block, block))
    data = bytearray(path.read_bytes())
    ifd = _ifd_arrays(bytes(data))
    for tag in (324, 325):  # TileOffsets, TileByteCounts: every tile = the first one
        off, count, dtype = ifd[tag]
        values = np.frombuffer(bytes(data[off:off + count * np.dtype(dtype).itemsize]), dtype)
        data[off:off + values.nbytes] = np.full(count, values[0], dtype).tobytes()
    path.write_bytes(bytes(data))
    return path


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    import zlib

    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def write_png_bomb(path: Path, size: int = HUGE, interlaced: bool = True) -> Path:
    """A PNG header claiming ``size`` x ``size`` RGB (interlaced: inflated whole), ~1 kB of zero rows."""
    import zlib

    ihdr = size.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 1 if interlaced else 0])
    rows = zlib.compress(b"\0" * (3 * 64 + 1) * 64, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", rows)
                     + _png_chunk(b"IEND", b""))
    return path


def write_jpeg_bomb(path: Path, size: int = 60000) -> Path:
    """A JPEG whose frame header claims ``size`` x ``size`` px (the scan data of a 64 px image)."""
    data = bytearray(_photo("JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = size.to_bytes(2, "big") * 2
    path.write_bytes(bytes(data))
    return path
