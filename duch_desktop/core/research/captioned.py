"""Several captioned collections as one benchmark (UCM, RSICD, ...): features, per-type precision
with free-form queries, and the field's instance-level recall.

The first collection is the benchmark (split by the paper's protocol); the others are extra
training tiles, all of them. Augmented image views and rule-based caption
variants cost one encoder pass each, and the larger a collection the less they add (RSICD's 8,672
tiles carry 24,815 distinct captions), so they are made only for collections of at most
``AUGMENT_UP_TO`` tiles; the others train on their original view with Gaussian feature noise
(``TrainConfig.image_noise``) and their own captions.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import comb
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..jobs import Job
from ..model.bundle import DuchModel
from ..training.augment import DEFAULT_VIEWS, training_texts
from ..training.datasets import load_collection, merge_collections
from ..training.features import extract_image_features, extract_text_features
from .evaluate import BenchmarkFeatures, distances, pick_one_caption, timed, ucm_protocol_split

AUGMENT_UP_TO = 3000
# RSICD scene types that are UCM classes under another name (the other 19 are new to a UCM model).
UCM_TYPES = {"baseballfield": "baseballdiamond", "beach": "beach", "denseresidential": "denseresidential",
             "farmland": "agricultural", "forest": "forest", "mediumresidential": "mediumresidential",
             "parking": "parkinglot", "port": "harbor", "river": "river", "sparseresidential": "sparseresidential",
             "storagetanks": "storagetanks"}


def collection_features(roots: Sequence[Path], image_encoder, text_encoder, cache_dir=None, seed: int = 42,
                        views: Sequence[str] = DEFAULT_VIEWS, num_workers: int = 1, all_tiles: bool = False,
                        augment_up_to: int = AUGMENT_UP_TO) -> Job[BenchmarkFeatures]:
    """Load the collections, split the first by the protocol (the others are all training tiles),
    pick one evaluation caption per tile and extract (cached) features of everything.

    Augmented views are extracted for the training tiles of collections of at most
    ``augment_up_to`` tiles (``all_tiles``: for all their tiles, to train on everything); the
    rows of views a tile was not given stay NaN."""
    parts = [load_collection(Path(r)) for r in roots]
    data = merge_collections(parts)
    n0 = len(parts[0])
    train_idx, query_idx, retrieval_idx = ucm_protocol_split(n0, seed)
    train_idx = np.concatenate([train_idx, np.arange(n0, len(data))])
    # Each collection's text variants come from its own seeded rng: the same texts (and cache
    # entries) whichever collections it is merged with.
    # Rule-based caption variants only where captions are few: a large collection has enough
    # distinct sentences, and each variant costs a text-encoder pass.
    texts, owner, offset = [], [], 0
    for p in parts:
        t, o = training_texts(p.captions, np.random.default_rng([seed, 1]), variants=int(len(p) <= augment_up_to))
        texts += t
        owner.append(o + offset)
        offset += len(p)
    owner = np.concatenate(owner)
    chosen = pick_one_caption(data.captions, np.random.default_rng(seed))
    row = {(int(o), t): j for j, (o, t) in enumerate(zip(owner, texts))}
    eval_text = np.array([row[(i, data.captions[i][c])] for i, c in enumerate(chosen)])

    views, timings = list(views), {}
    starts = np.cumsum([0] + [len(p) for p in parts])
    small = np.concatenate([np.arange(a, b) for a, b, p in zip(starts, starts[1:], parts) if len(p) <= augment_up_to]
                           + [np.zeros(0, np.int64)])
    aug_idx = small if all_tiles else np.intersect1d(train_idx, small)
    todo = [(np.arange(len(data)), views[:1])] + ([(aug_idx, views[1:])] if len(views) > 1 and len(aug_idx) else [])
    img = None
    for idx, vs in todo:
        part = yield from timed(extract_image_features([data.paths[i] for i in idx], image_encoder, vs, cache_dir,
                                                        seed, num_workers=num_workers), timings,
                                 f"image features ({{}} views: {', '.join(vs)})")
        if img is None:
            img = np.full((len(views), len(data), part.shape[2]), np.nan, np.float32)
        img[views.index(vs[0]):views.index(vs[0]) + len(vs), idx] = part
    txt = yield from timed(extract_text_features(texts, text_encoder, cache_dir), timings,
                            "text features ({} distinct texts)")
    return BenchmarkFeatures(data, img, texts, txt, owner, eval_text, train_idx, query_idx, retrieval_idx, timings, n0)


# --------------------------------------------------------------------------- free-form queries per type

@dataclass
class TypeTable:
    per_type: dict[str, float]      # type -> mean P@10 of its queries
    mean_all: float
    mean_new: float                 # over the types that are not UCM classes
    n_tiles: int
    float_mean_all: float           # the same ranking by the heads' real-valued outputs (cosine)
    float_mean_new: float


def type_precision(model: DuchModel, tile_feats: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                   queries: dict[str, list[str]], query_feats: np.ndarray, k: int = 10, seed: int = 0) -> TypeTable:
    """Text->image P@k per type on the tiles given (database shuffled so Hamming ties fall at random)."""
    perm = np.random.default_rng(seed).permutation(len(labels))
    feats, labels = tile_feats[perm], np.asarray(labels)[perm]
    q_label = np.array([list(class_names).index(c) for c in queries for _ in queries[c]])
    out = {}
    for packed in (True, False):
        d = distances(model.text_codes(query_feats, packed=packed), model.image_codes(feats, packed=packed))
        top = np.argsort(d, axis=1, kind="stable")[:, :k]
        p = (labels[top] == q_label[:, None]).mean(1)
        out[packed] = {c: float(p[q_label == i].mean()) for i, c in enumerate(class_names) if c in queries}
    per = out[True]
    new = [c for c in per if c not in UCM_TYPES]
    mean = lambda d, keys: float(np.mean([d[c] for c in keys])) if keys else float("nan")  # noqa: E731
    return TypeTable(per, mean(per, list(per)), mean(per, new), len(labels), mean(out[False], list(per)),
                     mean(out[False], new))


# --------------------------------------------------------------------------- instance-level recall

def hit_chance(closer: np.ndarray, tied_other: np.ndarray, tied_own: np.ndarray, k: int) -> np.ndarray:
    """Chance that an own item is in the top ``k`` when ties are broken at random: ``closer`` other
    items rank strictly ahead, then ``tied_own`` own and ``tied_other`` other items tie (Hamming
    distances tie a lot; counting ties for or against would flatter or wrong the codes)."""
    out = np.zeros(len(closer))
    for j, (c, o, w) in enumerate(zip(closer, tied_other, tied_own)):
        m = k - int(c)   # places left for the tied group
        if m <= 0:
            continue
        # P(no own item among the first m of a random order of o + w items)
        out[j] = 1.0 - (comb(int(o), m) / comb(int(o + w), m) if m <= o else 0.0)
    return out


def recall_at(model: DuchModel | None, image_feats: np.ndarray, caption_feats: np.ndarray, caption_owner: np.ndarray,
              packed: bool = True, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Image->text and text->image recall@k (%), a caption's own image being the relevant item
    (an image's five captions each count); ``mR`` = mean of the six. ``model`` None compares the
    features themselves (cosine)."""
    if model is None:
        qi, qt = image_feats, caption_feats
    else:
        qi = model.image_codes(image_feats, packed=packed)
        qt = model.text_codes(caption_feats, packed=packed)
    d = distances(qi, qt).astype(np.float64)        # images x captions
    owner = np.asarray(caption_owner)
    own = owner[None, :] == np.arange(len(qi))[:, None]
    best = np.where(own, d, np.inf).min(1)[:, None]
    i2t = ((d < best) & ~own).sum(1), ((d == best) & ~own).sum(1), ((d == best) & own).sum(1)
    mine = d[owner, np.arange(len(owner))][:, None]
    dt = d.T
    t2i = (dt < mine).sum(1), (dt == mine).sum(1) - 1, np.ones(len(owner), np.int64)
    out: dict[str, float] = {}
    for k in ks:
        out[f"i2t_R@{k}"] = float(100 * hit_chance(*i2t, k).mean())
        out[f"t2i_R@{k}"] = float(100 * hit_chance(*t2i, k).mean())
    out["mR"] = float(np.mean([out[f"{m}_R@{k}"] for m in ("i2t", "t2i") for k in ks]))
    return out


def val_captions(f: BenchmarkFeatures, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``f.texts`` holding the human captions of tiles ``idx`` (no rule-based variants), and
    each row's owner as a position in ``idx``."""
    where = {int(i): k for k, i in enumerate(idx)}
    rows = [j for j, (o, t) in enumerate(zip(f.text_owner, f.texts))
            if int(o) in where and t in f.data.captions[int(o)]]
    return np.asarray(rows, np.int64), np.array([where[int(f.text_owner[j])] for j in rows], np.int64)


def scores_on(model: DuchModel, f: BenchmarkFeatures, idx: np.ndarray, queries: dict[str, list[str]] | None = None,
              query_feats: np.ndarray | None = None) -> dict[str, Any]:
    """Instance recall (Hamming and float) on tiles ``idx`` with all their captions, and per-type P@10."""
    rows, owner = val_captions(f, idx)
    out: dict[str, Any] = {"n_tiles": len(idx), "n_captions": len(rows)}
    for name, packed in (("recall_hamming", True), ("recall_float", False)):
        out[name] = recall_at(model, f.views[0, idx], f.text_feats[rows], owner, packed=packed)
    if queries:
        t = type_precision(model, f.views[0, idx], f.data.labels[idx], f.data.class_names, queries, query_feats)
        out["types"] = {"per_type": t.per_type, "mean_all": t.mean_all, "mean_new": t.mean_new,
                        "float_mean_all": t.float_mean_all, "float_mean_new": t.float_mean_new,
                        "ucm_types": sorted(UCM_TYPES)}
    return out


def heldout_scores(f: BenchmarkFeatures, cfg, ids: tuple[str, str], text_encoder, type_queries: Path | None = None,
                   cache_dir=None, split: str = "val") -> Job[dict[str, Any]]:
    """Train on every tile but the benchmark's ``split`` tiles (the extra collections included), then
    score the model on those tiles (:func:`scores_on`)."""
    from ..training.trainer import train
    from .external import load_queries

    held = np.flatnonzero(f.data.split_names()[:f.n_benchmark] == split)
    queries = load_queries(type_queries, f.data.class_names) if type_queries else None
    qf = None
    if queries:
        qf = yield from extract_text_features([q for c in queries for q in queries[c]], text_encoder, cache_dir)
    res = yield from train(f.training_data(np.setdiff1d(np.arange(len(f.data)), held)), cfg, *ids)
    out = scores_on(res.model, f, held, queries, qf)
    out.update(split=split, bits=cfg.bits, best_epoch=res.best_epoch, queries=str(type_queries or ""))
    return out
