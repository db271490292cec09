"""Feature extraction and its on-disk cache."""
import os

import numpy as np
import pytest
from PIL import Image

from duch_desktop.core.training.augment import PAPER_VIEWS
from duch_desktop.core.training.features import extract_image_features, extract_text_features
from duch_desktop.core.jobs import UserError, drive


class FakeImageEncoder:
    identity, dim, input_size = "fake-image@1", 6, 16

    def __init__(self):
        self.calls = 0
        self.seen = 0

    def encode(self, images):
        self.calls += 1
        self.seen += len(images)
        x = np.asarray(images, np.float32)
        return np.concatenate([x.mean((1, 2)), x.std((1, 2))], axis=1)


class FakeTextEncoder:
    identity, dim = "fake-text@1", 3

    def __init__(self):
        self.seen = []

    def encode(self, texts):
        self.seen += list(texts)
        return np.array([[len(t), t.count(" "), sum(map(ord, t)) % 7] for t in texts], np.float32)


@pytest.fixture
def tiles(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        p = tmp_path / "tiles" / f"t{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


@pytest.mark.parametrize("workers", [0, 1])
def test_image_cache_hit_skips_the_encoder(tiles, tmp_path, workers):
    enc = FakeImageEncoder()
    events = []
    a = drive(extract_image_features(tiles, enc, PAPER_VIEWS, cache_dir=tmp_path / "c", seed=1, batch_size=8,
                                     num_workers=workers), events.append)
    assert a.shape == (4, 5, 6) and enc.seen == 20 and events[-1].done == events[-1].total == 20
    assert not np.allclose(a[0], a[2])  # the blurred view has a lower std
    calls = enc.calls
    b = drive(extract_image_features(tiles, enc, PAPER_VIEWS, cache_dir=tmp_path / "c", seed=1))
    np.testing.assert_array_equal(a, b)
    assert enc.calls == calls


def test_changed_file_or_seed_recomputes_only_what_changed(tiles, tmp_path):
    enc = FakeImageEncoder()
    cache = tmp_path / "c"
    drive(extract_image_features(tiles, enc, PAPER_VIEWS, cache_dir=cache, seed=1))
    enc.seen = 0
    st = os.stat(tiles[2])
    os.utime(tiles[2], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    drive(extract_image_features(tiles, enc, PAPER_VIEWS, cache_dir=cache, seed=1))
    assert enc.seen == 4  # one tile, four views
    enc.seen = 0
    drive(extract_image_features(tiles, enc, views=("orig", "blur"), cache_dir=cache, seed=2))
    assert enc.seen == 5  # new seed: the augmented view only; 'orig' does not depend on it


def test_damaged_cache_entry_is_recomputed(tiles, tmp_path):
    enc = FakeImageEncoder()
    cache = tmp_path / "c"
    a = drive(extract_image_features(tiles[:1], enc, views=("orig",), cache_dir=cache))
    (entry,) = list(cache.rglob("*.npy"))
    entry.write_bytes(b"garbage")
    b = drive(extract_image_features(tiles[:1], enc, views=("orig",), cache_dir=cache))
    np.testing.assert_array_equal(a, b)
    assert enc.calls == 2


def test_unreadable_tile_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    with pytest.raises(UserError, match="bad.jpg"):
        drive(extract_image_features([bad], FakeImageEncoder(), cache_dir=tmp_path / "c", num_workers=0))


def test_text_features_dedupe_and_cache(tmp_path):
    enc = FakeTextEncoder()
    texts = ["a b", "c", "a b", "d e f"]
    a = drive(extract_text_features(texts, enc, cache_dir=tmp_path, batch_size=2))
    assert a.shape == (4, 3) and sorted(enc.seen) == ["a b", "c", "d e f"]
    np.testing.assert_array_equal(a[0], a[2])
    enc.seen = []
    b = drive(extract_text_features(texts + ["new"], enc, cache_dir=tmp_path))
    assert enc.seen == ["new"]
    np.testing.assert_array_equal(a, b[:4])
    assert drive(extract_text_features([], enc, cache_dir=tmp_path)).shape == (0, 3)
