"""Augmented views for DUCH's intra-modal contrastive terms.

Image views (on a decoded uint8 (s, s, 3) RGB tile, as in the paper's pre-computed feature sets):

- ``rot``  — rotation by a random multiple of 90° (90/180/270). Overhead tiles have no "up",
  so these are label-preserving, and unlike small-angle rotations they add no black corners.
- ``blur`` — Gaussian blur, sigma drawn in [1, 2] px (sensor/atmospheric softness).
- ``crop`` — centre crop of 200/256 of the side (the paper's 200 px of a 256 px UCM tile),
  resized back to the input size, then a horizontal flip with probability 1/2.

Views beyond the paper, for imagery from other sensors (see docs/results.md, generalisation):

- ``zoomout`` — coarser ground sampling over a larger footprint: the tile is mirror-extended
  to 1/f of its side (f in [0.4, 0.7]) and the canvas resized back, so objects shrink as in AID/NWPU tiles that cover 0.3–5 km at 150–256 px.
- ``scale`` — resolution loss only: down-sampled by f in [0.3, 0.7] and back up (bilinear).
- ``colour`` — radiometry of another sensor: per-channel gain, brightness, contrast,
  saturation and gamma drawn at random.
- ``zoomfar`` — ``zoomout`` over a 2.5–7× larger footprint (f in [0.15, 0.4]): the scale of scene
  archives such as AID. Mirroring repeats the tile into a kaleidoscope at that size, an artificial
  look; it still helps (docs/generalisation.md).
- ``recolour`` — a stronger ``colour`` with a hue rotation of up to ±40°, as between a USGS
  orthophoto and a Google Earth mosaic.

Text views: the paper pre-computes GloVe synonym replacement or back-translation; neither is
available offline (no embedding file, no translation model), so :func:`text_view` makes
rule-based edits instead — synonym replacement from a small hand-written table of remote-sensing
words, then either word dropout or one adjacent-word swap. These are weaker than
back-translation: they keep the caption's structure. In training, the second text of a pair is
usually another human caption of the same tile, which is the stronger view; the rule-based
variants only add diversity. All functions are deterministic given the ``rng`` passed in.
"""
from __future__ import annotations

import re

import numpy as np
from PIL import Image, ImageFilter

IMAGE_VIEWS = ("orig", "rot", "blur", "crop", "zoomout", "scale", "colour", "zoomfar", "recolour")
PAPER_VIEWS = ("orig", "rot", "blur", "crop")
# The views training uses unless told otherwise (chosen by benchmarks/generalisation.py).
DEFAULT_VIEWS = PAPER_VIEWS + ("zoomout", "colour", "zoomfar", "recolour")
CROP_FRACTION = 200 / 256
BLUR_SIGMA = (1.0, 2.0)


def rotate(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotate by 90, 180 or 270 degrees (chosen by ``rng``)."""
    return np.ascontiguousarray(np.rot90(img, k=int(rng.integers(1, 4)), axes=(0, 1)))


def blur(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur with sigma uniform in ``BLUR_SIGMA`` pixels."""
    sigma = float(rng.uniform(*BLUR_SIGMA))
    return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius=sigma)))


def center_crop(img: np.ndarray, rng: np.random.Generator, fraction: float = CROP_FRACTION,
                flip: bool = True) -> np.ndarray:
    """Centre crop ``fraction`` of each side, resize back (bilinear), flip left-right with p = 1/2."""
    h, w = img.shape[:2]
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    top, left = (h - ch) // 2, (w - cw) // 2
    out = np.asarray(Image.fromarray(img[top:top + ch, left:left + cw]).resize((w, h), Image.BILINEAR))
    if flip and rng.random() < 0.5:
        out = np.ascontiguousarray(out[:, ::-1])
    return out


def zoom_out(img: np.ndarray, rng: np.random.Generator, fraction: tuple[float, float] = (0.4, 0.7)) -> np.ndarray:
    """The tile shrunk to a fraction f of its side, surrounded by its own mirror images.

    Mirroring (not wrapping) keeps the edges continuous, so the encoder sees a larger, plausible
    scene rather than seams; the tile itself sits at a random offset, not always centred.
    """
    h, w = img.shape[:2]
    f = float(rng.uniform(*fraction))
    ch, cw = round(h / f), round(w / f)
    top, left = int(rng.integers(0, ch - h + 1)), int(rng.integers(0, cw - w + 1))
    canvas = np.pad(img, ((top, ch - h - top), (left, cw - w - left), (0, 0)), mode="symmetric")
    return np.asarray(Image.fromarray(canvas).resize((w, h), Image.LANCZOS))


def rescale(img: np.ndarray, rng: np.random.Generator, fraction: tuple[float, float] = (0.3, 0.7)) -> np.ndarray:
    """Down-sample by a factor f in ``fraction`` and back up: same footprint, coarser pixels."""
    h, w = img.shape[:2]
    f = float(rng.uniform(*fraction))
    small = Image.fromarray(img).resize((max(8, round(w * f)), max(8, round(h * f))), Image.BOX)
    return np.asarray(small.resize((w, h), Image.BILINEAR))


def zoom_far(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """:func:`zoom_out` over a 2.5-7x larger footprint (f in [0.15, 0.4]): the scale of scene data
    sets such as AID, whose tiles cover hundreds of metres to kilometres at 150-600 px."""
    return zoom_out(img, rng, fraction=(0.15, 0.4))


def _radiometry(x: np.ndarray, rng: np.random.Generator, gain: tuple[float, float], saturation: tuple[float, float],
                contrast: tuple[float, float], brightness: tuple[float, float], gamma: tuple[float, float]) -> np.ndarray:
    """Per-channel gain, saturation, contrast, brightness and gamma, each drawn uniformly from its
    range, on float RGB in [0, 1]; back to uint8."""
    x = x * rng.uniform(*gain, size=3).astype(np.float32)
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * np.float32(rng.uniform(*saturation))
    m = x.mean()
    x = m + (x - m) * np.float32(rng.uniform(*contrast)) + np.float32(rng.uniform(*brightness))
    x = np.clip(x, 0.0, 1.0) ** np.float32(rng.uniform(*gamma))
    return (x * 255.0 + 0.5).astype(np.uint8)


def recolour(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A stronger :func:`colour`: hue rotation up to 40 degrees and wider gain/contrast/gamma
    ranges, as between an orthophoto and a Google Earth mosaic of the same kind of scene."""
    hsv = np.asarray(Image.fromarray(img).convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(rng.integers(-28, 29))) % 256
    x = np.asarray(Image.fromarray(hsv, "HSV").convert("RGB")).astype(np.float32) / 255.0
    return _radiometry(x, rng, gain=(0.7, 1.3), saturation=(0.5, 2.0), contrast=(0.6, 1.6),
                       brightness=(-0.15, 0.15), gamma=(0.5, 1.6))


def colour(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random radiometry: per-channel gain, brightness, contrast, saturation and gamma."""
    return _radiometry(img.astype(np.float32) / 255.0, rng, gain=(0.8, 1.2), saturation=(0.4, 1.4),
                       contrast=(0.7, 1.3), brightness=(-0.1, 0.1), gamma=(0.7, 1.4))


_IMAGE_FUNCS = {"orig": lambda img, rng: img, "rot": rotate, "blur": blur, "crop": center_crop,
                "zoomout": zoom_out, "scale": rescale, "colour": colour,
                "zoomfar": zoom_far, "recolour": recolour}


def image_view(name: str, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Apply the view called ``name`` (one of ``IMAGE_VIEWS``) to a uint8 (s, s, 3) tile."""
    try:
        return _IMAGE_FUNCS[name](img, rng)
    except KeyError:
        raise ValueError(f"unknown image view {name!r}; known: {', '.join(IMAGE_VIEWS)}") from None


# --------------------------------------------------------------------------- text

# Groups of interchangeable phrases, kept small and literal: each member may replace any other.
SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("many", "lots of", "a lot of"),
    ("some", "several"),
    ("houses", "homes"),
    ("house", "home"),
    ("cars", "vehicles"),
    ("car", "vehicle"),
    ("roads", "streets"),
    ("road", "street"),
    ("airplanes", "planes", "aircraft"),
    ("airplane", "plane"),
    ("boats", "ships"),
    ("freeways", "highways"),
    ("freeway", "highway"),
    ("beside", "next to"),
    ("surrounded by", "encircled by"),
    ("big", "large"),
    ("small", "little"),
    ("grey", "gray"),
    ("area", "region"),
    ("plants", "vegetation"),
    ("lawn", "grass"),
    ("dense", "crowded"),
    ("neatly", "regularly"),
)
_PHRASE_TO_GROUP = {p: g for g in SYNONYMS for p in g}
_PHRASE_RE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _PHRASE_TO_GROUP), key=len, reverse=True)) + r")\b",
                        re.IGNORECASE)


def replace_synonyms(text: str, rng: np.random.Generator, p: float = 0.5) -> str:
    """Replace each phrase found in ``SYNONYMS`` by another member of its group with probability ``p``."""
    def sub(m: re.Match) -> str:
        word = m.group(0)
        group = _PHRASE_TO_GROUP[word.lower()]
        if rng.random() >= p:
            return word
        others = [g for g in group if g != word.lower()]
        new = others[int(rng.integers(len(others)))]
        return new.capitalize() if word[0].isupper() else new
    return _PHRASE_RE.sub(sub, text)


def _split(text: str) -> tuple[list[str], str]:
    text = text.strip()
    end = text[-1] if text and text[-1] in ".!?" else ""
    return (text[:-1] if end else text).split(), end


def word_dropout(text: str, rng: np.random.Generator, p: float = 0.15, min_words: int = 3) -> str:
    """Drop each word with probability ``p``, keeping at least ``min_words`` (final punctuation kept)."""
    words, end = _split(text)
    keep = [w for w in words if rng.random() >= p]
    if len(keep) < min(min_words, len(words)):
        return text
    return " ".join(keep) + end


def swap_adjacent(text: str, rng: np.random.Generator) -> str:
    """Swap one random pair of neighbouring words."""
    words, end = _split(text)
    if len(words) < 2:
        return text
    i = int(rng.integers(len(words) - 1))
    words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words) + end


def text_view(text: str, rng: np.random.Generator, tries: int = 5) -> str:
    """Synonym replacement, then word dropout or one adjacent swap (coin flip); differs from
    ``text`` whenever some edit can change it within ``tries`` attempts."""
    out = text
    for _ in range(tries):
        out = replace_synonyms(text, rng)
        out = word_dropout(out, rng) if rng.random() < 0.5 else swap_adjacent(out, rng)
        if out != text:
            break
    return out


def training_texts(captions: list[list[str]], rng: np.random.Generator, variants: int = 1) -> tuple[list[str], np.ndarray]:
    """The text set of training: each tile's captions plus ``variants`` :func:`text_view` edits of
    each, without repeats within a tile. Returns (texts, owner) with owner[j] = tile index of text j."""
    texts: list[str] = []
    owner: list[int] = []
    for i, caps in enumerate(captions):
        own = list(dict.fromkeys(caps))
        own += [text_view(c, rng) for c in caps for _ in range(variants)]
        own = list(dict.fromkeys(own))
        texts += own
        owner += [i] * len(own)
    return texts, np.asarray(owner, dtype=np.int64)
