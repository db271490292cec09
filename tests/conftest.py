"""Shared fixtures: a tiny hashing model, tiny fake encoders, a folder of generated tiles, an archive.

The fake encoders are registered with :func:`defaults.register_encoder_factory` under the
identities the tiny model bundle records ("test-random:8", "test-bow:8"), so an archive opened
from a saved bundle finds them exactly as it would find real encoders.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from duch_desktop.core.model import defaults

IMAGE_ID, TEXT_ID = "test-random:8", "test-bow:8"

# Three visually distinct classes: mean RGB and the captions used for them.
CLASSES = {
    "field": ((170, 120, 60), ["a brown agricultural field", "ploughed farmland with furrows"]),
    "forest": ((30, 110, 40), ["a dense green forest", "many trees seen from above"]),
    "water": ((40, 70, 170), ["blue water of a lake", "a calm sea near the coast"]),
}
PER_CLASS = 4  # 2 PNG + 2 GeoTIFF per class -> 12 tiles


class TinyImageEncoder:
    """Fixed random projection of an 8x8 downsample; ``images`` counts how many it encoded."""

    dim = 8

    def __init__(self, identity: str = IMAGE_ID, input_size: int = 16):
        self.identity, self.input_size = identity, input_size
        self.images = 0
        rng = np.random.default_rng(1234)
        self.w = rng.standard_normal((8 * 8 * 3, self.dim)).astype(np.float32) / 8

    def encode(self, images: np.ndarray) -> np.ndarray:
        x = np.asarray(images, np.float32) / 255.0 - 0.5
        n, s = x.shape[0], x.shape[1]
        x = x.reshape(n, 8, s // 8, 8, s // 8, 3).mean(axis=(2, 4))
        self.images += n
        return (x.reshape(n, -1) @ self.w).astype(np.float32)


class TinyTextEncoder:
    """Hashed bag of words: each word adds a fixed pseudo-random 8-d vector."""

    dim = 8

    def __init__(self, identity: str = TEXT_ID):
        self.identity = identity
        self.texts = 0

    def encode(self, texts) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            for w in str(t).lower().split():
                h = hashlib.sha1(w.strip(".,").encode()).digest()
                out[i] += np.frombuffer(h[:8], np.uint8).astype(np.float32) / 128 - 1
        self.texts += len(texts)
        return out


def register_tiny_encoders() -> None:
    """Let bundles naming the tiny encoders load them (also used by subprocess scripts)."""
    defaults.register_encoder_factory("test-random", TinyImageEncoder)
    defaults.register_encoder_factory("test-bow", TinyTextEncoder)


register_tiny_encoders()


def make_tiny_model(bits: int = 16, seed: int = 0):
    """A randomly initialised DuchModel for the tiny encoders (deterministic per seed)."""
    import torch

    from duch_desktop.core.model.bundle import DuchModel

    torch.manual_seed(seed)
    return DuchModel.new(image_dim=8, text_dim=8, bits=bits, image_encoder=IMAGE_ID, text_encoder=TEXT_ID, hidden=32)


def run_job(job):
    """Drive a Job to completion; returns ``(result, events)``."""
    events = []
    while True:
        try:
            events.append(next(job))
        except StopIteration as stop:
            return stop.value, events


def write_tile(path: Path, cls: str, seed: int, geo: bool) -> Path:
    """One 48x48 tile of class ``cls``: PNG, or GeoTIFF in UTM 33N (so it has a footprint)."""
    rng = np.random.default_rng(seed)
    rgb = np.clip(np.array(CLASSES[cls][0], np.float32) + rng.normal(0, 15, (48, 48, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    if geo:
        import rasterio
        from rasterio.transform import from_origin

        x0 = 500000.0 + 500 * seed  # keeps every footprint within lon 15.0-15.2, lat 52.3-52.4
        with rasterio.open(path, "w", driver="GTiff", width=48, height=48, count=3, dtype="uint8",
                           crs="EPSG:32633", transform=from_origin(x0, 5800000.0, 10.0, 10.0)) as ds:
            ds.write(rgb.transpose(2, 0, 1))
    else:
        from PIL import Image

        Image.fromarray(rgb).save(path)
    return path


def _tile_rel(cls: str, i: int) -> str:
    return f"{cls}/{cls}_{i}.{'tif' if i >= 2 else 'png'}"  # tiles 0-1 PNG, 2-3 GeoTIFF


def make_tile_folder(root: Path) -> dict[str, str]:
    """12 tiles in 3 classes under ``root``; returns ``{rel: class}``."""
    classes = {}
    for c, cls in enumerate(CLASSES):
        for i in range(PER_CLASS):
            rel = _tile_rel(cls, i)
            write_tile(root / rel, cls, seed=10 * c + i, geo=rel.endswith(".tif"))
            classes[rel] = cls
    return classes


# A generated scene: 640 x 384 px, UTM 33N at 0.5 m/px, three class bands side by side and a
# nodata strip on the right (columns >= 448). Cut with chip 128 / overlap 32 it gives a 7 x 4
# grid whose two right-most columns (col_off 480 and 512) hold no valid pixel.
SCENE_SIZE = (640, 384)
SCENE_CHIP = dict(chip=128, overlap=32)
SCENE_NODATA_FROM = 448
SCENE_ORIGIN = (500000.0, 5810000.0)


def write_scene(path: Path, size: tuple[int, int] = SCENE_SIZE, seed: int = 0, pixel: float = 0.5) -> Path:
    """A tiled GeoTIFF scene (see SCENE_SIZE): field | forest | water columns, nodata=0 right of 448."""
    import rasterio
    from rasterio.transform import from_origin

    w, h = size
    rng = np.random.default_rng(seed)
    data = np.zeros((3, h, w), np.uint8)
    bands = np.array_split(np.arange(min(w, SCENE_NODATA_FROM)), 3)
    for cols, (mean, _) in zip(bands, CLASSES.values()):
        noise = rng.normal(0, 15, (3, h, len(cols)))
        data[:, :, cols] = np.clip(np.array(mean, np.float32)[:, None, None] + noise, 1, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(*SCENE_ORIGIN, pixel, pixel), nodata=0, tiled=True,
                       blockxsize=128, blockysize=128, compress="deflate") as ds:
        ds.write(data)
    return path


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: (kind, size, mtime_ns, sha256) — to prove nothing was written."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else None
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(autouse=True)
def _private_data_dir(tmp_path_factory, monkeypatch):
    """Default index locations go to a temp dir, never to the real user data dir."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))
    # The caption-bank cache would let one test's encoding stand in for another's.
    from duch_desktop.core.archive import captions

    bank = tmp_path_factory.mktemp("caption-bank")
    monkeypatch.setattr(captions, "caption_bank_dir", lambda: bank)


@pytest.fixture
def tiny_model():
    return make_tiny_model()


@pytest.fixture
def tiny_encoders():
    return SimpleNamespace(image=TinyImageEncoder(), text=TinyTextEncoder())


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny model saved as a bundle, with a ``captions.json`` like a shipped model has."""
    path = tmp_path_factory.mktemp("tiny-model")
    make_tiny_model().save(path)
    captions = [c for _, caps in CLASSES.values() for c in caps] + ["an airport with planes", "a dense city"]
    (path / "captions.json").write_text(json.dumps(captions))
    return path


@pytest.fixture
def tile_folder(tmp_path) -> Path:
    """A folder of 12 generated tiles (see :func:`make_tile_folder`)."""
    root = tmp_path / "tiles"
    make_tile_folder(root)
    return root


@pytest.fixture
def tile_classes() -> dict[str, str]:
    """``{rel: class}`` of the tiles in ``tile_folder``."""
    return {_tile_rel(cls, i): cls for cls in CLASSES for i in range(PER_CLASS)}


@pytest.fixture
def user_captions(tmp_path) -> Path:
    """A user captions CSV (outside the tile folder) naming a few tiles."""
    path = tmp_path / "my_captions.csv"
    path.write_text("file,caption\nfield/field_0.png,a wheat field in summer\n"
                    "water/water_1.png,a harbour with boats\n")
    return path


@pytest.fixture
def archive(tmp_path, tile_folder, tiny_model_dir, tiny_encoders, user_captions):
    """An archive of ``tile_folder`` indexed with the tiny model bundle and encoders."""
    from duch_desktop.core.archive.archive import Archive

    arch = Archive.open(tmp_path / "index", model=tiny_model_dir, image_encoder=tiny_encoders.image,
                        text_encoder=tiny_encoders.text, create_root=tile_folder)
    report, _ = run_job(arch.index(workers=0, batch_size=4, captions_file=user_captions))
    assert report.added == len(CLASSES) * PER_CLASS and report.errors == 0
    yield arch
    arch.close()


@pytest.fixture
def scene_folder(tile_folder) -> Path:
    """``tile_folder`` plus ``scenes/scene.tif`` (see :func:`write_scene`)."""
    write_scene(tile_folder / "scenes" / "scene.tif")
    return tile_folder


@pytest.fixture
def chip_archive(tmp_path, scene_folder, tiny_model_dir, tiny_encoders):
    """An archive of ``scene_folder`` indexed with chips (SCENE_CHIP): 12 tiles + 28 chips, 8 of them nodata."""
    from duch_desktop.core.archive.archive import Archive

    arch = Archive.open(tmp_path / "chip-index", model=tiny_model_dir, image_encoder=tiny_encoders.image,
                        text_encoder=tiny_encoders.text, create_root=scene_folder)
    report, _ = run_job(arch.index(workers=0, batch_size=8, **SCENE_CHIP))
    assert report.added == len(CLASSES) * PER_CLASS + 1 and report.chips == 28 and report.nodata == 8
    yield arch
    arch.close()


@pytest.fixture(scope="session")
def hf_model_dir(tmp_path_factory) -> Path:
    """A tiny model bundle whose encoders are real (tiny) Hugging Face models saved on disk.

    The encoder identities are the model directories, so loading goes through
    ``encoders.load_*_encoder`` exactly like a real bundle (offline).
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer, ResNetConfig, ResNetModel

    from duch_desktop.core.model.bundle import DuchModel

    base = tmp_path_factory.mktemp("hf")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "the", "of", "with", "dense", "green", "forest",
             "brown", "field", "blue", "water", "lake", "trees", "many", "sea", "."]
    bert = base / "bert"
    bert.mkdir()
    (bert / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(bert / "vocab.txt")).save_pretrained(bert)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                         intermediate_size=37, max_position_embeddings=128)).save_pretrained(bert)
    resnet = base / "resnet"
    ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
                             image_size=32)).save_pretrained(resnet)
    bundle = base / "bundle"
    torch.manual_seed(0)
    DuchModel.new(image_dim=16, text_dim=32, bits=16, image_encoder=str(resnet), text_encoder=str(bert),
                  hidden=32).save(bundle)
    return bundle
