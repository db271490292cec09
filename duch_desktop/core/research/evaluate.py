"""Retrieval metrics and the benchmark protocol's pieces (see shared/docs/duch-method.md); the
benchmark runs and their report files are in :mod:`benchmark`.

Metrics take codes (packed uint8 -> Hamming distance; float -> cosine distance, for the
heads' real-valued outputs or raw features), rank the database with a *stable* sort (ties
keep database order) and score relevance as "same class label".
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..archive.hamming import hamming
from ..model.bundle import DuchModel, pack_codes
from ..jobs import Job
from ..training.datasets import CaptionedImages
from ..training.trainer import TrainingData


# --------------------------------------------------------------------------- distances + metrics

def distances(q: np.ndarray, db: np.ndarray) -> np.ndarray:
    """Hamming distance for packed uint8 codes, cosine distance (1 - cos) for real-valued vectors."""
    q, db = np.asarray(q), np.asarray(db)
    if q.dtype == np.uint8 and db.dtype == np.uint8:
        return hamming(q, db)
    qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    dn = db / np.maximum(np.linalg.norm(db, axis=1, keepdims=True), 1e-12)
    return 1.0 - qn.astype(np.float64) @ dn.astype(np.float64).T


def ranked_relevance(q_codes, db_codes, q_labels, db_labels) -> np.ndarray:
    """bool (nq, ndb): is the item at rank r (0-based) of query i's ranking relevant."""
    order = np.argsort(distances(q_codes, db_codes), axis=1, kind="stable")
    return np.asarray(db_labels)[order] == np.asarray(q_labels)[:, None]


def average_precisions(rel: np.ndarray, k: int = 20, variant: str = "standard") -> np.ndarray:
    """Per-query AP@k from a ranked relevance matrix (nq, ndb).

    ``standard``: (1 / #relevant in top k) * sum over relevant ranks r <= k of P@r (0 if none).
    ``paper`` (the DUCH code's calc_map_k): K' = min(k, R) with R = #relevant in the whole
    database; p_j = 1-based rank of the j-th relevant item in the full ranking;
    AP = mean over j <= K' of j / p_j (0 if R = 0).
    """
    rel = np.asarray(rel, dtype=bool)
    nq, n = rel.shape
    ranks = np.arange(1, n + 1)
    cum = np.cumsum(rel, axis=1)
    if variant == "standard":
        top, c = rel[:, :k], cum[:, :k]
        hits = top.sum(1)
        return np.where(hits > 0, (c / ranks[:k] * top).sum(1) / np.maximum(hits, 1), 0.0)
    if variant == "paper":
        kk = np.minimum(k, rel.sum(1))
        take = rel & (cum <= kk[:, None])
        return np.where(kk > 0, (cum / ranks * take).sum(1) / np.maximum(kk, 1), 0.0)
    raise ValueError(f"unknown mAP variant {variant!r}: use 'standard' or 'paper'")


def map_at_k(q_codes, db_codes, q_labels, db_labels, k: int = 20, variant: str = "standard") -> float:
    """mAP@k of queries against a database (codes: packed uint8 or real-valued), mean over all queries."""
    return float(average_precisions(ranked_relevance(q_codes, db_codes, q_labels, db_labels), k, variant).mean())


def precision_at_k(q_codes, db_codes, q_labels, db_labels, max_k: int = 100) -> np.ndarray:
    """Mean P@K for K = 1..max_k (index K-1)."""
    return precision_curve(ranked_relevance(q_codes, db_codes, q_labels, db_labels), max_k)


def precision_curve(rel: np.ndarray, max_k: int = 100) -> np.ndarray:
    """Mean P@K for K = 1..min(max_k, database size) from a ranked relevance matrix."""
    rel = np.asarray(rel)[:, :max_k]
    return (np.cumsum(rel, axis=1) / np.arange(1, rel.shape[1] + 1)).mean(0)


# --------------------------------------------------------------------------- protocol

def ucm_protocol_split(n_images: int, seed: int = 42, train_fraction: float = 0.5,
                       query_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded split of image indices: ``train_fraction`` for training, the rest ``query_fraction``
    queries / the others retrieval set (UCM: 1050 / 210 / 840). Each part sorted ascending."""
    perm = np.random.default_rng(seed).permutation(n_images)
    n_train = int(n_images * train_fraction)
    rest = perm[n_train:]
    n_query = int(round(len(rest) * query_fraction))
    return np.sort(perm[:n_train]), np.sort(rest[:n_query]), np.sort(rest[n_query:])


def pick_one_caption(captions: Sequence[Sequence[str]], rng: np.random.Generator) -> np.ndarray:
    """Index of one caption per image, drawn uniformly with ``rng``."""
    return np.array([int(rng.integers(len(c))) for c in captions], dtype=np.int64)


@dataclass
class BenchmarkFeatures:
    """Everything the UCM protocol needs, features included (labels for evaluation only)."""

    data: CaptionedImages
    views: np.ndarray          # (V, n, d_img), view 0 = original tile
    texts: list[str]           # captions + rule-based variants, see augment.training_texts
    text_feats: np.ndarray     # (m, d_txt)
    text_owner: np.ndarray     # (m,) image index
    eval_text: np.ndarray      # (n,) row of texts holding each image's one evaluation caption
    train_idx: np.ndarray
    query_idx: np.ndarray
    retrieval_idx: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    n_benchmark: int | None = None  # tiles of the benchmark collection (the first); None: all

    def training_data(self, idx: np.ndarray | None = None) -> TrainingData:
        full = TrainingData(self.views, self.text_feats, self.text_owner)
        return full.subset(self.train_idx if idx is None else idx)

    def captions_of(self, idx: np.ndarray) -> list[str]:
        """The distinct human captions of images ``idx`` (no rule-based variants), in order."""
        return list(dict.fromkeys(c for i in idx for c in self.data.captions[i]))


def timed(job: Job, timings: dict[str, float], label: str) -> Job:
    """Run a feature job, recording its time under ``label`` + how many items the cache held."""
    t, counts = time.perf_counter(), {}
    while True:
        try:
            ev = next(job)
        except StopIteration as stop:
            n = counts.get("cached", 0) + counts.get("computed", 0)
            timings[f"{label.format(n)}: {counts.get('computed', '?')} computed, {counts.get('cached', '?')} cached"] = \
                time.perf_counter() - t
            return stop.value
        counts = counts or ev.info
        yield ev


def score_model(model: DuchModel, f: BenchmarkFeatures, k: int = 20, curves: bool = False) -> dict[str, Any]:
    """mAP@k of ``model`` on the query/retrieval split: I->T, T->I and I->I (binary codes, both
    variants) and I->T, T->I with the heads' real-valued outputs."""
    q, r = f.query_idx, f.retrieval_idx
    lq, lr = f.data.labels[q], f.data.labels[r]
    hq_i, hr_i = model.image_codes(f.views[0, q], packed=False), model.image_codes(f.views[0, r], packed=False)
    hq_t = model.text_codes(f.text_feats[f.eval_text[q]], packed=False)
    hr_t = model.text_codes(f.text_feats[f.eval_text[r]], packed=False)
    bq_i, br_i, bq_t, br_t = map(pack_codes, (hq_i, hr_i, hq_t, hr_t))
    pairs = {"i2t": (bq_i, br_t), "t2i": (bq_t, br_i), "i2i": (bq_i, br_i)}
    out: dict[str, Any] = {}
    for name, (a, b) in pairs.items():
        rel = ranked_relevance(a, b, lq, lr)
        for variant in ("standard", "paper"):
            out[f"{name}_{variant}"] = float(average_precisions(rel, k, variant).mean())
        if curves and name != "i2i":
            out[f"{name}_p_at_k"] = precision_curve(rel).tolist()
    for name, (a, b) in {"i2t": (hq_i, hr_t), "t2i": (hq_t, hr_i)}.items():
        rel = ranked_relevance(a, b, lq, lr)
        for variant in ("standard", "paper"):
            out[f"{name}_real_{variant}"] = float(average_precisions(rel, k, variant).mean())
    return out


def random_code_scores(f: BenchmarkFeatures, bits: int, seed: int = 0, k: int = 20) -> dict[str, float]:
    """mAP@k of random codes (a floor every trained model must clear)."""
    rng = np.random.default_rng(seed)
    nq, nr = len(f.query_idx), len(f.retrieval_idx)
    code = lambda n: pack_codes(rng.random((n, bits)) - 0.5)  # noqa: E731
    lq, lr = f.data.labels[f.query_idx], f.data.labels[f.retrieval_idx]
    out = {}
    for name in ("i2t", "t2i"):
        rel = ranked_relevance(code(nq), code(nr), lq, lr)
        for variant in ("standard", "paper"):
            out[f"{name}_{variant}"] = float(average_precisions(rel, k, variant).mean())
    return out


