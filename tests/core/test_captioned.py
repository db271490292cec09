"""Captioned collections as a benchmark: instance recall by hand, per-type precision, and the
evaluation on a tiny RSICD-shaped collection (with an extra UCM-shaped one) using stand-in encoders."""
import json
from pathlib import Path

import numpy as np
import pytest

from duch_desktop.core.jobs import drive
from duch_desktop.core.model.bundle import DuchModel
from duch_desktop.core.research.captioned import hit_chance, recall_at, type_precision
from duch_desktop.core.research.benchmark import run_ucm_evaluation
from duch_desktop.core.training.trainer import TrainConfig
from tests.core.test_end_to_end import WordBag


def test_hit_chance_breaks_ties_at_random():
    # 2 strictly closer: an own item at rank 3 at best -> never in the top 2
    assert hit_chance(np.array([2]), np.array([0]), np.array([1]), 2)[0] == 0.0
    # 1 own and 3 others tied at the top: P(own first) = 1/4, within the first 2 = 1/2
    assert hit_chance(np.array([0]), np.array([3]), np.array([1]), 1)[0] == pytest.approx(0.25)
    assert hit_chance(np.array([0]), np.array([3]), np.array([1]), 2)[0] == pytest.approx(0.5)
    # 2 own and 2 others tied: P(some own in the first 1) = 1/2, first 2 = 1 - 1/6
    assert hit_chance(np.array([0]), np.array([2]), np.array([2]), 1)[0] == pytest.approx(0.5)
    assert hit_chance(np.array([0]), np.array([2]), np.array([2]), 2)[0] == pytest.approx(5 / 6)


def test_recall_by_hand_on_features():
    # 3 images; captions 0,1 belong to image 0, caption 2 to image 1, caption 3 to image 2
    img = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    cap = np.array([[0.0, 1.0], [1.0, 0.1], [0.0, 1.0], [1.0, 0.0]])
    owner = np.array([0, 0, 1, 2])
    r = recall_at(None, img, cap, owner, ks=(1, 2))
    # I->T: image 0 meets caption 3 (another's) first, its own caption 1 second; image 1 ties
    # caption 0 (another's) with its own caption 2 -> 1/2 at rank 1; image 2's caption is last
    assert r["i2t_R@1"] == pytest.approx(100 * (0 + 0.5 + 0) / 3)
    assert r["i2t_R@2"] == pytest.approx(100 * (1 + 1 + 0) / 3)
    # T->I: caption 0 -> image 1 first, then its own image 0 tied with image 2 (1/2 at rank 2);
    # captions 1 and 2 find their image first; caption 3's image 2 comes last
    assert r["t2i_R@1"] == pytest.approx(100 * (0 + 1 + 1 + 0) / 4)
    assert r["t2i_R@2"] == pytest.approx(100 * (0.5 + 1 + 1 + 0) / 4)
    assert r["mR"] == pytest.approx(np.mean([r[k] for k in r if k != "mR"]))


def test_type_precision_counts_new_and_ucm_types_apart():
    class Echo:  # codes = the features themselves, so the ranking is the features'
        bits = 8

        def image_codes(self, f, packed=True):
            return np.packbits(f > 0, axis=1) if packed else f

        text_codes = image_codes

    # 4 tiles of "bridge" (new type) with code 1..., 4 of "beach" (a UCM type) with code 0...
    tiles = np.where(np.repeat([[1.0], [-1.0]], 4, 0) > 0, 1.0, -1.0) * np.ones((8, 8))
    labels = np.repeat([0, 1], 4)
    queries = {"bridge": ["a bridge"], "beach": ["sand"]}
    qf = np.stack([np.ones(8), np.ones(8)])  # both queries look like bridges
    t = type_precision(Echo(), tiles, labels, ["bridge", "beach"], queries, qf, k=4)
    assert t.per_type == {"bridge": 1.0, "beach": 0.0}
    assert (t.mean_all, t.mean_new, t.float_mean_new) == (0.5, 1.0, 1.0)


class ColourMean:
    """Mean colour, spread over a fixed random projection: enough to tell the fixture's classes."""

    identity, dim, input_size = "test-colour-mean@1", 16, 16

    def encode(self, images):
        x = np.asarray(images, np.float32).mean((1, 2)) / 255.0
        w = np.random.default_rng(0).normal(size=(3, self.dim)).astype(np.float32)
        return np.tanh((x - 0.5) @ w * 3).astype(np.float32)


COLOURS = {"bridge": (200, 30, 30), "pond": (30, 30, 200), "desert": (220, 200, 120)}


def rsicd_like(root: Path, per_class: int = 24) -> Path:
    """RSICD's layout: images/<class>/<class>_<n>.jpg, captions.json with a class list and splits."""
    from PIL import Image

    rng = np.random.default_rng(1)
    images = []
    for cls, rgb in COLOURS.items():
        for n in range(1, per_class + 1):
            name = f"{cls}/{cls}_{n}.jpg"
            (root / "images" / cls).mkdir(parents=True, exist_ok=True)
            px = np.clip(np.array(rgb) + rng.normal(0, 15, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(root / "images" / name)
            images.append({"filename": name, "classname": cls, "imgid": len(images),
                           "split": "val" if n > per_class * 2 // 3 else "train",
                           "sentences": [{"raw": f"a {cls} seen from above number {n} ."},
                                         {"raw": f"there is a {cls} here ."}]})
    (root / "captions.json").write_text(json.dumps({"dataset": "tiny", "classes": list(COLOURS), "images": images}))
    return root


def test_evaluate_on_an_rsicd_shaped_collection(tmp_path):
    root = rsicd_like(tmp_path / "rsicd")
    extra = rsicd_like(tmp_path / "more", per_class=5)
    queries = tmp_path / "q.json"
    queries.write_text(json.dumps({"_about": "test", "bridge": "a bridge", "pond": "a pond", "desert": "desert"}))
    out = tmp_path / "docs"
    (out).mkdir()
    (out / "results.md").write_text("# DUCH on UCM-captions\n\nkept UCM table\n")
    report = drive(run_ucm_evaluation(root, ColourMean(), WordBag(), bits=(16,), epochs=15, ablation=False,
                                      ablation_bits=16, cache_dir=tmp_path / "cache", out_dir=out,
                                      config=TrainConfig(batch_size=16, lr=1e-3, hidden=64), num_workers=0,
                                      extra=[extra], type_queries=queries))
    assert (report.setup["n_train"], report.setup["n_query"], report.setup["n_retrieval"]) == (36, 7, 29)
    held = report.heldout
    assert held["n_tiles"] == 24 and held["n_captions"] == 48 and held["bits"] == 16
    # three colours, three caption sets: above chance (1/3; at most 0.8 with 8 tiles per type)
    assert held["types"]["mean_all"] > 0.5
    assert held["recall_hamming"]["mR"] > 0 and held["recall_float"]["mR"] > 0
    md = (out / "results.md").read_text()
    assert "kept UCM table" in md and "<!-- rsicd: begin -->" in md
    assert "0.684" in md  # the paper's RSICD 16-bit I->T, for comparison
    assert "| bridge |" in md and "mR" in md
    assert "image–text, image–image, text–text NT-Xent, adversarial 0.01, quantization 0.001, balance 0.01" in md
    assert json.loads((out / "results_rsicd.json").read_text())["results"][0]["bits"] == 16
    # a second run replaces the section instead of adding one
    drive(run_ucm_evaluation(root, ColourMean(), WordBag(), bits=(16,), epochs=1, ablation=False, ablation_bits=16,
                             cache_dir=tmp_path / "cache", out_dir=out, config=TrainConfig(batch_size=16, hidden=64),
                             num_workers=0))
    assert (out / "results.md").read_text().count("<!-- rsicd: begin -->") == 1


def test_trained_model_keeps_its_hidden_width(tmp_path):
    from duch_desktop.core.training.trainer import TrainingData, train

    rng = np.random.default_rng(0)
    views = rng.normal(size=(3, 40, 8)).astype(np.float32)
    views[1:, 20:] = np.nan  # half the tiles have only their original view
    data = TrainingData(views, rng.normal(size=(80, 6)).astype(np.float32), np.repeat(np.arange(40), 2))
    assert data.has_views.tolist() == [True] * 20 + [False] * 20
    res = drive(train(data, TrainConfig(bits=8, epochs=2, batch_size=8, hidden=32, image_noise=0.1,
                                        w_intra_text=0.0, alpha=0.0), "i", "t"))
    assert all(np.isfinite(h["total"]) for h in res.history)
    res.model.save(tmp_path / "m")
    assert DuchModel.load(tmp_path / "m").image_head.net[0].out_features == 32
