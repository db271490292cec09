"""Frozen-encoder features with an on-disk cache (DUCH module 1, run once per tile and view).

Every feature vector is one ``.npy`` file (``np.save``/``np.load``, ``allow_pickle=False``)
named by a SHA-1 of what determines it:

- image view: encoder identity + tile loader + real path, size, mtime + view name (+ the
  augmentation seed for views other than ``orig``);
- text: encoder identity + the exact text.

So a moved, edited or re-exported tile is recomputed, and a cache entry is never wrong for
the encoder asking. Tiles are decoded with :func:`duch_desktop.core.imagery.reading.read_tile` — the
same reader the indexer uses — so training and indexing see the same pixels.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
from torch.utils.data import DataLoader, Dataset

from .augment import DEFAULT_VIEWS, IMAGE_VIEWS, image_view
from ..model.encoders import ImageEncoder, TextEncoder
from ..imagery.reading import ImageryError, read_tile
from ..files import atomic_path, user_cache
from ..jobs import Job, Progress, RateMeter, UserError

# Part of every image key: bump when the decoding path changes what pixels the encoder sees.
TILE_LOADER = "imagery.read_tile/lanczos/v1"


def default_cache_dir() -> Path:
    return user_cache("features")


class FeatureCache:
    """One ``.npy`` per feature vector under ``root/<kind>/<2 hex>/<sha1>.npy``."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def _path(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:2] / f"{key}.npy"

    def get(self, kind: str, key: str, dim: int) -> np.ndarray | None:
        try:
            a = np.load(self._path(kind, key), allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None  # missing or damaged: recompute
        return a if a.shape == (dim,) and a.dtype == np.float32 else None

    def put(self, kind: str, key: str, vec: np.ndarray) -> None:
        path = self._path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, np.asarray(vec, dtype=np.float32), allow_pickle=False)


def _sha1(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()


def _canonical(path: Path) -> str:
    # realpath: '../data/x.jpg', '/abs/data/x.jpg' and a link to it are one file, one cache entry.
    return os.path.realpath(path)


def image_key(encoder_identity: str, path: Path, view: str, seed: int) -> str:
    """Cache key of one view of one tile (real path + size + mtime identify the file's content)."""
    path = Path(_canonical(path))
    try:
        st = path.stat()
    except OSError as e:
        raise UserError(f"cannot read tile {path}: {e.strerror or e}") from e
    return _sha1(encoder_identity, TILE_LOADER, str(path), st.st_size, st.st_mtime_ns, view,
                 None if view == "orig" else seed)


def view_rng(path: Path, view: str, seed: int) -> np.random.Generator:
    """The augmentation rng of one (tile, view): independent of the order tiles are processed in."""
    return np.random.default_rng([seed, zlib.crc32(_canonical(path).encode()), zlib.crc32(view.encode())])


class _TileViews(Dataset):
    """Item j -> (j, stacked uint8 views (k, s, s, 3)) of one tile, or (j, error message)."""

    def __init__(self, todo: list[tuple[Path, list[str]]], size: int, seed: int):
        self.todo, self.size, self.seed = todo, size, seed

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, j: int):
        path, views = self.todo[j]
        try:
            img, _ = read_tile(path, size=self.size)
        except (ImageryError, OSError) as e:
            return j, f"cannot read tile {path}: {e}"
        return j, np.stack([image_view(v, img, view_rng(path, v, self.seed)) for v in views])


def _first(batch):
    return batch


def _worker_init(_worker_id: int) -> None:
    # Ctrl-C reaches the whole process group; only the main process decides how to stop
    # (it closes the job, which shuts the workers down), so workers must not die of it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def extract_image_features(paths: Sequence[Path], encoder: ImageEncoder, views: Sequence[str] = DEFAULT_VIEWS,
                           cache_dir: str | os.PathLike | None = None, seed: int = 0, batch_size: int = 32,
                           num_workers: int = 1) -> Job[np.ndarray]:
    """Features of every view of every tile: float32 (len(views), len(paths), encoder.dim).

    Cached views are read back; the rest are decoded (in ``num_workers`` processes, 0 = in this
    one), augmented with a per-(tile, view) rng derived from ``seed``, and fed to the encoder in
    batches of ``batch_size``. Yields Progress("image features", views done, views total).
    """
    views = list(views)
    unknown = [v for v in views if v not in IMAGE_VIEWS]
    if unknown:
        raise ValueError(f"unknown image view {unknown[0]!r}; known: {', '.join(IMAGE_VIEWS)}")
    cache = FeatureCache(cache_dir)
    out = np.empty((len(views), len(paths), encoder.dim), dtype=np.float32)
    todo: list[tuple[Path, list[str]]] = []
    where: list[tuple[int, list[int], list[str]]] = []  # per todo item: tile index, view slots, keys
    for i, p in enumerate(paths):
        missing_v, missing_k, slots = [], [], []
        for vi, v in enumerate(views):
            key = image_key(encoder.identity, p, v, seed)
            vec = cache.get("images", key, encoder.dim)
            if vec is None:
                missing_v.append(v), missing_k.append(key), slots.append(vi)
            else:
                out[vi, i] = vec
        if missing_v:
            todo.append((Path(p), missing_v))
            where.append((i, slots, missing_k))
    total = sum(len(v) for _, v in todo)
    cached = len(views) * len(paths) - total
    yield Progress("image features", 0, total, f"{cached} views cached, {total} to compute",
                   {"cached": cached, "computed": total})
    if not total:
        return out

    loader = DataLoader(_TileViews(todo, encoder.input_size, seed), batch_size=None, shuffle=False,
                        num_workers=num_workers, collate_fn=_first, worker_init_fn=_worker_init,
                        prefetch_factor=4 if num_workers else None)
    meter, done = RateMeter(), 0
    pending_imgs: list[np.ndarray] = []
    pending_dst: list[tuple[int, int, str]] = []  # (view slot, tile index, key)

    def flush():
        feats = encoder.encode(np.concatenate(pending_imgs))
        for (vi, i, key), f in zip(pending_dst, feats):
            out[vi, i] = f
            cache.put("images", key, f)
        n = len(pending_dst)
        pending_imgs.clear(), pending_dst.clear()
        return n

    it = iter(loader)
    try:
        for j, imgs in it:
            if isinstance(imgs, str):
                raise UserError(imgs)
            i, slots, keys = where[j]
            pending_imgs.append(imgs)
            pending_dst.extend((vi, i, k) for vi, k in zip(slots, keys))
            if len(pending_dst) >= batch_size:
                done += flush()
                yield Progress("image features", done, total, f"{meter.rate(done):.1f} views/s")
        if pending_dst:
            done += flush()
            yield Progress("image features", done, total, f"{meter.rate(done):.1f} views/s")
    finally:
        # Stop the worker processes now, also on cancel (GeneratorExit) or error.
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
    return out


def extract_text_features(texts: Sequence[str], encoder: TextEncoder, cache_dir: str | os.PathLike | None = None,
                          batch_size: int = 256) -> Job[np.ndarray]:
    """Features of ``texts``: float32 (len(texts), encoder.dim); each distinct text is encoded once."""
    texts = [str(t) for t in texts]
    cache = FeatureCache(cache_dir)
    distinct = list(dict.fromkeys(texts))
    feats: dict[str, np.ndarray] = {}
    missing: list[str] = []
    for t in distinct:
        vec = cache.get("texts", _sha1(encoder.identity, t), encoder.dim)
        if vec is None:
            missing.append(t)
        else:
            feats[t] = vec
    total = len(missing)
    yield Progress("text features", 0, total, f"{len(distinct) - total} texts cached, {total} to compute",
                   {"cached": len(distinct) - total, "computed": total})
    meter = RateMeter()
    for s in range(0, total, batch_size):
        chunk = missing[s:s + batch_size]
        for t, f in zip(chunk, encoder.encode(chunk)):
            f = np.asarray(f, dtype=np.float32)
            feats[t] = f
            cache.put("texts", _sha1(encoder.identity, t), f)
        done = s + len(chunk)
        yield Progress("text features", done, total, f"{meter.rate(done):.0f} texts/s")
    if not texts:
        return np.zeros((0, encoder.dim), np.float32)
    return np.stack([feats[t] for t in texts])

