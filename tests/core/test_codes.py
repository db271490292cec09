"""HammingTable's clustered (IVF) form against brute-force Hamming: exact k-NN, updates, files."""
from __future__ import annotations

import numpy as np
import pytest

from duch_desktop.core.archive.hamming import HammingTable, hamming


@pytest.fixture(autouse=True)
def small_clusters(monkeypatch):
    monkeypatch.setattr(HammingTable, "CLUSTER_MIN", 400)  # cluster from 400 codes on (1M figures: the benchmark)
    monkeypatch.setattr(HammingTable, "PAYOFF", 1.0)  # keep the clustered form even where it prunes nothing


def clustered_codes(rng, n: int, nbytes: int = 8, centres: int = 12, flip: float = 0.1) -> np.ndarray:
    """Codes near a few random centres, as a trained hashing model gives."""
    c = rng.integers(0, 256, (centres, nbytes), dtype=np.uint8)
    noise = np.packbits(rng.random((n, nbytes * 8)) < flip, axis=1)
    return c[rng.integers(0, centres, n)] ^ noise


def check(index: HammingTable, ref: dict[int, np.ndarray], q: np.ndarray, k: int, exclude=()) -> None:
    """``index.search`` == brute force: same distances, every pair true, ties by id, no excluded id."""
    got, exclude = index.search(q, k, exclude=exclude), set(exclude)
    d = dict(zip(ref, hamming(q, np.stack(list(ref.values())))[0].tolist()))
    assert [dist for _, dist in got] == sorted(v for i, v in d.items() if i not in exclude)[:k]
    assert all(d[i] == dist for i, dist in got)
    assert got == sorted(got, key=lambda p: (p[1], p[0]))
    assert len({i for i, _ in got}) == len(got) and not exclude & {i for i, _ in got}


@pytest.mark.parametrize("nbytes", [8, 4, 16])
@pytest.mark.parametrize("kind", ["clustered", "uniform"])
def test_clustered_index_is_exact(nbytes, kind):
    rng = np.random.default_rng(nbytes)
    n = 3000
    codes = (clustered_codes(rng, n, nbytes) if kind == "clustered"
             else rng.integers(0, 256, (n, nbytes), dtype=np.uint8))
    ids = rng.permutation(10 * n)[:n] + 5  # arbitrary, unordered ids
    index = HammingTable(nbytes * 8)
    index.reset(ids, codes)
    assert index.clustered and index.ntotal == n
    ref = dict(zip(ids.tolist(), codes))
    queries = np.concatenate([codes[:10], clustered_codes(rng, 10, nbytes),
                              rng.integers(0, 256, (5, nbytes), dtype=np.uint8)])
    for j, q in enumerate(queries):
        for k in (1, 20, 200):
            check(index, ref, q, k)
        check(index, ref, q, 20, exclude=[int(ids[j]), int(ids[j + 1])])
    assert len(index.search(queries[0], n + 10)) == n
    radius = index.search(queries[0], 50, radius=3)
    assert radius == [p for p in index.search(queries[0], 50) if p[1] <= 3]


def test_codes_added_after_clustering_far_from_every_centroid_are_found():
    """The per-list radius must grow with late additions, or the bound would skip their list."""
    rng = np.random.default_rng(1)
    codes = clustered_codes(rng, 1000, flip=0.02)
    index = HammingTable(64)
    index.reset(np.arange(1000), codes)
    assert index.clustered
    ref = dict(enumerate(codes))
    odd = rng.integers(0, 256, (30, 8), dtype=np.uint8)  # nowhere near the clusters
    index.update(ids=np.arange(5000, 5030), codes=odd)
    ref.update(zip(range(5000, 5030), odd))
    for j, q in enumerate(odd):
        assert index.search(q, 1)[0] == (5000 + j, 0)
        check(index, ref, q, 20)


def test_incremental_growth_removals_and_reclustering():
    rng = np.random.default_rng(2)
    pool = clustered_codes(rng, 4000)
    index, ref, next_id = HammingTable(64), {}, 0
    seen = []
    for step in range(40):
        add = rng.integers(50, 150)
        new = pool[rng.integers(0, len(pool), add)] ^ np.packbits(rng.random((add, 64)) < 0.03, axis=1)
        gone = [int(i) for i in rng.choice(list(ref), min(len(ref), 25), replace=False)] if ref else []
        again = gone[:5]  # re-encoded tiles: removed and added back under the same id
        index.update(remove=gone, ids=list(range(next_id, next_id + add)) + again,
                     codes=np.concatenate([new, pool[:len(again)]]))
        for i in gone:
            del ref[i]
        ref.update(zip(range(next_id, next_id + add), new))
        ref.update(zip(again, pool[:len(again)]))
        next_id += add
        assert index.ntotal == len(ref)
        seen.append((index.clustered, index._index.clustered_at if index.clustered else 0))
        for q in (pool[step], rng.integers(0, 256, 8, dtype=np.uint8)):
            check(index, ref, q, 20)
    assert not seen[0][0] and seen[-1][0]  # flat at first, clustered once past CLUSTER_MIN
    assert len({at for c, at in seen if c}) >= 2  # re-clustered after growing REGROW times


def test_clustered_save_load_and_flat_file_upgrade(tmp_path):
    import faiss

    rng = np.random.default_rng(3)
    codes = clustered_codes(rng, 2000)
    index = HammingTable(64)
    index.reset(np.arange(2000) * 3, codes)
    index.update(remove=[0, 3, 6])
    path = tmp_path / "codes.faiss"
    index.save(path)
    assert isinstance(faiss.read_index_binary(str(path)), faiss.IndexBinaryIVF)
    loaded = HammingTable.load(path, 64)
    assert loaded.clustered and loaded.ntotal == 1997
    assert HammingTable.load(path, 32) is None
    ref = {i * 3: c for i, c in enumerate(codes) if i >= 3}
    for q in list(codes[:10]) + list(rng.integers(0, 256, (5, 8), dtype=np.uint8)):
        assert loaded.search(q, 20) == index.search(q, 20)
        check(loaded, ref, q, 20)
    loaded.update(ids=[99999], codes=codes[5:6] ^ 0xFF)  # a loaded index keeps taking codes
    assert loaded.search(codes[5] ^ 0xFF, 1) == [(99999, 0)]

    old = faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(64))  # a file from before the clustered form
    old.add_with_ids(codes, np.arange(2000, dtype=np.int64))
    faiss.write_index_binary(old, str(path))
    upgraded = HammingTable.load(path, 64)
    assert upgraded.clustered and upgraded.ntotal == 2000
    check(upgraded, dict(enumerate(codes)), codes[7], 20)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codes.faiss"]


def test_small_index_stays_flat_and_empty_index_is_empty():
    index = HammingTable(64)
    codes = np.random.default_rng(4).integers(0, 256, (100, 8), dtype=np.uint8)
    index.reset(np.arange(100), codes)
    assert not index.clustered
    index.reset()
    assert index.ntotal == 0 and index.search(codes[0], 5) == []


def test_max_scan_is_approximate_but_honest():
    """A budget reads fewer lists: returned pairs stay true distances; a full budget is exact."""
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 256, (3000, 8), dtype=np.uint8)
    ref = dict(enumerate(codes))
    exact, approx, full = HammingTable(64), HammingTable(64, max_scan=0.05), HammingTable(64, max_scan=1.0)
    for index in (exact, approx, full):
        index.reset(np.arange(3000), codes)
    worse = 0
    for q in rng.integers(0, 256, (20, 8), dtype=np.uint8):
        got = approx.search(q, 20)
        assert len(got) == 20 and all(hamming(q, ref[i])[0, 0] == d for i, d in got)
        worse += [d for _, d in got] != [d for _, d in exact.search(q, 20)]
        check(full, ref, q, 20)
    assert worse > 0  # uniform codes cannot be answered exactly from 5% of them


def test_clustering_is_kept_only_where_it_prunes(monkeypatch):
    monkeypatch.setattr(HammingTable, "PAYOFF", 0.5)
    rng = np.random.default_rng(6)
    structured, uniform = HammingTable(64), HammingTable(64)
    codes = clustered_codes(rng, 3000, flip=0.05)
    structured.reset(np.arange(3000), codes)
    assert structured.clustered and structured._index.median_read(codes) < 1500
    codes = rng.integers(0, 256, (3000, 8), dtype=np.uint8)
    uniform.reset(np.arange(3000), codes)
    assert not uniform.clustered  # every list would be read: the flat scan is as exact and cheaper
    before = uniform._index
    uniform.update(ids=[5000], codes=codes[:1])  # no new try at every batch...
    assert uniform._index is before and not uniform.clustered
    check(uniform, {**dict(enumerate(codes)), 5000: codes[0]}, codes[0], 20)
    monkeypatch.setattr(HammingTable, "PAYOFF", 1.0)
    more = rng.integers(0, 256, (9000, 8), dtype=np.uint8)
    uniform.update(ids=np.arange(10000, 19000), codes=more)  # ...only after growing REGROW times
    assert uniform.clustered and uniform.ntotal == 12001


@pytest.fixture
def tiny_clusters(monkeypatch):
    monkeypatch.setattr(HammingTable, "CLUSTER_MIN", 4)  # the 12-tile test archive gets clustered indexes


def test_archive_with_clustered_indexes_saves_reloads_and_rebuilds(tiny_clusters, archive, tiny_encoders):
    """Indexing, the saved file, reopening and the rebuild from SQLite all go through the clustered form."""
    import faiss

    from duch_desktop.core.archive.archive import TILES_FAISS, Archive

    def reopen():
        return Archive.open(archive.index_dir, model=archive.model, image_encoder=tiny_encoders.image,
                            text_encoder=tiny_encoders.text)

    rows = archive.db.connection().execute("SELECT id, code FROM tiles WHERE status = 'ok' AND code IS NOT NULL").fetchall()
    ref = {i: np.frombuffer(c, dtype=np.uint8) for i, c in rows}
    assert archive.tables["tiles"].clustered and archive.tables["captions"].clustered
    for q in ref.values():
        check(archive.tables["tiles"], ref, q, 5)
    expected = [(h.tile_id, h.distance) for h in archive.search_text("green forest", k=len(ref))]
    assert sorted(d for _, d in expected) == [d for _, d in expected] and len(expected) == len(ref)
    archive.close()
    path = archive.index_dir / TILES_FAISS
    assert isinstance(faiss.read_index_binary(str(path)), faiss.IndexBinaryIVF)
    for damage in (None, b"not a faiss index"):
        if damage:
            path.write_bytes(damage)
        again = reopen()
        try:
            assert again.tables["tiles"].clustered
            assert [(h.tile_id, h.distance) for h in again.search_text("green forest", k=len(ref))] == expected
        finally:
            again.close()
    assert isinstance(faiss.read_index_binary(str(path)), faiss.IndexBinaryIVF)  # rebuilt and saved again


def test_searches_while_another_thread_grows_and_reclusters():
    """The GUI searches while indexing adds: re-clustering is built outside the lock and swapped in."""
    import threading

    rng = np.random.default_rng(7)
    codes = clustered_codes(rng, 6000)
    index, errors, done = HammingTable(64), [], threading.Event()

    def searcher():
        try:
            while not done.is_set():
                got = index.search(codes[0], 10)
                assert got == sorted(got, key=lambda p: (p[1], p[0]))
                assert not got or got[0] == (0, 0)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    index.update(ids=[0], codes=codes[:1])
    thread = threading.Thread(target=searcher)
    thread.start()
    try:
        for s in range(1, 6000, 250):
            index.update(ids=np.arange(s, min(6000, s + 250)), codes=codes[s:s + 250])
    finally:
        done.set()
        thread.join()
    assert not errors and index.clustered and index.ntotal == 6000
    assert index._index.clustered_at >= 1600  # re-clustered on the way (400 -> >= 1600)
    check(index, dict(enumerate(codes)), codes[1], 20)
