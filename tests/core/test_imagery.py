"""Tests for duch_desktop.core.imagery.reading against a hostile corpus (tmp_path only, no network)."""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from affine import Affine
from rasterio.windows import Window

from duch_desktop.core.imagery import reading as imagery
from duch_desktop.core.imagery.reading import (
    ImageryError, TileMeta, make_thumbnail, parse_bands, quick_hash, read_meta, read_tile, scan,
)
from duch_desktop.core.jobs import UserError
from tests.hostile import HUGE, NOT_SCANNED, S2_FILE, make_hostile_corpus, write_geotiff

REPO = Path(__file__).resolve().parents[2]
UCM_TILE = REPO.parent / "shared" / "data" / "ucm" / "images" / "airplane" / "airplane00.jpg"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("hostile") / "corpus"
    return root, make_hostile_corpus(root)


_write = write_geotiff


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under root with size, mtime and (where readable) content digest."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            digest = None
            if os.path.isfile(p) and not os.path.islink(p):
                try:
                    digest = hashlib.sha256(Path(p).read_bytes()).hexdigest()
                except PermissionError:
                    pass
            out[os.path.relpath(p, root)] = (st.st_size, st.st_mtime_ns, digest)
    return out


# ----------------------------------------------------------------------------- corpus + scan

def test_corpus_is_big_enough_and_cheap(tmp_path):
    t0 = time.perf_counter()
    exp = make_hostile_corpus(tmp_path / "c")
    assert time.perf_counter() - t0 < 2.0
    assert len(exp) >= 30
    assert set(exp.values()) == {"ok", "error"}
    disk = sum(os.lstat(os.path.join(d, f)).st_size
               for d, _, fs in os.walk(tmp_path / "c") for f in fs)
    assert disk < 2_000_000


def test_scan_yields_exactly_the_supported_files_in_order(corpus):
    root, exp = corpus
    errors: list = []
    entries = list(scan(root, errors=errors))
    rels = [e.rel for e in entries]
    assert set(rels) == set(exp)
    assert rels == [e.rel for e in scan(root)]  # deterministic
    assert rels == sorted(rels, key=lambda r: r.split("/"))  # name order, depth-first
    for skipped in NOT_SCANNED:
        assert skipped not in rels
    reasons = dict(errors)
    assert "outside" in reasons["link_outside.tif"]
    assert reasons["dangling.tif"] == "broken link"
    for e in entries:
        assert e.path.is_absolute() and str(e.path).startswith(str(root))
        assert e.size == os.stat(e.path).st_size and e.mtime_ns > 0
    assert "nested/UPPER.TIF" in rels and "nested/mixed.Tiff" in rels


def test_scan_follow_symlinks_includes_outside_link_and_terminates(corpus):
    root, exp = corpus
    rels = [e.rel for e in scan(root, follow_symlinks=True)]
    assert "link_outside.tif" in rels
    assert not any(r.startswith("nested/loop") for r in rels)
    assert len(rels) == len(set(rels)) == len(exp) + 1


def test_scan_link_to_parent_of_root_does_not_hang(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    _write(root / "sub" / "a.tif", np.zeros((1, 4, 4), np.uint8))
    os.symlink(tmp_path, root / "sub" / "up")  # leaves root, and tmp_path contains root again
    os.symlink(root / "sub", root / "sub" / "self")
    result: dict = {}

    def run():
        result["plain"] = [e.rel for e in scan(root)]
        result["follow"] = [e.rel for e in scan(root, follow_symlinks=True)]

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "scan hung on a symlink loop"
    assert result["plain"] == ["sub/a.tif"]
    assert result["follow"] == ["sub/a.tif"]  # root already visited: nothing twice


def test_scan_unreadable_folder_is_skipped_and_reported(tmp_path):
    root = tmp_path / "r"
    (root / "locked").mkdir(parents=True)
    _write(root / "locked" / "x.tif", np.zeros((1, 4, 4), np.uint8))
    _write(root / "y.tif", np.zeros((1, 4, 4), np.uint8))
    os.chmod(root / "locked", 0)
    try:
        errors: list = []
        rels = [e.rel for e in scan(root, errors=errors)]
        if os.access(root / "locked", os.R_OK | os.X_OK):  # running as root
            assert rels == ["locked/x.tif", "y.tif"]
        else:
            assert rels == ["y.tif"]
            assert errors == [("locked", "permission denied")]
    finally:
        os.chmod(root / "locked", 0o755)


def test_scan_skips_app_index_folders(tmp_path):
    (tmp_path / "lib.duchindex" / "thumbs").mkdir(parents=True)
    (tmp_path / "lib.duchindex" / "thumbs" / "t.jpg").write_bytes(b"x")
    assert list(scan(tmp_path)) == []


def test_scan_missing_root_is_a_user_error(tmp_path):
    with pytest.raises(UserError):
        list(scan(tmp_path / "nope"))


# ----------------------------------------------------------------------------- reading the corpus

def test_every_hostile_file_reads_or_fails_cleanly(corpus, capfd):
    root, exp = corpus
    wrong = []
    for rel, expected in sorted(exp.items()):
        path = root / rel
        try:
            arr, meta = read_tile(path)
            outcome = "ok"
            assert arr.shape == (224, 224, 3) and arr.dtype == np.uint8, rel
            assert isinstance(meta, TileMeta) and meta.width > 0
            assert read_meta(path).bands == meta.bands
        except ImageryError as e:
            outcome = "error"
            reason = str(e)
            assert reason and "\n" not in reason and len(reason) <= 100, (rel, reason)
        except Exception as e:  # noqa: BLE001
            outcome = f"crash {e!r}"
        if outcome != expected:
            wrong.append((rel, expected, outcome))
    assert wrong == []
    out, err = capfd.readouterr()
    assert err == ""  # GDAL must not chatter on stderr


@pytest.mark.parametrize("rel, reason", [
    ("empty.tif", "empty file"),
    ("text.tif", "not a raster (text file?)"),
    ("all_nodata.tif", "all pixels are nodata"),
    ("all_nan.tif", "all pixels are nodata"),
    ("truncated.tif", "truncated or damaged TIFF"),
    ("truncated.jpg", "truncated or damaged JPEG"),
    ("truncated.png", "truncated or damaged PNG"),
    ("huge_truncated.tif", "truncated or damaged TIFF"),
])
def test_error_reasons_are_plain(corpus, rel, reason):
    root, _ = corpus
    with pytest.raises(ImageryError) as info:
        read_tile(root / rel)
    assert str(info.value) == reason


def test_read_meta_errors_are_imagery_errors(corpus):
    root, _ = corpus
    for rel in ("empty.tif", "text.tif", "garbage.png", "missing.tif"):
        with pytest.raises(ImageryError):
            read_meta(root / rel)


def test_permission_denied(tmp_path):
    p = _write(tmp_path / "x.tif", np.ones((1, 4, 4), np.uint8))
    os.chmod(p, 0)
    try:
        try:
            open(p, "rb").close()
        except PermissionError:
            for fn in (read_tile, read_meta, quick_hash):
                with pytest.raises(ImageryError, match="permission denied"):
                    fn(p)
        else:
            pytest.skip("running as root: chmod 000 is still readable")
    finally:
        os.chmod(p, 0o644)


def test_permission_errors_are_plain_even_as_root(tmp_path, monkeypatch):
    """Simulate EACCES (chmod 000 does not stop root, which CI containers often are)."""
    (tmp_path / "locked").mkdir()
    _write(tmp_path / "locked" / "x.tif", np.ones((1, 4, 4), np.uint8))
    p = _write(tmp_path / "y.tif", np.ones((1, 4, 4), np.uint8))
    real_scandir = os.scandir

    def scandir(path):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    errors: list = []
    assert [e.rel for e in scan(tmp_path, errors=errors)] == ["y.tif"]
    assert errors == [("locked", "permission denied")]

    def denied(*a, **k):
        raise rasterio.errors.RasterioIOError(f"{p}: Permission denied")

    monkeypatch.setattr(imagery.rasterio, "open", denied)
    for fn in (read_tile, read_meta):
        with pytest.raises(ImageryError, match="^permission denied$"):
            fn(p)

    def no_open(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(imagery, "open", no_open, raising=False)
    with pytest.raises(ImageryError, match="^permission denied$"):
        quick_hash(p)


def test_delete_between_scan_and_read(tmp_path):
    root = tmp_path / "c"
    make_hostile_corpus(root)
    entries = {e.rel: e for e in scan(root)}
    victim = entries["rgb_utm.tif"].path
    victim.unlink()
    for fn in (read_tile, read_meta, quick_hash):
        with pytest.raises(ImageryError, match="file vanished"):
            fn(victim)
    with pytest.raises(ImageryError, match="file vanished"):
        make_thumbnail(victim, tmp_path / "t.jpg")
    assert not (tmp_path / "t.jpg").exists()


def test_non_utf8_name_is_read(corpus):
    root, exp = corpus
    name = os.fsdecode(b"caf\xe9.tif")
    if name not in exp:
        pytest.skip("filesystem refuses non-UTF-8 names")
    arr, meta = read_tile(root / name)
    assert meta.crs == "EPSG:32633" and arr.shape == (224, 224, 3)
    assert quick_hash(root / name) == quick_hash(root / "rgb_utm.tif")


# ----------------------------------------------------------------------------- bands and stretch

def test_band_selection_on_13_band_file(corpus):
    root, _ = corpus
    path = root / S2_FILE  # band i is constant 10*i
    arr, meta = read_tile(path, bands=(4, 3, 2), stretch="none")
    assert meta.bands == 13 and meta.dtype == "uint16"
    assert tuple(arr[100, 100]) == (40, 30, 20) and (arr == arr[0, 0]).all()
    arr, _ = read_tile(path)  # default: first three; constant bands are not stretched
    assert tuple(arr[5, 5]) == (10, 20, 30)
    arr, _ = read_tile(path, bands=(8,))
    assert tuple(arr[5, 5]) == (80, 80, 80)
    arr, _ = read_tile(path, bands=parse_bands("13,1,7"), stretch="none")
    assert tuple(arr[5, 5]) == (130, 10, 70)
    with pytest.raises(ValueError, match="band 14 does not exist: this image has 13"):
        read_tile(path, bands=(14, 3, 2))
    with pytest.raises(ValueError):
        read_tile(root / "photo.jpg", bands=(4, 3, 2))


@pytest.mark.parametrize("text, expected", [
    ("4,3,2", (4, 3, 2)), (" 4, 3 ,2 ", (4, 3, 2)), ("4 3 2", (4, 3, 2)), ("7", (7,)),
    (None, None), ("", None), ("  ", None),
])
def test_parse_bands_accepts(text, expected):
    assert parse_bands(text) == expected


@pytest.mark.parametrize("text", ["x", "4,3,x", "0,1,2", "-1,2,3", "1.5", "4,3,2,1", "4,3", "4,,"])
def test_parse_bands_rejects(text):
    with pytest.raises(ValueError, match="bad band list"):
        parse_bands(text)


def test_grey_replication_and_two_band_default(corpus):
    root, _ = corpus
    for rel in ("grey.png", "two_band.tif", "float/nan_inf.tif", "one_pixel.tif"):
        arr, _ = read_tile(root / rel)
        assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all(), rel
    arr, _ = read_tile(root / "one_pixel.tif")
    assert (arr == 7).all()


def test_stretch_ignores_huge_nodata(tmp_path):
    yy, xx = np.mgrid[0:64, 0:64]
    data = (100 + xx * 16 + yy // 4).astype(np.uint16)  # valid range ~100..1123
    data[:, :32] = 65000
    p = _write(tmp_path / "n.tif", data[None], nodata=65000)
    arr, meta = read_tile(p)
    assert meta.nodata == 65000
    assert (arr[:, :100] == 0).all()  # nodata half shown black
    valid = arr[:, 120:, 0]
    assert valid.min() <= 20 and valid.max() >= 250  # 2 % clip, edge 8 px in
    # Same values without nodata: the 65000 block swallows the stretch.
    arr2, _ = read_tile(_write(tmp_path / "m.tif", data[None]))
    assert arr2[:, 120:, 0].max() < 40


def test_stretch_ignores_nan_and_inf(tmp_path):
    yy, xx = np.mgrid[0:64, 0:64]
    data = (xx / 63.0).astype(np.float32)
    data[:8] = np.nan
    data[8:16] = np.inf
    data[16:20] = -np.inf
    arr, _ = read_tile(_write(tmp_path / "f.tif", data[None]))
    assert (arr[:50] == 0).all()
    body = arr[90:, :, 0]
    assert body.min() <= 5 and body.max() >= 250
    assert (np.diff(body[50].astype(int)) >= -1).all()  # monotone ramp survives


def test_stretch_modes(tmp_path):
    data = np.stack([np.full((16, 16), v, np.uint16) for v in (100, 300, 5)])
    data[0, :, :8] = 50
    p = _write(tmp_path / "s.tif", data)
    none, _ = read_tile(p, size=16, stretch="none")
    assert tuple(none[0, 12]) == (100, 255, 5) and none[0, 0, 0] == 50
    pct, _ = read_tile(p, size=16, stretch="percentile")
    assert pct[0, 0, 0] == 0 and pct[0, 12, 0] == 255
    u8 = _write(tmp_path / "u8.tif", np.stack([np.full((16, 16), 10, np.uint8),
                                                  np.arange(256, dtype=np.uint8).reshape(16, 16),
                                                  np.full((16, 16), 200, np.uint8)]))
    auto, _ = read_tile(u8, size=16)
    assert auto[0, 0, 0] == 10 and auto[0, 0, 1] == 0 and auto[15, 15, 1] == 255
    pct, _ = read_tile(u8, size=16, stretch="percentile")
    assert not np.array_equal(pct, auto)
    with pytest.raises(ValueError, match="stretch"):
        read_tile(u8, stretch="gamma")


def test_auto_keeps_uint8_photo_pixels(tmp_path):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (256, 256, 3), np.uint8), "RGB")
    p = tmp_path / "ucm_like.jpg"
    img.save(p, "JPEG", quality=90)
    expected = np.asarray(Image.open(p).convert("RGB").resize((224, 224), Image.LANCZOS))
    arr, meta = read_tile(p)
    assert meta.crs is None and meta.footprint is None
    assert np.array_equal(arr, expected)
    raw = rng.integers(0, 256, (3, 224, 224), np.uint8)
    arr, _ = read_tile(_write(tmp_path / "exact.tif", raw))
    assert np.array_equal(arr, raw.transpose(1, 2, 0))


def test_large_jpeg_is_decoded_small_and_windowed(tmp_path):
    rgb = np.zeros((1500, 3000, 3), np.uint8)
    rgb[:, :1500, 0] = 220  # left half red, right half blue
    rgb[:, 1500:, 2] = 220
    p = tmp_path / "big.jpg"
    Image.fromarray(rgb).save(p, quality=90)
    arr, meta = read_tile(p)
    assert (meta.width, meta.height) == (3000, 1500) and arr.shape == (224, 224, 3)
    assert arr[:, :100, 0].mean() > 200 and arr[:, 124:, 2].mean() > 200
    arr, _ = read_tile(p, window=(1600, 100, 1000, 1000))
    assert arr[..., 2].min() > 200 and arr[..., 0].max() < 20
    blue, _ = read_tile(p, bands=(3,))  # one band -> grey
    assert (blue[:, 124:] > 200).all() and (blue[:, :100] < 20).all()


@pytest.mark.skipif(not UCM_TILE.exists(), reason="UC Merced data not present")
def test_real_ucm_tile_matches_pillow():
    arr, meta = read_tile(UCM_TILE)
    assert (meta.width, meta.height, meta.bands, meta.dtype) == (256, 256, 3, "uint8")
    expected = np.asarray(Image.open(UCM_TILE).convert("RGB").resize((224, 224), Image.LANCZOS))
    assert np.array_equal(arr, expected)


def test_alpha_and_dataset_mask_are_nodata(corpus):
    root, _ = corpus
    arr, _ = read_tile(root / "rgba_half_transparent.png")
    assert (arr[:, :100] == 0).all() and arr[:, 120:].mean() > 20
    arr, _ = read_tile(root / "uint8_nodata0.tif")
    assert (arr[:, :100] == 0).all()


def test_window_reads_only_that_part(tmp_path):
    data = np.zeros((3, 100, 200), np.uint8)
    data[:, :, 100:] = 200
    data[0, 50:, 100:] = 90
    p = _write(tmp_path / "w.tif", data)
    arr, meta = read_tile(p, size=32, window=(100, 50, 100, 50))
    assert meta.width == 200 and (arr[..., 0] == 90).all() and (arr[..., 1] == 200).all()
    arr, _ = read_tile(p, size=32, window=(150, 0, 500, 500))  # clipped to the raster
    assert (arr[..., 1] == 200).all()
    with pytest.raises(ValueError, match="outside"):
        read_tile(p, window=(300, 0, 10, 10))
    with pytest.raises(ValueError):
        read_tile(p, window=(0, 0, 0, 10))


# ----------------------------------------------------------------------------- metadata

def _utm_lat(northing: float) -> float:
    """Latitude (deg) on the central meridian for a UTM northing (WGS84, Snyder 3-21)."""
    a, f, k0 = 6378137.0, 1 / 298.257223563, 0.9996
    e2 = f * (2 - f)
    e4, e6 = e2 * e2, e2 ** 3

    def arc(p):
        return a * ((1 - e2 / 4 - 3 * e4 / 64 - 5 * e6 / 256) * p
                    - (3 * e2 / 8 + 3 * e4 / 32 + 45 * e6 / 1024) * math.sin(2 * p)
                    + (15 * e4 / 256 + 45 * e6 / 1024) * math.sin(4 * p)
                    - 35 * e6 / 3072 * math.sin(6 * p))

    phi = northing / k0 / a
    for _ in range(20):  # Newton on M(phi) = N / k0
        d_arc = a * (1 - e2) / (1 - e2 * math.sin(phi) ** 2) ** 1.5
        phi -= (arc(phi) - northing / k0) / d_arc
    return math.degrees(phi)


def test_footprint_of_utm_tile_matches_hand_computation(corpus):
    root, _ = corpus
    meta = read_meta(root / "rgb_utm.tif")  # 64 px * 10 m from (500000, 5800640) in 33N
    assert meta.crs == "EPSG:32633"
    assert meta.bounds == (500000.0, 5800000.0, 500640.0, 5800640.0)
    assert meta.pixel_size == (10.0, 10.0)
    ring = meta.footprint
    assert len(ring) == 5 and ring[0] == ring[-1]
    lons, lats = [p[0] for p in ring], [p[1] for p in ring]
    south, north = _utm_lat(5800000.0), _utm_lat(5800640.0)
    # West edge is the zone's central meridian; east edge is 640 m away at the top.
    a, f, k0 = 6378137.0, 1 / 298.257223563, 0.9996
    e2 = f * (2 - f)
    phi = math.radians(north)
    nu = a / math.sqrt(1 - e2 * math.sin(phi) ** 2)
    east = 15.0 + math.degrees(640.0 / (k0 * nu * math.cos(phi)))
    assert min(lons) == pytest.approx(15.0, abs=1e-6)
    assert max(lons) == pytest.approx(east, abs=1e-6)
    assert min(lats) == pytest.approx(south, abs=1e-6)
    assert max(lats) == pytest.approx(north, abs=1e-6)
    assert 52.3 < south < 52.4  # sanity: the hand formula itself lands near Berlin's latitude


def test_meta_round_trips_through_strict_json(corpus):
    root, _ = corpus
    for rel in ("rgb_utm.tif", "photo.jpg", "float/nan_nodata.tif", "float/nodata.tif"):
        meta = read_meta(root / rel)
        back = TileMeta.from_dict(json.loads(json.dumps(meta.to_dict(), allow_nan=False)))
        if meta.nodata is not None and math.isnan(meta.nodata):
            assert math.isnan(back.nodata)
            back.nodata = meta.nodata = None
        assert back == meta
    photo = read_meta(root / "photo.jpg")
    assert photo.crs is photo.bounds is photo.footprint is photo.pixel_size is None


def test_wkt_crs_when_no_epsg_code(tmp_path):
    wkt = ('PROJCS["custom",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,'
           '298.257223563]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],'
           'PROJECTION["Transverse_Mercator"],PARAMETER["latitude_of_origin",0],'
           'PARAMETER["central_meridian",13.3],PARAMETER["scale_factor",0.99],'
           'PARAMETER["false_easting",0],PARAMETER["false_northing",0],UNIT["metre",1]]')
    p = _write(tmp_path / "c.tif", np.ones((1, 8, 8), np.uint8), crs=wkt,
               transform=Affine(1, 0, 0, 0, -1, 5000000))
    meta = read_meta(p)
    assert meta.crs.startswith("PROJCS") and meta.footprint is not None
    assert meta.footprint[0][0] == pytest.approx(13.3, abs=1e-3)


# ----------------------------------------------------------------------------- huge rasters

_MEM_SCRIPT = r"""
import resource, sys
from duch_desktop.core.imagery.reading import read_tile
small, big = sys.argv[1], sys.argv[2]
read_tile(small)  # load drivers first so they do not count
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
arr, meta = read_tile(big)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
unit = 1 if sys.platform == "darwin" else 1024
print((after - before) * unit / 2**20, arr.shape, meta.width, int(arr.max()))
"""


def test_huge_sparse_raster_reads_with_bounded_memory(tmp_path):
    big = tmp_path / "huge.tif"
    with rasterio.open(big, "w", driver="GTiff", width=HUGE, height=HUGE, count=3,
                       dtype="uint8", tiled=True, blockxsize=512, blockysize=512,
                       compress="deflate", SPARSE_OK="TRUE", crs="EPSG:32633",
                       transform=Affine(0.5, 0, 500000, 0, -0.5, 5800000)) as ds:
        ds.write(np.full((3, 512, 512), 200, np.uint8), window=Window(20480, 20480, 512, 512))
    assert big.stat().st_size < 1_000_000  # 1.6 G pixels claimed, nearly nothing stored
    small = _write(tmp_path / "small.tif", np.ones((3, 8, 8), np.uint8))
    proc = subprocess.run([sys.executable, "-c", _MEM_SCRIPT, str(small), str(big)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    grew_mb, *rest = proc.stdout.split()
    assert float(grew_mb) < 200, proc.stdout
    assert "(224, 224, 3)" in proc.stdout and rest[-2] == str(HUGE)


# ----------------------------------------------------------------------------- thumbnails, hashes, no writes

def test_make_thumbnail_writes_only_dest_and_keeps_aspect(corpus, tmp_path):
    root, _ = corpus
    before = _snapshot(root)
    out = tmp_path / "thumbs"
    out.mkdir()
    data = np.zeros((3, 30, 60), np.uint8)
    wide = _write(tmp_path / "wide.tif", data + 77)
    make_thumbnail(wide, out / "wide.jpg")
    make_thumbnail(root / "sliver_64x1.tif", out / "sliver.jpg", size=128)
    make_thumbnail(root / "huge_sparse.tif", out / "huge.jpg", size=64)
    make_thumbnail(root / S2_FILE, out / "s2.jpg", bands=(4, 3, 2), window=(0, 0, 32, 16))
    assert sorted(os.listdir(out)) == ["huge.jpg", "s2.jpg", "sliver.jpg", "wide.jpg"]
    with Image.open(out / "wide.jpg") as im:
        assert im.format == "JPEG" and im.size == (256, 128)
        assert abs(int(np.asarray(im)[64, 128, 0]) - 77) <= 2
    with Image.open(out / "sliver.jpg") as im:
        assert im.size == (128, 2)
    with Image.open(out / "s2.jpg") as im:
        assert im.size == (256, 128)
    with Image.open(out / "huge.jpg") as im:
        assert im.size == (64, 64)
    make_thumbnail(wide, out / "wide.jpg", size=32)  # atomic overwrite
    with Image.open(out / "wide.jpg") as im:
        assert im.size == (32, 16)
    with pytest.raises(ImageryError):
        make_thumbnail(root / "text.tif", out / "bad.jpg")
    assert sorted(os.listdir(out)) == ["huge.jpg", "s2.jpg", "sliver.jpg", "wide.jpg"]
    assert _snapshot(root) == before


def test_quick_hash(tmp_path):
    a = tmp_path / "a.bin"
    rng = np.random.default_rng(0)
    payload = bytearray(rng.integers(0, 256, 5 * 2**20, np.uint8).tobytes())
    a.write_bytes(payload)
    h = quick_hash(a)
    assert len(h) == 32 and int(h, 16) >= 0
    assert quick_hash(a) == h
    b = tmp_path / "renamed.bin"
    os.rename(a, b)
    assert quick_hash(b) == h  # a move is recognised
    payload[len(payload) // 2] ^= 0xFF  # middle MiB
    b.write_bytes(payload)
    assert quick_hash(b) != h
    payload[len(payload) // 2] ^= 0xFF
    payload[-1] ^= 0xFF  # last MiB
    b.write_bytes(payload)
    assert quick_hash(b) != h
    b.write_bytes(bytes(payload) + b"\0")  # size alone
    assert quick_hash(b) != h
    small = tmp_path / "s.tif"
    small.write_bytes(b"abc")
    assert quick_hash(small) != quick_hash(b)
    with pytest.raises(ImageryError, match="file vanished"):
        quick_hash(tmp_path / "missing.tif")


def test_reading_never_modifies_the_source_folder(corpus):
    root, exp = corpus
    before = _snapshot(root)
    for rel in exp:
        for fn in (read_meta, read_tile, quick_hash):
            try:
                fn(root / rel)
            except ImageryError:
                pass
        try:
            read_tile(root / rel, stretch="percentile", window=(0, 0, 16, 16))
        except (ImageryError, ValueError):
            pass
    assert _snapshot(root) == before  # same bytes, same mtimes, no .aux.xml sidecars


def test_supported_suffixes():
    assert imagery.SUPPORTED_SUFFIXES == frozenset(
        {".tif", ".tiff", ".jpg", ".jpeg", ".png", ".jp2"})
