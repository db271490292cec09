"""Queries: Hamming k-NN against brute force, radius, similar, captions, thumbnails, the code index."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from duch_desktop.core.archive.archive import Archive
from duch_desktop.core.jobs import UserError
from duch_desktop.core.archive.hamming import HammingTable, hamming
from tests.conftest import CLASSES, PER_CLASS, make_tiny_model

N = len(CLASSES) * PER_CLASS


def _all_codes(archive: Archive) -> dict[int, np.ndarray]:
    rows = archive.db.connection().execute("SELECT id, code FROM tiles WHERE status = 'ok'").fetchall()
    return {i: np.frombuffer(c, np.uint8) for i, c in rows}


def _brute_force(query: np.ndarray, codes: dict[int, np.ndarray]) -> list[tuple[int, int]]:
    ids = sorted(codes)
    d = hamming(query, np.stack([codes[i] for i in ids]))[0]
    return sorted((int(dist), i) for dist, i in zip(d, ids))


def test_text_search_matches_brute_force(archive, tiny_encoders):
    hits = archive.search_text("a dense green forest", k=5)
    q = archive.model.text_codes(tiny_encoders.text.encode(["a dense green forest"]))
    expected = _brute_force(q, _all_codes(archive))
    assert [h.distance for h in hits] == [d for d, _ in expected[:5]]
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert all(h.path == archive.root / h.rel and h.path.is_file() for h in hits)
    # ties are broken by id, so the exact list is reproducible
    assert [(h.distance, h.tile_id) for h in hits] == expected[:5]


def test_radius_and_k(archive):
    everything = archive.search_text("blue water", k=100)
    assert len(everything) == N
    r = everything[N // 2].distance
    within = archive.search_text("blue water", k=100, radius=r)
    assert within and all(h.distance <= r for h in within)
    assert len(within) == sum(h.distance <= r for h in everything)
    assert archive.search_text("blue water", k=100, radius=-1) == []


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_empty_query_is_a_user_error(archive, query):
    with pytest.raises(UserError, match="type a description to search"):
        archive.search_text(query)


def test_long_query_is_fine(archive):
    assert len(archive.search_text("forest " * 500, k=3)) == 3


def test_similar_by_id_leaves_the_tile_out_and_finds_its_class(archive, tile_classes):
    for tid in range(1, N + 1):
        own = tile_classes[archive.tile(tid).rel]
        hits = archive.similar(tid, k=N - 1)
        assert tid not in [h.tile_id for h in hits]
        mine = [h.distance for h in hits if tile_classes[h.rel] == own]
        others = [h.distance for h in hits if tile_classes[h.rel] != own]
        assert len(mine) == PER_CLASS - 1 and max(mine) <= min(others)  # its class first (ties in any order)


def test_similar_by_file_outside_the_archive(archive, tmp_path):
    copy = tmp_path / "query.tif"
    geo = archive.db.connection().execute("SELECT id FROM tiles WHERE rel = 'field/field_2.tif'").fetchone()[0]
    shutil.copy(archive.tile(geo).path, copy)
    hits = archive.similar(copy, k=PER_CLASS)  # the tiny encoder gives a whole class one code
    assert hits[0].distance == 0
    same = [h for h in hits if h.tile_id == geo]
    assert same and same[0].distance == 0 and same[0].footprint is not None


def test_similar_errors(archive, tmp_path):
    with pytest.raises(UserError, match="no tile with id 999"):
        archive.similar(999)
    with pytest.raises(UserError, match="image not found"):
        archive.similar(tmp_path / "nope.png")
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    with pytest.raises(UserError, match="cannot read"):
        archive.similar(junk)


def test_captions_for_a_tile(archive):
    hits = archive.captions_for(1, k=4)
    assert len(hits) == 4
    assert [h.distance for h in hits] == sorted(h.distance for h in hits)
    assert {h.source for h in archive.captions_for(1, k=100)} == {"model", "user"}
    assert len(archive.captions_for(archive.tile(2).path, k=2)) == 2


def test_tile_record_and_thumbnail(archive):
    rec = archive.tile(3)
    assert rec.status == "ok" and rec.meta.width == 48 and rec.content_hash
    thumb = archive.thumbnail(3)
    assert thumb == archive.index_dir / "thumbs" / "3.jpg" and thumb.is_file()
    mtime = thumb.stat().st_mtime_ns
    assert archive.thumbnail(3) == thumb and thumb.stat().st_mtime_ns == mtime  # cached
    small = archive.thumbnail(3, size=64)
    assert small.is_file() and small != thumb
    from PIL import Image

    with Image.open(small) as im:
        assert max(im.size) == 64
    with pytest.raises(UserError):
        archive.tile(12345)


def test_stale_archive_refuses_to_search(archive):
    archive.close()
    other = Archive.open(archive.index_dir, model=make_tiny_model(seed=7))
    assert other.stats().stale
    with pytest.raises(UserError, match="index the folder again"):
        other.search_text("forest")
    other.close()


def test_reopen_uses_recorded_model_and_registered_encoders(archive):
    archive.close()
    again = Archive.open(archive.index_dir)  # model dir from meta, encoders from the registry
    assert again.model.fingerprint == archive.model.fingerprint
    assert len(again.search_text("forest", k=3)) == 3
    again.close()


# --------------------------------------------------------------------------- HammingTable

def test_code_index_update_search_save_load(tmp_path):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (50, 4), dtype=np.uint8)
    index = HammingTable(32)
    index.update(ids=list(range(100, 150)), codes=codes)
    q = codes[7]
    assert index.search(q, 1) == [(107, 0)]
    assert 107 not in [i for i, _ in index.search(q, 5, exclude={107})]
    index.update(remove=[107], ids=[107], codes=codes[8:9])  # replace one code
    assert index.search(codes[8], 2) == [(107, 0), (108, 0)]
    index.update(remove=[107, 108])
    assert index.ntotal == 48
    path = tmp_path / "codes.faiss"
    index.save(path)
    loaded = HammingTable.load(path, 32)
    assert loaded.ntotal == 48 and loaded.search(codes[9], 3) == index.search(codes[9], 3)
    assert HammingTable.load(path, 64) is None
    path.write_bytes(b"junk")
    assert HammingTable.load(path, 32) is None
    assert HammingTable(32).search(q, 5) == []
    assert [p.name for p in tmp_path.iterdir()] == ["codes.faiss"]  # no temp files left


def test_hamming_helper():
    a = np.array([[0b10101010, 0]], np.uint8)
    b = np.array([[0b10101010, 0], [0b01010101, 0xFF]], np.uint8)
    assert hamming(a, b).tolist() == [[0, 16]]
