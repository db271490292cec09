"""Archive indexing: incremental updates, bad files, cancel/kill safety, the user's folder left alone."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from duch_desktop.core.archive.archive import ARCHIVE_DB, TILES_FAISS, Archive
from duch_desktop.core.jobs import UserError
from tests.conftest import (CLASSES, PER_CLASS, TinyImageEncoder, TinyTextEncoder, make_tiny_model, run_job,
                            snapshot, write_tile)
from tests.hostile import NOT_SCANNED, make_hostile_corpus

N = len(CLASSES) * PER_CLASS
REPO = Path(__file__).resolve().parents[2]


def _open(index_dir, model, root=None) -> Archive:
    return Archive.open(index_dir, model=model, image_encoder=TinyImageEncoder(), text_encoder=TinyTextEncoder(),
                        create_root=root)


def _id_of(archive: Archive, rel: str) -> int:
    return archive.db.connection().execute("SELECT id FROM tiles WHERE rel = ?", (rel,)).fetchone()[0]


def _codes_by_rel(index_dir: Path) -> dict[bytes, tuple]:
    """rel -> (status, code) straight from SQLite, plus consistency checks with tiles.faiss."""
    conn = sqlite3.connect(index_dir / ARCHIVE_DB)
    try:
        rows = conn.execute("SELECT rel_bytes, status, code FROM tiles").fetchall()
    finally:
        conn.close()
    out = {bytes(r): (s, bytes(c) if c is not None else None) for r, s, c in rows}
    assert len(out) == len(rows)  # no duplicate names
    return out


def _assert_consistent(archive: Archive) -> None:
    ok = sum(1 for s, _ in _codes_by_rel(archive.index_dir).values() if s == "ok")
    assert archive.tables["tiles"].ntotal == ok
    assert archive.stats().tiles == ok


# --------------------------------------------------------------------------- incremental

def test_first_run_indexes_everything(archive, tile_classes):
    stats = archive.stats()
    assert stats.tiles == N and stats.errors == 0 and stats.bits == 16
    assert stats.captions == 8 + 2  # bundle captions.json + the user's CSV
    assert {archive.tile(i).rel for i in range(1, N + 1)} == set(tile_classes)
    assert (archive.index_dir / TILES_FAISS).is_file()
    geo = archive.tile(_id_of(archive, "field/field_2.tif"))
    assert geo.meta.crs == "EPSG:32633" and len(geo.footprint) == 5
    _assert_consistent(archive)


def test_incremental_runs(archive, tile_folder, tiny_encoders):
    enc = tiny_encoders.image
    before = enc.images
    report, _ = run_job(archive.index(workers=0))
    assert (report.unchanged, report.added, enc.images - before) == (N, 0, 0)

    # changed content -> re-encoded under the same id
    changed = tile_folder / "field" / "field_0.png"
    tid = _id_of(archive, "field/field_0.png")
    write_tile(changed, "water", seed=99, geo=False)
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    before = enc.images
    report, _ = run_job(archive.index(workers=0))
    assert (report.updated, report.unchanged, enc.images - before) == (1, N - 1, 1)
    assert archive.tile(tid).rel == "field/field_0.png"

    # renamed and moved -> recognised by content, no re-encode, same id
    src = tile_folder / "forest" / "forest_2.tif"
    tid = _id_of(archive, "forest/forest_2.tif")
    (tile_folder / "moved").mkdir()
    src.rename(tile_folder / "moved" / "renamed.tif")
    before = enc.images
    report, _ = run_job(archive.index(workers=0))
    assert (report.moved, report.added, report.removed, enc.images - before) == (1, 0, 0, 0)
    assert archive.tile(tid).rel == "moved/renamed.tif"

    # deleted -> row and code removed
    (tile_folder / "water" / "water_3.tif").unlink()
    report, _ = run_job(archive.index(workers=0))
    assert report.removed == 1 and archive.stats().tiles == N - 1
    assert b"water/water_3.tif" not in _codes_by_rel(archive.index_dir)
    _assert_consistent(archive)


def test_model_change_reencodes_everything(archive, tile_folder, tiny_encoders, tmp_path):
    old = _codes_by_rel(archive.index_dir)
    archive.close()
    other = make_tiny_model(seed=1)
    enc = TinyImageEncoder()
    arch = Archive.open(archive.index_dir, model=other, image_encoder=enc, text_encoder=TinyTextEncoder())
    with pytest.raises(UserError, match="another hashing model"):
        arch.search_text("forest")
    report, events = run_job(arch.index(workers=0))
    assert any("model changed" in e.message for e in events)
    assert report.updated == N and enc.images == N + 1  # + the model's probe image before the run
    assert _codes_by_rel(arch.index_dir) != old
    assert arch.search_text("green forest", k=3)
    assert len(arch.captions_for(1)) > 0  # captions re-encoded with the new model too
    _assert_consistent(arch)
    arch.close()


def test_band_option_change_reencodes_and_is_remembered(archive, tiny_encoders):
    enc = tiny_encoders.image
    before = enc.images
    report, events = run_job(archive.index(bands="1", workers=0))
    assert report.updated == N and enc.images - before == N  # the probe ran once, on the first run
    assert archive.options["bands"] == [1]
    report, _ = run_job(archive.index(workers=0))  # no --bands: keeps using band 1
    assert report.unchanged == N


def test_bad_arguments_fail_before_any_work(archive):
    with pytest.raises(UserError, match="bad band list"):
        archive.index(bands="4,x")
    with pytest.raises(UserError, match="stretch"):
        archive.index(stretch="loud")
    with pytest.raises(UserError, match="captions file not found"):
        archive.index(captions_file="/nonexistent/captions.csv")


# --------------------------------------------------------------------------- hostile input

def test_hostile_corpus_never_fails(tmp_path, tiny_model):
    root = tmp_path / "hostile"
    expected = make_hostile_corpus(root)
    assert len(expected) >= 30
    # Full-size reads: a decimated 16 px read of the huge truncated file never touches its damage.
    archive = Archive.open(tmp_path / "index", model=tiny_model, image_encoder=TinyImageEncoder(input_size=224),
                           text_encoder=TinyTextEncoder(), create_root=root)
    report, _ = run_job(archive.index(workers=2, batch_size=8))
    rows = _codes_by_rel(archive.index_dir)
    assert {os.fsdecode(r) for r in rows} == set(expected)
    for rel, outcome in expected.items():
        assert rows[os.fsencode(rel)][0] == outcome, rel
    reasons = dict(archive.errors())
    assert len(reasons) == sum(v == "error" for v in expected.values()) == report.errors
    assert all(reason and "\n" not in reason for reason in reasons.values())
    assert not any(rel in reasons for rel in NOT_SCANNED)
    _assert_consistent(archive)
    again, _ = run_job(archive.index(workers=0))  # bad files are not retried until they change
    assert again.unchanged == len(expected) and again.errors == 0
    archive.close()
    os.chmod(root / "locked_dir", 0o755)


def test_user_folder_is_left_untouched(archive, tile_folder):
    before = snapshot(tile_folder)
    run_job(archive.index(workers=2, batch_size=3))
    archive.thumbnail(1)
    archive.similar(tile_folder / "forest" / "forest_0.png")
    archive.search_text("blue water")
    assert snapshot(tile_folder) == before
    assert not archive.index_dir.is_relative_to(tile_folder)


def test_links_leaving_the_folder_are_not_followed(tmp_path, tile_folder, tiny_model):
    outside = tmp_path / "elsewhere"
    write_tile(outside / "secret.png", "forest", seed=5, geo=False)
    os.symlink(outside / "secret.png", tile_folder / "link.png")
    archive = _open(tmp_path / "index", tiny_model, root=tile_folder)
    report, _ = run_job(archive.index(workers=0))
    assert report.added == N and b"link.png" not in _codes_by_rel(archive.index_dir)
    report, _ = run_job(archive.index(workers=0, follow_symlinks=True))
    assert report.added == 1 and b"link.png" in _codes_by_rel(archive.index_dir)
    archive.close()


# --------------------------------------------------------------------------- interruption

def test_cancel_then_resume_equals_uninterrupted(tmp_path, tile_folder, tiny_model):
    full = _open(tmp_path / "full", tiny_model, root=tile_folder)
    run_job(full.index(workers=0, batch_size=2))
    full.close()

    archive = _open(tmp_path / "index", tiny_model, root=tile_folder)
    job = archive.index(workers=0, batch_size=2)
    seen = 0
    for event in job:
        seen += event.stage == "index"
        if seen == 2:
            break
    job.close()
    assert archive.last_report.cancelled and archive.last_report.added == 4
    _assert_consistent(archive)
    archive.close()

    archive = _open(tmp_path / "index", tiny_model, root=tile_folder)
    assert archive.stats().tiles == 4 and len(archive.search_text("forest", k=N)) == 4
    report, _ = run_job(archive.index(workers=0, batch_size=2))
    assert (report.added, report.unchanged) == (N - 4, 4)
    assert _codes_by_rel(archive.index_dir) == _codes_by_rel(tmp_path / "full")
    _assert_consistent(archive)
    archive.close()


KILL_SCRIPT = """
import sys, time
sys.path.insert(0, {repo!r})
from tests.conftest import TinyImageEncoder, TinyTextEncoder
from duch_desktop.core.archive.archive import Archive

class Slow(TinyImageEncoder):
    def encode(self, images):
        time.sleep(0.05)
        return super().encode(images)

archive = Archive.open({index!r}, model={model!r}, image_encoder=Slow(), text_encoder=TinyTextEncoder(),
                       create_root={root!r})
for event in archive.index(workers=0, batch_size=1):
    print(event.stage, event.done, flush=True)
print("finished", flush=True)
"""


@pytest.mark.parametrize("after", [1, 6])
def test_kill_9_mid_run_then_resume(tmp_path, tile_folder, tiny_model_dir, after):
    full = _open(tmp_path / "full", tiny_model_dir, root=tile_folder)
    run_job(full.index(workers=0))
    full.close()

    index_dir = tmp_path / "index"
    script = KILL_SCRIPT.format(repo=str(REPO), index=str(index_dir), model=str(tiny_model_dir), root=str(tile_folder))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    seen = 0
    for line in proc.stdout:
        seen += line.startswith("index ")
        if seen >= after:
            time.sleep(0.02 * after)  # land somewhere inside the next batch
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    (index_dir / f".{TILES_FAISS}.killed.tmp").write_bytes(b"half a file")  # as if killed while saving
    archive = _open(index_dir, tiny_model_dir)
    _assert_consistent(archive)
    partial = archive.stats().tiles
    assert after <= partial < N
    report, _ = run_job(archive.index(workers=0))
    assert report.added + report.unchanged == N and report.unchanged == partial
    assert _codes_by_rel(index_dir) == _codes_by_rel(tmp_path / "full")
    assert not list(index_dir.glob("*.tmp"))
    _assert_consistent(archive)
    archive.close()


@pytest.mark.parametrize("damage", ["missing", "garbage", "stale"])
def test_faiss_file_is_rebuilt_from_sqlite(archive, damage):
    path = archive.index_dir / TILES_FAISS
    expected = [h.tile_id for h in archive.search_text("green forest", k=N)]
    archive.close()
    if damage == "missing":
        path.unlink()
    elif damage == "garbage":
        path.write_bytes(b"not a faiss index")
    else:  # a file from an older generation with the same count
        conn = sqlite3.connect(archive.index_dir / ARCHIVE_DB)
        conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'tiles_gen'")
        conn.commit()
        conn.close()
    again = _open(archive.index_dir, archive.model)
    assert [h.tile_id for h in again.search_text("green forest", k=N)] == expected
    _assert_consistent(again)
    again.close()


def test_unreadable_or_missing_index_is_a_user_error(tmp_path, tiny_model):
    with pytest.raises(UserError, match="no index at"):
        _open(tmp_path / "nothing", tiny_model)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / ARCHIVE_DB).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(UserError, match="unreadable"):
        _open(bad, tiny_model)
    with pytest.raises(UserError, match="folder not found"):
        _open(tmp_path / "new", tiny_model, root=tmp_path / "no-such-folder")


def test_index_dir_belongs_to_one_folder(archive, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(UserError, match="holds the index of"):
        _open(archive.index_dir, archive.model, root=other)


def test_one_indexing_run_at_a_time(tmp_path, tile_folder, tiny_model):
    archive = _open(tmp_path / "index", tiny_model, root=tile_folder)
    first = archive.index(workers=0, batch_size=1)
    assert next(first).stage == "index"
    other = _open(archive.index_dir, tiny_model)
    with pytest.raises(UserError, match="already being indexed"):
        next(other.index(workers=0))
    first.close()
    report, _ = run_job(other.index(workers=0))  # the lock is released on cancel
    assert report.added == N - 1
    other.close()
    archive.close()


def test_search_from_another_thread_while_indexing(tmp_path, tile_folder, tiny_model):
    for i in range(20):
        write_tile(tile_folder / "more" / f"extra_{i:02d}.png", list(CLASSES)[i % 3], seed=100 + i, geo=False)
    archive = _open(tmp_path / "index", tiny_model, root=tile_folder)
    stop, failures, counts = threading.Event(), [], []

    def searcher():
        while not stop.is_set():
            try:
                counts.append(len(archive.search_text("forest", k=100)))
                archive.stats()
            except Exception as e:  # noqa: BLE001 - collected and asserted below
                failures.append(e)

    t = threading.Thread(target=searcher)
    t.start()
    try:
        for _ in archive.index(workers=0, batch_size=2):
            time.sleep(0.01)
    finally:
        stop.set()
        t.join()
    assert not failures and counts and counts == sorted(counts) and counts[-1] == N + 20
    archive.close()


def test_index_inside_the_folder_does_not_index_itself(tile_folder, tiny_model):
    archive = _open(tile_folder / "my-index", tiny_model, root=tile_folder)
    run_job(archive.index(workers=0))
    archive.thumbnail(1)
    report, _ = run_job(archive.index(workers=0))
    assert report.unchanged == N and report.added == 0
    archive.close()


def test_non_utf8_names_round_trip(tmp_path, tiny_model):
    root = tmp_path / "tiles"
    name = os.fsdecode(b"caf\xe9.png")
    write_tile(root / name, "water", seed=1, geo=False)
    archive = _open(tmp_path / "index", tiny_model, root=root)
    run_job(archive.index(workers=0))
    rec = archive.tile(1)
    assert rec.rel == "caf\\xe9.png" and rec.path == root / name and rec.path.is_file()
    assert archive.thumbnail(1).is_file()
    archive.close()


V1_TILES = """
CREATE TABLE tiles(
    id INTEGER PRIMARY KEY AUTOINCREMENT, rel TEXT NOT NULL, rel_bytes BLOB NOT NULL UNIQUE,
    size INTEGER, mtime_ns INTEGER, content_hash TEXT,
    width INTEGER, height INTEGER, bands INTEGER, dtype TEXT, crs TEXT,
    footprint TEXT, meta TEXT, status TEXT NOT NULL, error TEXT, code BLOB);
CREATE INDEX tiles_status ON tiles(status);
"""
V1_COLUMNS = ("id, rel, rel_bytes, size, mtime_ns, content_hash, width, height, bands, dtype, crs, footprint, meta, "
              "status, error, code")


def test_format_1_index_is_migrated(archive, tile_folder, tiny_encoders):
    last = _id_of(archive, "water/water_3.tif")
    (tile_folder / "water" / "water_3.tif").unlink()
    run_job(archive.index(workers=0))  # its id is gone, never to be reused
    expected = [(h.tile_id, h.distance) for h in archive.search_text("green forest", k=N)]
    rows = _codes_by_rel(archive.index_dir)
    archive.close()
    conn = sqlite3.connect(archive.index_dir / ARCHIVE_DB)  # rewrite the database as format 1 had it
    conn.executescript(f"""
        ALTER TABLE tiles RENAME TO t2; DROP INDEX tiles_key; DROP INDEX tiles_status; {V1_TILES}
        INSERT INTO tiles({V1_COLUMNS}) SELECT {V1_COLUMNS} FROM t2; DROP TABLE t2;
        DELETE FROM sqlite_sequence WHERE name = 'tiles';
        INSERT INTO sqlite_sequence(name, seq) VALUES('tiles', {last});
        UPDATE meta SET value = 1 WHERE key = 'format';""")
    conn.commit()
    conn.close()

    again = _open(archive.index_dir, archive.model)
    assert again.db.connection().execute("SELECT value FROM meta WHERE key = 'format'").fetchone()[0] == 2
    assert [(h.tile_id, h.distance) for h in again.search_text("green forest", k=N)] == expected
    assert _codes_by_rel(archive.index_dir) == rows and all(h.window is None for h in again.search_text("x"))
    write_tile(tile_folder / "water" / "water_3.tif", "water", seed=23, geo=True)
    enc = TinyImageEncoder()
    again.close()
    again = Archive.open(archive.index_dir, model=archive.model, image_encoder=enc, text_encoder=TinyTextEncoder())
    report, _ = run_job(again.index(workers=0))
    assert (report.added, report.unchanged, enc.images) == (1, N - 1, 1)
    assert _id_of(again, "water/water_3.tif") == last + 1
    _assert_consistent(again)
    again.close()


def test_codes_match_the_model(archive, tile_folder, tiny_encoders):
    from duch_desktop.core.imagery import reading as imagery

    rec = archive.tile(1)
    pixels, _ = imagery.read_tile(rec.path, size=tiny_encoders.image.input_size)
    expected = archive.model.image_codes(TinyImageEncoder().encode(pixels[None]))
    assert _codes_by_rel(archive.index_dir)[rec.rel.encode()][1] == expected.tobytes()
    assert archive.similar(rec.path, k=1)[0].distance == 0


def test_a_first_run_takes_files_from_every_folder_in_turn(tmp_path, tile_folder, tiny_model):
    """Stopped after its first batch, a run has indexed one tile of each class folder, not the
    alphabetically first folder's: an early search sees the whole archive."""
    archive = _open(tmp_path / "index", tiny_model, tile_folder)
    job = archive.index(workers=0, batch_size=len(CLASSES))
    event = next(job)
    while event.stage != "index" or not event.done:
        event = next(job)
    job.close()
    rels = [r for (r,) in archive.db.connection().execute("SELECT rel FROM tiles WHERE status = 'ok'")]
    assert sorted(r.split("/")[0] for r in rels) == sorted(CLASSES)
    assert run_job(archive.index(workers=0, batch_size=4))[0].added == N - len(CLASSES)  # the rest, once each
    archive.close()


def test_interleaved_keeps_each_folders_order():
    from types import SimpleNamespace

    from duch_desktop.core.archive.indexing import interleaved

    rels = ("a/1", "a/2", "a/3", "b/1", "c/1", "c/2", "top")
    todo = [SimpleNamespace(entry=SimpleNamespace(rel=r)) for r in rels]
    order = ["a/1", "b/1", "c/1", "top", "a/2", "c/2", "a/3"]
    assert [f.entry.rel for f in interleaved(todo, [f.entry for f in todo])] == order
    # what is left after an interrupted run keeps the same order (so a resumed run gives the same ids)
    left = [f for f in todo if f.entry.rel not in ("a/1", "b/1", "c/1")]
    assert [f.entry.rel for f in interleaved(left, [f.entry for f in todo])] == order[3:]
