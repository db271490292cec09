"""Scenes cut into chips: the grid, footprints, stable ids, incremental runs, previews, UCM scenes."""
from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from duch_desktop.core.imagery import chips

from duch_desktop.core.imagery import reading as imagery
from duch_desktop.core.archive.archive import ARCHIVE_DB, Archive
from duch_desktop.core.jobs import UserError
from tests.conftest import (CLASSES, PER_CLASS, SCENE_CHIP, SCENE_ORIGIN, TinyImageEncoder, TinyTextEncoder,
                            make_tiny_model, run_job, write_scene, write_tile)

N = len(CLASSES) * PER_CLASS
SCENE = "scenes/scene.tif"
REPO = Path(__file__).resolve().parents[2]
UCM = REPO.parent / "shared" / "data" / "ucm" / "images"


def _rows(index_dir: Path, rel: str = SCENE) -> dict[tuple, tuple]:
    """window -> (id, status, code) of one file's rows, straight from SQLite."""
    conn = sqlite3.connect(index_dir / ARCHIVE_DB)
    try:
        rows = conn.execute("SELECT win_col, win_row, win_w, win_h, id, status, code FROM tiles WHERE rel = ?",
                            (rel,)).fetchall()
    finally:
        conn.close()
    return {(r[:4] if r[0] is not None else None): (r[4], r[5], r[6]) for r in rows}


def _assert_consistent(archive: Archive) -> None:
    conn = sqlite3.connect(archive.index_dir / ARCHIVE_DB)
    try:
        ok = conn.execute("SELECT COUNT(*) FROM tiles WHERE status = 'ok'").fetchone()[0]
        pending = conn.execute("SELECT COUNT(*) FROM tiles WHERE status = 'pending'").fetchone()[0]
    finally:
        conn.close()
    assert archive.tables["tiles"].ntotal == ok and pending == 0


def _open(index_dir, model, root=None, enc=None) -> Archive:
    return Archive.open(index_dir, model=model, image_encoder=enc or TinyImageEncoder(),
                        text_encoder=TinyTextEncoder(), create_root=root)


# --------------------------------------------------------------------------- the grid

def test_offsets_end_at_the_edge():
    assert chips.offsets(640, 128, 32) == [0, 96, 192, 288, 384, 480, 512]
    assert chips.offsets(512, 128, 0) == [0, 128, 256, 384]
    assert chips.offsets(128, 128, 32) == [0] and chips.offsets(50, 128, 0) == [0]
    for length, side, overlap in [(1000, 256, 32), (257, 256, 0), (20000, 256, 32)]:
        starts = chips.offsets(length, side, overlap)
        assert starts[-1] + side == length and all(b - a <= side - overlap for a, b in zip(starts, starts[1:]))


def _meta(w, h, crs="EPSG:32633", px=0.5, footprint=None) -> imagery.TileMeta:
    bounds = (0.0, 0.0, w * px, h * px) if crs else None
    return imagery.TileMeta(w, h, 3, "uint8", crs, bounds, footprint, (px, px) if crs else None)


def test_plan_windows():
    opts = chips.ChipOptions(chip=128, overlap=32)
    assert chips.plan_windows(opts, _meta(128, 128)) is None  # not larger than the chip: one tile
    assert chips.plan_windows(None, _meta(5000, 5000)) is None
    wins = chips.plan_windows(opts, _meta(640, 384))
    assert wins.shape == (28, 4) and wins[0].tolist() == [0, 0, 128, 128] and wins[-1].tolist() == [512, 256, 128, 128]
    assert (wins[:, 0] + wins[:, 2] <= 640).all() and (wins[:, 1] + wins[:, 3] <= 384).all()
    thin = chips.plan_windows(opts, _meta(300, 100))  # taller than nothing: one row of 100 px high windows
    assert thin.tolist() == [[0, 0, 128, 100], [96, 0, 128, 100], [172, 0, 128, 100]]


def test_chip_size_in_metres():
    opts = chips.ChipOptions(chip_m=64, overlap=16)
    assert chips.chip_pixels(opts, _meta(1000, 1000, px=0.5)) == (128, 32)
    assert chips.chip_pixels(opts, _meta(1000, 1000, px=0.1)) == (640, 160)
    assert chips.chip_pixels(opts, _meta(1000, 1000, px=10.0))[0] == chips.MIN_CHIP  # never below 32 px
    # degrees: about 0.5 m at the equator is 4.5e-6 degrees
    geo = _meta(1000, 1000, crs="EPSG:4326", px=4.5e-6, footprint=[(0, 0), (0.0045, 0), (0.0045, 0.0045), (0, 0)])
    side, overlap = chips.chip_pixels(opts, geo)
    assert 125 <= side <= 131 and 30 <= overlap <= 34
    # unknown pixel size: the pixel chip (default 256), same overlap fraction
    assert chips.chip_pixels(opts, _meta(1000, 1000, crs=None)) == (256, 64)
    assert chips.chip_pixels(chips.ChipOptions(chip=200, chip_m=64, overlap=16), _meta(900, 900, crs=None)) == (200, 50)


def test_resolve_options():
    stored = chips.ChipOptions(chip=256, overlap=32)
    assert chips.resolve_options(None) is None
    assert chips.resolve_options(stored) == stored  # nothing given: as stored
    assert chips.resolve_options(stored, chip=512) == chips.ChipOptions(512, 32, None)
    assert chips.resolve_options(stored, chip=0) is None
    assert chips.resolve_options(stored, chip_m=80) == chips.ChipOptions(256, 32, 80.0)
    assert chips.resolve_options(None, chip=256) == chips.ChipOptions(256, 0, None)
    for bad in (dict(chip=16), dict(chip=128, overlap=128), dict(chip_m=50, overlap=60), dict(overlap=10)):
        with pytest.raises(UserError):
            chips.resolve_options(None, **bad)
    assert chips.ChipOptions(256, 32).describe() == "256 px, overlap 32 px"
    assert chips.ChipOptions.from_json(chips.ChipOptions(None, 8.0, 80.0).to_json()) == chips.ChipOptions(None, 8.0, 80.0)


# --------------------------------------------------------------------------- indexing scenes

def test_scene_is_indexed_as_chips_with_window_footprints(chip_archive, scene_folder):
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window, bounds

    rows = _rows(chip_archive.index_dir)
    expected = chips.plan_windows(chips.ChipOptions(**SCENE_CHIP), imagery.read_meta(scene_folder / SCENE))
    assert set(rows) == {tuple(w) for w in expected.tolist()}
    nodata = {w for w, (_, status, _) in rows.items() if status == "nodata"}
    assert nodata == {w for w in rows if w[0] >= 480}  # the right two columns lie in the nodata strip
    assert all(status == "ok" for w, (_, status, _) in rows.items() if w not in nodata)
    stats = chip_archive.stats()
    assert (stats.tiles, stats.chips, stats.scenes, stats.nodata, stats.errors) == (N + 20, 20, 1, 8, 0)
    assert stats.chip_options == chips.ChipOptions(128, 32, None)
    assert chip_archive.errors() == []
    assert all(len(_rows(chip_archive.index_dir, rel)) == 1 for rel in ["field/field_0.png", "water/water_3.tif"])

    import rasterio

    with rasterio.open(scene_folder / SCENE) as ds:
        transform, crs = ds.transform, ds.crs
    for window, (tid, status, _) in rows.items():
        rec = chip_archive.tile(tid)
        assert rec.window == window and rec.scene_size == (640, 384) and rec.meta.width == 640
        w, s, e, n = transform_bounds(crs, "EPSG:4326", *bounds(Window(*window), transform))
        ring = np.array(rec.footprint)
        assert ring.shape == (5, 2) and np.allclose(ring[[0, 2]], [[w, s], [e, n]], atol=1e-7)
    # the first chip's top-left corner is the scene's origin
    first = chip_archive.tile(rows[(0, 0, 128, 128)][0])
    x, y = transform_bounds(crs, "EPSG:4326", SCENE_ORIGIN[0], SCENE_ORIGIN[1], SCENE_ORIGIN[0], SCENE_ORIGIN[1])[:2]
    assert np.allclose([first.footprint[3][0], first.footprint[3][1]], [x, y], atol=1e-6)


def test_chip_pixels_are_the_window(chip_archive, scene_folder, tiny_encoders):
    rows = _rows(chip_archive.index_dir)
    window = (96, 96, 128, 128)
    pixels, _ = imagery.read_tile(scene_folder / SCENE, size=tiny_encoders.image.input_size, window=window)
    expected = chip_archive.model.image_codes(TinyImageEncoder().encode(pixels[None]))
    assert rows[window][2] == expected.tobytes()


def test_search_hits_carry_windows_and_preview(chip_archive):
    hits = chip_archive.search_text("a dense green forest", k=N + 20)
    assert len(hits) == N + 20
    chip_hits = [h for h in hits if h.window is not None]
    assert len(chip_hits) == 20 and all(h.scene_size == (640, 384) and h.rel == SCENE for h in chip_hits)
    assert all(h.footprint and len(h.footprint) == 5 for h in chip_hits)
    whole = [h for h in hits if h.window is None]
    assert all(h.scene_size == (48, 48) for h in whole)

    hit = next(h for h in chip_hits if h.window == (192, 96, 128, 128))
    path, rect = chip_archive.scene_preview(hit.tile_id, size=320)
    from PIL import Image

    with Image.open(path) as im:
        assert im.size == (320, 192)
    assert rect == (96.0, 48.0, 160.0, 112.0)  # the window at half scale
    again, _ = chip_archive.scene_preview(hit.tile_id, size=320)
    assert again == path and path.is_relative_to(chip_archive.index_dir)
    # another chip of the same scene shares the cached preview
    other = next(h for h in chip_hits if h.tile_id != hit.tile_id)
    assert chip_archive.scene_preview(other.tile_id, size=320)[0] == path
    # a whole file: the rectangle is the whole preview
    p, r = chip_archive.scene_preview(whole[0].tile_id, size=64)
    with Image.open(p) as im:
        assert r == (0.0, 0.0, float(im.size[0]), float(im.size[1]))

    thumb = chip_archive.thumbnail(hit.tile_id, size=64)
    with Image.open(thumb) as im:
        assert im.size == (64, 64)
    assert chip_archive.similar(hit.tile_id, k=3)


def test_chip_ids_are_stable_across_runs_and_changes(chip_archive, scene_folder, tiny_encoders):
    enc = tiny_encoders.image
    before = _rows(chip_archive.index_dir)
    report, _ = run_job(chip_archive.index(workers=0))  # chip options are remembered
    assert (report.unchanged, report.added, report.chips) == (N + 1, 0, 0)
    assert _rows(chip_archive.index_dir) == before

    # touched, same pixels: re-chipped under the same ids, same codes
    scene = scene_folder / SCENE
    os.utime(scene, ns=(time.time_ns(), time.time_ns() + 10**9))
    n = enc.images
    report, _ = run_job(chip_archive.index(workers=0, batch_size=8))
    assert (report.updated, report.unchanged, report.chips, report.nodata) == (1, N, 28, 8)
    assert enc.images - n == 20 and _rows(chip_archive.index_dir) == before

    # new content, same size: same ids, new codes
    write_scene(scene, seed=5)
    os.utime(scene, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    run_job(chip_archive.index(workers=0))
    after = _rows(chip_archive.index_dir)
    assert {w: v[0] for w, v in after.items()} == {w: v[0] for w, v in before.items()}
    assert any(after[w][2] != before[w][2] for w in after if after[w][1] == "ok")

    # a smaller scene: windows still planned keep their ids, the others go
    write_scene(scene, size=(640, 288), seed=5)
    report, _ = run_job(chip_archive.index(workers=0))
    smaller = _rows(chip_archive.index_dir)
    assert len(smaller) == 7 * 3 and report.updated == 1
    for w in smaller:
        if w in before:
            assert smaller[w][0] == before[w][0]
    assert (0, 160, 128, 128) in smaller and smaller[(0, 160, 128, 128)][0] > max(v[0] for v in before.values())
    _assert_consistent(chip_archive)

    # moved: every chip follows the file, nothing re-encoded
    (scene_folder / "moved").mkdir()
    scene.rename(scene_folder / "moved" / "renamed.tif")
    n = enc.images
    report, _ = run_job(chip_archive.index(workers=0))
    assert (report.moved, report.added, report.removed, enc.images - n) == (1, 0, 0, 0)
    assert _rows(chip_archive.index_dir, "moved/renamed.tif") == smaller and not _rows(chip_archive.index_dir)

    # deleted: every chip goes
    (scene_folder / "moved" / "renamed.tif").unlink()
    report, _ = run_job(chip_archive.index(workers=0))
    assert report.removed == 21 and chip_archive.stats().chips == 0
    assert not _rows(chip_archive.index_dir, "moved/renamed.tif")
    _assert_consistent(chip_archive)


def test_changing_chip_options_rechips_only_what_they_affect(chip_archive, tiny_encoders):
    enc = tiny_encoders.image
    tile_ids = {rel: _rows(chip_archive.index_dir, rel) for rel in ["field/field_0.png", "forest/forest_2.tif"]}
    n = enc.images
    report, events = run_job(chip_archive.index(workers=0, overlap=0))
    assert any("chip options changed" in e.message for e in events)
    rows = _rows(chip_archive.index_dir)
    assert set(rows) == {(c, r, 128, 128) for c in (0, 128, 256, 384, 512) for r in (0, 128, 256)}
    assert report.chips == 15 and enc.images - n == 15 - 3  # the small tiles stay as they were
    assert {rel: _rows(chip_archive.index_dir, rel) for rel in tile_ids} == tile_ids
    _assert_consistent(chip_archive)

    report, _ = run_job(chip_archive.index(workers=0, chip=0))  # chipping off: the scene is one tile again
    assert list(_rows(chip_archive.index_dir)) == [None] and report.updated == 1
    assert chip_archive.stats().chip_options is None and chip_archive.stats().chips == 0
    _assert_consistent(chip_archive)
    with pytest.raises(UserError, match="overlap"):
        chip_archive.index(chip=128, overlap=200)


def test_cancel_mid_scene_resumes_with_the_missing_chips(tmp_path, scene_folder, tiny_model):
    full = _open(tmp_path / "full", tiny_model, root=scene_folder)
    run_job(full.index(workers=0, batch_size=4, **SCENE_CHIP))
    full.close()

    archive = _open(tmp_path / "index", tiny_model, root=scene_folder)
    job = archive.index(workers=0, batch_size=4, **SCENE_CHIP)
    for event in job:
        if event.stage == "index" and archive.last_report.chips:  # the first chips of the 28 are in
            break
    job.close()
    first = archive.last_report
    assert first.cancelled and 0 < first.chips < 28
    tiles = first.added + first.chips - first.nodata  # whole files done, plus the scene's chips with data
    assert (archive.stats().pending, archive.stats().tiles) == (28 - first.chips, tiles)
    assert archive.tables["tiles"].ntotal == tiles
    archive.close()

    enc = TinyImageEncoder()
    archive = _open(tmp_path / "index", tiny_model, root=scene_folder, enc=enc)
    report, _ = run_job(archive.index(workers=0, batch_size=4))
    assert (report.chips, report.nodata, report.added, report.updated, report.unchanged) == \
        (28 - first.chips, 8 - first.nodata, 12 - first.added, 1, first.added)
    assert enc.images == report.added + report.chips - report.nodata  # the rest, nothing twice
    assert _rows(tmp_path / "index") == _rows(tmp_path / "full")
    _assert_consistent(archive)
    archive.close()


def test_unreadable_chips_are_errors_with_their_window(tmp_path, tiny_model):
    import rasterio

    root = tmp_path / "tiles"
    scene = write_scene(root / "scene.tif")
    with rasterio.open(scene) as ds:  # damage the compressed block at pixels 128..256 x 128..256
        offset = int(ds.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
        length = int(ds.get_tag_item("BLOCK_SIZE_1_1", "TIFF", bidx=1))
    data = bytearray(scene.read_bytes())
    data[offset:offset + length] = b"\xab" * length
    scene.write_bytes(bytes(data))
    write_tile(root / "ok.png", "forest", seed=1, geo=False)
    archive = _open(tmp_path / "index", tiny_model, root=root)
    report, _ = run_job(archive.index(workers=0, **SCENE_CHIP))
    errors = archive.errors()
    assert report.errors == len(errors) == 4 and report.chips == 28 and report.added == 2
    assert [reason.split(":")[0] for _, reason in errors] == [
        "x 96, y 96, 128x128", "x 192, y 96, 128x128", "x 96, y 192, 128x128", "x 192, y 192, 128x128"]
    assert all(rel == "scene.tif" and "damaged" in reason for rel, reason in errors)
    assert archive.stats().tiles == 1 + 28 - 8 - 4
    archive.close()


def test_hostile_corpus_in_chip_mode(tmp_path, tiny_model):
    from tests.hostile import make_hostile_corpus

    root = tmp_path / "hostile"
    expected = make_hostile_corpus(root)
    archive = Archive.open(tmp_path / "index", model=tiny_model, image_encoder=TinyImageEncoder(input_size=224),
                           text_encoder=TinyTextEncoder(), create_root=root)
    report, _ = run_job(archive.index(workers=0, batch_size=16, chip=4096))  # the 40000 px files get 100 chips
    statuses: dict[str, set] = {}
    for rel, status in archive.db.connection().execute("SELECT rel, status FROM tiles"):
        statuses.setdefault(rel, set()).add(status)
    assert set(statuses) == {os.fsencode(r).decode("utf-8", "backslashreplace") for r in expected}
    for rel, outcome in expected.items():
        got = statuses[os.fsencode(rel).decode("utf-8", "backslashreplace")]
        assert ("ok" in got) == (outcome == "ok"), (rel, got)
    # the unwritten blocks of the sparse mosaics read as black: skipped, not errors nor black tiles
    assert statuses["huge_sparse.tif"] == {"ok", "nodata"} and statuses["huge_truncated.tif"] == {"error", "nodata"}
    assert report.chips == 200 and report.nodata == 198
    assert all(reason and "\n" not in reason for _, reason in archive.errors())
    archive.close()
    os.chmod(root / "locked_dir", 0o755)


def test_metre_chips_on_a_georeferenced_scene(tmp_path, tiny_model):
    root = tmp_path / "tiles"
    write_scene(root / "scene.tif")  # 0.5 m/px: 64 m chips are 128 px
    archive = _open(tmp_path / "index", tiny_model, root=root)
    report, _ = run_job(archive.index(workers=0, chip_m=64, overlap=16))
    assert set(_rows(tmp_path / "index", "scene.tif")) == {
        tuple(w) for w in chips.plan_windows(chips.ChipOptions(**SCENE_CHIP), imagery.read_meta(root / "scene.tif"))}
    assert archive.stats().chip_options == chips.ChipOptions(None, 16.0, 64.0)
    archive.close()


# --------------------------------------------------------------------------- UCM tiles inside a scene

UCM_SCENE = 4096
UCM_TARGETS = {"airplane": [(3, 5), (12, 9)], "baseballdiamond": [(7, 1)], "storagetanks": [(14, 14)],
               "tenniscourt": [(1, 12)]}  # class -> grid cells (col, row) of 256 px
UCM_BACKGROUND = ["agricultural", "forest", "chaparral", "river", "beach", "golfcourse"]


def _ucm_tile(cls: str, n: int) -> np.ndarray:
    from PIL import Image

    with Image.open(UCM / cls / f"{cls}{n:02d}.jpg") as im:
        return np.asarray(im.convert("RGB").resize((256, 256)) if im.size != (256, 256) else im.convert("RGB"))


def write_ucm_scene(path: Path) -> dict[tuple[int, int, int, int], str]:
    """A 4096 x 4096 px UTM scene at 0.3 m/px tiled with UCM tiles; returns {window: class} of the targets."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    targets = {(c, r): cls for cls, cells in UCM_TARGETS.items() for c, r in cells}
    out = {}
    with rasterio.open(path, "w", driver="GTiff", width=UCM_SCENE, height=UCM_SCENE, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000.0, 5810000.0, 0.3, 0.3), tiled=True,
                       blockxsize=256, blockysize=256, compress="deflate") as ds:
        for r in range(UCM_SCENE // 256):
            for c in range(UCM_SCENE // 256):
                cls = targets.get((c, r))
                tile = _ucm_tile(cls, 0) if cls else _ucm_tile(UCM_BACKGROUND[(c + 3 * r) % 6], (c * 7 + r) % 100)
                ds.write(tile.transpose(2, 0, 1), window=Window(c * 256, r * 256, 256, 256))
                if cls:
                    out[(c * 256, r * 256, 256, 256)] = cls
    return out


@pytest.fixture(scope="module")
def ucm_scene(tmp_path_factory) -> tuple[Path, dict]:
    if not (UCM / "airplane" / "airplane00.jpg").is_file():
        pytest.skip("UCM tiles not found under ../shared/data/ucm/images")
    root = tmp_path_factory.mktemp("ucm-scene")
    return root, write_ucm_scene(root / "orthophoto.tif")


def test_ucm_tiles_inside_a_scene_are_found_at_their_windows(tmp_path, ucm_scene):
    from rasterio.warp import transform_bounds

    root, targets = ucm_scene
    archive = _open(tmp_path / "index", make_tiny_model(bits=64), root=root)
    report, _ = run_job(archive.index(workers=0, batch_size=32, chip=256))
    assert report.chips == 256 and report.errors == 0 and report.nodata == 0
    by_window = {w: v[0] for w, v in _rows(tmp_path / "index", "orthophoto.tif").items()}
    a, b = (by_window[(c * 256, r * 256, 256, 256)] for c, r in UCM_TARGETS["airplane"])
    hits = [h for h in archive.similar(a, k=20) if h.distance == 0]  # the same pixels elsewhere in the scene
    hits = [h for h in hits if h.tile_id == b]
    assert hits and hits[0].window == (12 * 256, 9 * 256, 256, 256) and hits[0].scene_size == (4096, 4096)
    x0, y0 = 500000.0 + 12 * 256 * 0.3, 5810000.0 - 10 * 256 * 0.3
    w, s, e, n = transform_bounds("EPSG:32633", "EPSG:4326", x0, y0, x0 + 256 * 0.3, y0 + 256 * 0.3)
    assert np.allclose(np.array(hits[0].footprint)[[0, 2]], [[w, s], [e, n]], atol=1e-7)
    assert set(targets) <= set(by_window)
    archive.close()


@pytest.mark.slow
def test_text_query_finds_ucm_tiles_inside_a_scene(tmp_path, ucm_scene):
    """With the shipped model: a text query returns the window holding the UCM tile of its class."""
    from rasterio.warp import transform_bounds

    from duch_desktop.core.model import defaults

    try:
        model_dir = defaults.default_model_dir()
    except UserError:
        pytest.skip("no default model bundle at resources/models/default")
    root, targets = ucm_scene
    archive = Archive.open(tmp_path / "index", model=model_dir, create_root=root)
    report, _ = run_job(archive.index(workers=0, chip=256))
    assert report.chips == 256 and report.errors == 0
    queries = {"airplane": "many planes are parked at the airport", "baseballdiamond": "a baseball field",
               "storagetanks": "several white storage tanks", "tenniscourt": "a tennis court"}
    for cls, text in queries.items():  # measured: every target ranks first (the model saw UCM in training)
        hits = archive.search_text(text, k=5)
        found = [h for h in hits if targets.get(h.window) == cls]
        assert found, (cls, [(h.window, targets.get(h.window)) for h in hits])
        col, row, width, height = found[0].window
        x0, y1 = 500000.0 + col * 0.3, 5810000.0 - row * 0.3
        box = transform_bounds("EPSG:32633", "EPSG:4326", x0, y1 - height * 0.3, x0 + width * 0.3, y1)
        assert np.allclose(np.array(found[0].footprint)[[0, 2]], [box[:2], box[2:]], atol=1e-7)
    archive.close()
