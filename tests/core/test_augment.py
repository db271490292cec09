"""Image and text views: deterministic given the rng, label-preserving, shapes kept."""
import numpy as np
import pytest

from duch_desktop.core.training.augment import (IMAGE_VIEWS, image_view, replace_synonyms, swap_adjacent, text_view,
                                       training_texts, word_dropout)


def tile(size=32):
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", IMAGE_VIEWS)
def test_views_keep_shape_and_are_deterministic(name):
    img = tile()
    a = image_view(name, img, np.random.default_rng(3))
    b = image_view(name, img, np.random.default_rng(3))
    assert a.shape == img.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)


def test_rotation_is_a_quarter_turn_multiple():
    img = tile()
    seen = set()
    for s in range(20):
        out = image_view("rot", img, np.random.default_rng(s))
        k = [k for k in (1, 2, 3) if np.array_equal(out, np.rot90(img, k))]
        assert len(k) == 1
        seen.add(k[0])
    assert seen == {1, 2, 3}


def test_blur_smooths_and_crop_zooms():
    img = tile(64)
    blurred = image_view("blur", img, np.random.default_rng(0))
    assert np.abs(np.diff(blurred.astype(int), axis=1)).mean() < 0.5 * np.abs(np.diff(img.astype(int), axis=1)).mean()
    flat = np.zeros((256, 256, 3), np.uint8)
    flat[28:228, 28:228] = 255  # the central 200 px
    cropped = image_view("crop", flat, np.random.default_rng(0))
    assert cropped.shape == flat.shape and cropped.mean() > 250  # zoomed to fill the frame


def test_zoomout_shrinks_scale_coarsens_colour_keeps_geometry():
    # a 20 px stripe: after zooming out by f in [0.4, 0.7] each copy of it (the original and its
    # mirror images around it) is 8-14 px wide
    img = np.zeros((200, 200, 3), np.uint8)
    img[:, 90:110] = 255
    row = image_view("zoomout", img, np.random.default_rng(0))[100, :, 0] > 128
    starts = np.flatnonzero(np.diff(row.astype(int)) == 1)
    assert len(starts) >= 2
    assert 0.3 * 20 < row.sum() / len(starts) < 0.8 * 20
    noisy = tile(64)
    coarse = image_view("scale", noisy, np.random.default_rng(0))
    assert np.abs(np.diff(coarse.astype(int), axis=1)).mean() < 0.6 * np.abs(np.diff(noisy.astype(int), axis=1)).mean()
    grad = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (64, 1, 3))
    recoloured = image_view("colour", grad, np.random.default_rng(1))
    assert not np.array_equal(recoloured, grad)
    assert np.all(np.diff(recoloured[0, :, 0].astype(int)) >= 0)  # same geometry: still a left-to-right ramp


def test_zoomfar_shrinks_more_than_zoomout_and_recolour_shifts_hue_keeping_geometry():
    # f in [0.15, 0.4]: each copy of a 40 px stripe is 6-16 px wide, and there are several copies
    img = np.zeros((200, 200, 3), np.uint8)
    img[:, 80:120] = 255
    for s in range(5):
        row = image_view("zoomfar", img, np.random.default_rng(s))[100, :, 0] > 128
        starts = np.flatnonzero(np.diff(row.astype(int)) == 1)
        assert len(starts) >= 3
        assert 0.1 * 40 < row.sum() / len(starts) < 0.45 * 40
    grad = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (64, 1, 3))
    for s in range(5):
        out = image_view("recolour", grad, np.random.default_rng(s))
        assert np.all(np.diff(out[0, :, 0].astype(int)) >= 0)  # still a left-to-right ramp
    green = np.zeros((16, 16, 3), np.uint8)
    green[..., 1] = 160
    hues = set()
    for s in range(10):
        r, g, b = image_view("recolour", green, np.random.default_rng(s))[0, 0].astype(int)
        hues.add((r > g // 3) or (b > g // 3))  # some red or blue mixed into the green
    assert hues == {True, False}


def test_unknown_view_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown image view"):
        image_view("sepia", tile(), np.random.default_rng(0))


def test_text_edits():
    rng = np.random.default_rng(0)
    outs = {replace_synonyms("Many cars are parked beside the road.", rng, p=1.0) for _ in range(20)}
    assert all("cars" not in o and "road." not in o for o in outs)
    assert any(o.startswith("Lots of") for o in outs) and any(o.startswith("A lot of") for o in outs)
    assert word_dropout("one two three four five six.", np.random.default_rng(1), p=0.99) == "one two three four five six."
    assert swap_adjacent("a b.", rng) == "b a."
    assert swap_adjacent("alone.", rng) == "alone."


def test_text_view_is_deterministic_and_differs():
    cap = "There are many white houses arranged neatly."
    a = text_view(cap, np.random.default_rng(5))
    assert a == text_view(cap, np.random.default_rng(5))
    assert a != cap and a.endswith(".")


def test_training_texts_owner_and_no_repeats():
    caps = [["A plane.", "A plane.", "Two planes at the airport."], ["Many trees."]]
    texts, owner = training_texts(caps, np.random.default_rng(0))
    assert owner.tolist() == sorted(owner.tolist()) and set(owner) == {0, 1}
    for i in (0, 1):
        own = [t for t, o in zip(texts, owner) if o == i]
        assert len(own) == len(set(own)) and set(caps[i]) <= set(own)
