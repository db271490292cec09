"""The unsupervised trainer: progress events, cancel, determinism, label-free selection."""
import numpy as np
import pytest

from duch_desktop.core.jobs import Cancelled, drive
from duch_desktop.core.model.bundle import DuchModel
from duch_desktop.core.training.trainer import TrainConfig, TrainingData, pair_retrieval_score, train


def toy_data(n=120, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    ci, ct = rng.normal(size=(classes, 24)), rng.normal(size=(classes, 12))
    views = np.stack([ci[labels] + 0.4 * rng.normal(size=(n, 24)) for _ in range(3)]).astype(np.float32)
    owner = np.repeat(np.arange(n), 3)
    texts = (ct[labels[owner]] + 0.4 * rng.normal(size=(len(owner), 12))).astype(np.float32)
    return TrainingData(views, texts, owner), labels


def small_config(**kw):
    return TrainConfig(**{"bits": 16, "epochs": 8, "batch_size": 32, "lr": 1e-3, **kw})


def test_training_improves_label_free_score_and_reports_progress():
    data, _ = toy_data()
    events = []
    result = drive(train(data, small_config(), "i", "t"), on_progress=events.append)
    assert events and events[-1].done == events[-1].total
    assert {"inter", "intra_image", "intra_text", "adversarial", "quantization", "balance"} <= set(events[0].info["losses"])
    assert len(result.history) == 8 and 1 <= result.best_epoch <= 8
    assert result.model.meta["n_val_images"] == 12
    # the chosen epoch is the one with the lowest held-out NT-Xent, and training lowered it
    vals = [h["val"] for h in result.history]
    assert result.best_val == max(vals) and result.best_epoch == 1 + vals.index(max(vals))
    assert result.best_epoch > 1 and result.best_val > vals[0] + 0.1
    # random heads: MRR of own pair among ~108 items is ~0.05; trained clearly higher
    assert result.history[result.best_epoch - 1]["val_pair_mrr"] > 0.15


def test_training_is_deterministic():
    data, _ = toy_data()
    a = drive(train(data, small_config(epochs=2), "i", "t"))
    b = drive(train(data, small_config(epochs=2), "i", "t"))
    np.testing.assert_array_equal(a.model.image_codes(data.image_views[0]), b.model.image_codes(data.image_views[0]))


def test_cancel_between_yields():
    data, _ = toy_data()
    seen = []
    with pytest.raises(Cancelled):
        drive(train(data, small_config(epochs=50), "i", "t"), on_progress=seen.append,
              should_cancel=lambda: len(seen) >= 3)
    assert len(seen) == 3


def test_pair_score_is_one_for_identical_modalities():
    # The same head on the same features: each caption has exactly its image's code.
    feats = np.random.default_rng(0).normal(size=(16, 32)).astype(np.float32)
    model = DuchModel.new(32, 32, 64, "i", "t", hidden=64)
    model.text_head.load_state_dict(model.image_head.state_dict())
    assert len({c.tobytes() for c in model.image_codes(feats)}) == 16  # no ties between tiles
    assert pair_retrieval_score(model, TrainingData(feats[None], feats, np.arange(16))) == 1.0
    # each tile paired with another tile's caption: its own caption is no longer the nearest
    swapped = TrainingData(feats[None], feats[np.roll(np.arange(16), 1)], np.arange(16))
    assert pair_retrieval_score(model, swapped) < 0.5


def test_training_data_rejects_images_without_captions():
    views = np.zeros((1, 6, 4), np.float32)
    with pytest.raises(Exception, match="caption"):
        TrainingData(views, np.zeros((5, 3), np.float32), np.arange(5))


@pytest.mark.parametrize("aug_inter", [0.0, 0.5, 1.0])
def test_view_pairs_differ_and_aug_inter_sets_how_often_text_meets_an_augmented_view(aug_inter):
    from duch_desktop.core.training.trainer import _sample_pairs

    data, _ = toy_data(n=400)  # 3 views: the original + 2 augmented
    va, vb, ta, tb = _sample_pairs(data, np.arange(400), np.random.default_rng(0), aug_inter)
    assert (va != vb).all() and (ta != tb).all()
    assert np.isin(va, [0, 1, 2]).all() and np.isin(vb, [0, 1, 2]).all()
    share = (va != 0).mean()
    assert abs(share - aug_inter) < 0.08
    if aug_inter == 0:
        assert (va == 0).all() and (vb != 0).all()  # the paper: text always meets the original tile
    if aug_inter == 1:
        assert {1, 2} <= set(va.tolist()) and 0 in set(vb.tolist())


def test_named_recipes_set_their_values_and_single_options_change_one():
    from types import SimpleNamespace

    from duch_desktop.core.jobs import UserError
    from duch_desktop.core.training.job import recipe_config, recipe_epochs

    paper = recipe_config(SimpleNamespace(device="cpu"))
    assert paper == TrainConfig(device="cpu") and recipe_epochs(SimpleNamespace()) == 100
    args = SimpleNamespace(device="cpu", recipe="contrastive", temperature=None, hidden=1024, epochs=None)
    c = recipe_config(args)
    assert (c.temperature, c.hidden, c.w_intra_text, c.alpha, c.gamma, c.select) == (0.2, 1024, 0.0, 0.0, 0.0, "pair_mrr")
    assert c.text_noise > 0 and c.image_noise > 0 and recipe_epochs(args) == 40
    args.epochs = 7
    assert recipe_epochs(args) == 7
    with pytest.raises(UserError, match="unknown recipe"):
        recipe_config(SimpleNamespace(device="cpu", recipe="magic"))
    with pytest.raises(UserError, match="at least 1"):
        recipe_epochs(SimpleNamespace(epochs=0))
