"""Generalisation check: a trained model on imagery and phrasings it never saw.

The archive is a folder of class sub-folders (``<class>/<tile>.jpg``; ``../shared/data/external``
holds AID / NWPU-RESISC45 tiles filed under their UCM class), the queries a JSON object
``{class: [phrasing, ...]}`` written for it by hand (``tests/data/external_queries.json``).
Relevance = the tile's folder is the query's class. Nothing here trains: the model is scored
as it is.

Hamming ranking has many ties at short code lengths; the archive is listed class by class, so
a stable sort would break ties in favour of whichever class happens to come first. The
database is therefore shuffled with a fixed seed before ranking, as a user's archive would be.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .evaluate import distances
from ..training.features import extract_image_features, extract_text_features
from ..model.bundle import DuchModel
from ..imagery.reading import SUPPORTED_SUFFIXES
from ..jobs import Job, UserError


@dataclass
class LabelledFolder:
    paths: list[Path]
    labels: np.ndarray
    class_names: list[str]


def load_labelled_folder(root: str | os.PathLike) -> LabelledFolder:
    """Tiles of ``root/<class>/*`` (image files only), classes and files in sorted order."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"folder not found: {root}")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    paths, labels = [], []
    for c, name in enumerate(classes):
        for p in sorted((root / name).iterdir()):
            if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES:
                paths.append(p)
                labels.append(c)
    if not paths:
        raise UserError(f"{root} has no class sub-folders with images (expected <class>/<tile>.jpg)")
    return LabelledFolder(paths, np.array(labels, dtype=np.int64), classes)


def load_queries(path: str | os.PathLike, class_names: list[str]) -> dict[str, list[str]]:
    """``{class: [phrasing, ...]}`` (or ``{class: phrasing}``) from JSON; keys starting with ``_`` are comments."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"cannot read queries file {path}: {e.strerror or e}") from e
    except ValueError as e:
        raise UserError(f"queries file {path} is not valid JSON: {e}") from e
    if not isinstance(raw, dict):
        raise UserError(f"queries file {path} must hold an object {{class: [phrasings]}}")
    # A class may have one query (a string) or several.
    queries = {k: [v] if isinstance(v, str) else v for k, v in raw.items() if not k.startswith("_")}
    unknown = sorted(set(queries) - set(class_names))
    if unknown:
        raise UserError(f"queries for classes with no folder in the archive: {', '.join(unknown)}")
    for k, v in queries.items():
        if not isinstance(v, list) or not v or not all(isinstance(q, str) and q.strip() for q in v):
            raise UserError(f"queries for {k!r} must be a non-empty list of non-empty strings")
    return queries


@dataclass
class GeneralisationReport:
    mean_p_at_10: float                 # text -> image, mean over all queries
    top5_hit_rate: float                # share of queries with a relevant tile in the top 5
    image_p_at_10: float                # image -> image (each tile against the others), codes
    raw_image_p_at_10: float            # same with the frozen encoder's features (cosine)
    random_p_at_10: float               # expected P@10 of a random ranking
    per_class: dict[str, dict[str, float]]
    per_query: list[dict[str, Any]]
    n_tiles: int
    n_queries: int
    setup: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def precision_hits(rel: np.ndarray, k: int = 10, hit_k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Per query: P@k and whether a relevant item is in the top ``hit_k`` (rel: ranked bool matrix)."""
    rel = np.asarray(rel, dtype=bool)
    return rel[:, :k].mean(1), rel[:, :hit_k].any(1)


def _ranked(q, db, q_labels, db_labels, exclude_self: bool = False) -> np.ndarray:
    d = distances(q, db).astype(np.float64)
    if exclude_self:
        np.fill_diagonal(d, np.inf)
    order = np.argsort(d, axis=1, kind="stable")
    rel = np.asarray(db_labels)[order] == np.asarray(q_labels)[:, None]
    return rel[:, :-1] if exclude_self else rel


@dataclass
class GeneralisationSet:
    """The archive, its queries and their frozen-encoder features: score many models on one extraction."""

    data: LabelledFolder
    queries: dict[str, list[str]]
    image_feats: np.ndarray    # (n, d_img), original tiles
    query_feats: np.ndarray    # (m, d_txt)
    root: str
    queries_path: str

    @property
    def query_texts(self) -> list[str]:
        return [q for c in self.queries for q in self.queries[c]]

    @property
    def query_labels(self) -> np.ndarray:
        return np.array([self.data.class_names.index(c) for c in self.queries for _ in self.queries[c]], np.int64)


def generalisation_set(image_encoder, text_encoder, root: str | os.PathLike, queries_path: str | os.PathLike,
                       cache_dir=None, num_workers: int = 1) -> Job[GeneralisationSet]:
    """Load the archive and queries and extract (cached) features of both."""
    data = load_labelled_folder(root)
    queries = load_queries(queries_path, data.class_names)
    texts = [q for c in queries for q in queries[c]]
    feats = yield from extract_image_features(data.paths, image_encoder, ("orig",), cache_dir, 0,
                                              num_workers=num_workers)
    tfeats = yield from extract_text_features(texts, text_encoder, cache_dir)
    return GeneralisationSet(data, queries, feats[0], tfeats, str(root), str(queries_path))


def score_generalisation(model: DuchModel, gs: GeneralisationSet, k: int = 10, seed: int = 0) -> GeneralisationReport:
    """Text->image P@k / top-5 hits per query and class, image->image P@k, against a random ranking."""
    data, q_text, q_label = gs.data, gs.query_texts, gs.query_labels
    perm = np.random.default_rng(seed).permutation(len(data.paths))
    img_feats, labels = gs.image_feats[perm], data.labels[perm]
    img_codes = model.image_codes(img_feats)
    p_at_k, hit = precision_hits(_ranked(model.text_codes(gs.query_feats), img_codes, q_label, labels), k)
    i2i, _ = precision_hits(_ranked(img_codes, img_codes, labels, labels, exclude_self=True), k)
    raw, _ = precision_hits(_ranked(img_feats, img_feats, labels, labels, exclude_self=True), k)

    counts = np.bincount(labels, minlength=len(data.class_names))
    per_class = {}
    for c, name in enumerate(data.class_names):
        m = q_label == c
        if m.any():
            per_class[name] = {"p_at_10": float(p_at_k[m].mean()), "top5_hit_rate": float(hit[m].mean()),
                               "image_p_at_10": float(i2i[labels == c].mean()), "n_queries": int(m.sum()),
                               "n_tiles": int(counts[c])}
    # a random ranking's expected P@k = share of relevant tiles in the archive, averaged over queries
    random_p = float(np.mean([counts[c] / len(labels) for c in q_label]))
    return GeneralisationReport(
        mean_p_at_10=float(p_at_k.mean()), top5_hit_rate=float(hit.mean()), image_p_at_10=float(i2i.mean()),
        raw_image_p_at_10=float(raw.mean()), random_p_at_10=random_p, per_class=per_class,
        per_query=[{"query": t, "class": data.class_names[c], "p_at_10": float(p), "top5_hit": bool(h)}
                   for t, c, p, h in zip(q_text, q_label, p_at_k, hit)],
        n_tiles=len(data.paths), n_queries=len(q_text),
        setup={"archive": gs.root, "queries": gs.queries_path, "k": k, "seed": seed,
               "bits": model.bits, "image_encoder": model.image_encoder,
               "text_encoder": model.text_encoder, "model_fingerprint": model.fingerprint})


def report_markdown(r: GeneralisationReport, title: str = "Generalisation: imagery and phrasings never seen",
                    levers_link: str = "generalisation.md") -> str:
    """The report as a markdown section (per-class table + summary line); ``levers_link``: the path of
    docs/generalisation.md as seen from the folder the section is written to."""
    lines = [f"## {title}", "",
             f"{r.n_tiles} tiles of {len(r.per_class)} classes from `{r.setup.get('archive')}`, "
             f"{r.n_queries} free-form queries from `{r.setup.get('queries')}`; model: {r.setup.get('bits')} bits, "
             f"`{r.setup.get('model_fingerprint')}`. Relevance = same class; database shuffled (seed "
             f"{r.setup.get('seed')}) so Hamming ties are broken at random.", "",
             f"**Mean P@10 (text → image) {r.mean_p_at_10:.3f}**, top-5 hit rate {r.top5_hit_rate:.3f}, "
             f"image → image P@10 {r.image_p_at_10:.3f} (frozen encoder features, cosine: "
             f"{r.raw_image_p_at_10:.3f}); random ranking P@10 {r.random_p_at_10:.3f}.", "",
             "Levers tried (text pooling, image views, code length, temperature, …; each trained on the UCM "
             "training split, scored on this set and on a held-back check set of other queries): "
             f"[docs/generalisation.md]({levers_link}).", "",
             "| class | queries | P@10 | top-5 hit rate | image→image P@10 |", "|---|---|---|---|---|"]
    for name, c in r.per_class.items():
        lines.append(f"| {name} | {c['n_queries']} | {c['p_at_10']:.3f} | {c['top5_hit_rate']:.3f} | "
                     f"{c['image_p_at_10']:.3f} |")
    return "\n".join(lines) + "\n"
