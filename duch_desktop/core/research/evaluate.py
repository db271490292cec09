"""Retrieval metrics and the UCM benchmark protocol (see shared/docs/duch-method.md).

Metrics take codes (packed uint8 -> Hamming distance; float -> cosine distance, for the
heads' real-valued outputs or raw features), rank the database with a *stable* sort (ties
keep database order) and score relevance as "same class label".
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..training.augment import DEFAULT_VIEWS, training_texts
from ..training.datasets import CaptionedImages, load_ucm
from ..training.features import extract_image_features, extract_text_features
from ..archive.hamming import hamming
from ..model.bundle import DuchModel, pack_codes
from ..jobs import Job, Progress
from ..training.trainer import TrainConfig, TrainingData, train
from .report import kept_section  # the generalisation block of results.md is written by another command

PAPER_UCM = {"i2t": {16: 0.760, 32: 0.794, 64: 0.844, 128: 0.870},
             "t2i": {16: 0.799, 32: 0.851, 64: 0.916, 128: 0.927}}
ABLATIONS = (("no inter-modal NT-Xent (w_inter=0)", {"w_inter": 0.0}),
             ("no intra-image NT-Xent (w_intra_image=0)", {"w_intra_image": 0.0}),
             ("no intra-text NT-Xent (w_intra_text=0)", {"w_intra_text": 0.0}),
             ("no adversarial (alpha=0)", {"alpha": 0.0}),
             ("no quantization (beta=0)", {"beta": 0.0}),
             ("no bit balance (gamma=0)", {"gamma": 0.0}))


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

    def training_data(self, idx: np.ndarray | None = None) -> TrainingData:
        full = TrainingData(self.views, self.text_feats, self.text_owner)
        return full.subset(self.train_idx if idx is None else idx)

    def captions_of(self, idx: np.ndarray) -> list[str]:
        """The distinct human captions of images ``idx`` (no rule-based variants), in order."""
        return list(dict.fromkeys(c for i in idx for c in self.data.captions[i]))


def ucm_features(root: Path, image_encoder, text_encoder, cache_dir=None, seed: int = 42,
                 views: Sequence[str] = DEFAULT_VIEWS, num_workers: int = 1,
                 all_views: bool = False) -> Job[BenchmarkFeatures]:
    """Load UCM, split it, pick the evaluation captions and extract (cached) features of everything.

    Augmented views are extracted for the training split only (scoring never uses them; their
    rows stay NaN elsewhere), unless ``all_views`` (training on all tiles)."""
    data = load_ucm(root)
    train_idx, query_idx, retrieval_idx = ucm_protocol_split(len(data), seed)
    chosen = pick_one_caption(data.captions, np.random.default_rng(seed))
    texts, owner = training_texts(data.captions, np.random.default_rng([seed, 1]))
    row = {(int(o), t): j for j, (o, t) in enumerate(zip(owner, texts))}
    eval_text = np.array([row[(i, data.captions[i][c])] for i, c in enumerate(chosen)])
    timings: dict[str, float] = {}
    views = list(views)
    aug_idx = np.arange(len(data)) if all_views else train_idx
    todo = [(list(range(len(data))), views[:1])] + ([(aug_idx.tolist(), views[1:])] if len(views) > 1 else [])
    img = None
    for idx, vs in todo:
        part = yield from _timed(extract_image_features([data.paths[i] for i in idx], image_encoder, vs, cache_dir,
                                                        seed, num_workers=num_workers), timings,
                                 f"image features ({{}} views: {', '.join(vs)})")
        if img is None:
            img = np.full((len(views), len(data), part.shape[2]), np.nan, np.float32)
        img[views.index(vs[0]):views.index(vs[0]) + len(vs), idx] = part
    txt = yield from _timed(extract_text_features(texts, text_encoder, cache_dir), timings,
                            "text features ({} distinct texts)")
    return BenchmarkFeatures(data, img, texts, txt, owner, eval_text, train_idx, query_idx, retrieval_idx, timings)


def _timed(job: Job, timings: dict[str, float], label: str) -> Job:
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


# --------------------------------------------------------------------------- the full benchmark

@dataclass
class EvalReport:
    results: list[dict[str, Any]]        # one per bit length
    ablation: list[dict[str, Any]]
    random: dict[int, dict[str, float]]
    raw_image_features: dict[str, float]  # I->I with the frozen encoder's features
    timings: dict[str, float]
    setup: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)


def _tagged(job: Job, stage: str) -> Job:
    """Re-yield ``job``'s events under another stage name; return its result."""
    try:
        while True:
            try:
                ev = next(job)
            except StopIteration as stop:
                return stop.value
            yield replace(ev, stage=stage)
    finally:
        job.close()


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch
    dev = f"GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} with {torch.get_num_threads()} "
            f"threads, {dev}, {platform.system()} {platform.release()}, Python {platform.python_version()}")


def run_ucm_evaluation(root: Path, image_encoder, text_encoder, bits: Sequence[int] = (16, 32, 64, 128),
                       epochs: int = 100, ablation: bool = True, ablation_bits: int = 64, cache_dir=None,
                       seed: int = 42, out_dir: Path | None = None, command: str = "",
                       config: TrainConfig | None = None, num_workers: int = 1) -> Job[EvalReport]:
    """The UCM benchmark: features, one training per bit length (+ ablations), all metrics.

    Training sees the train split only (it holds out its own validation tiles and selects the
    epoch label-free); labels and the query/retrieval split are used only for scoring.
    Writes results.md / results.json / precision_at_k.png into ``out_dir`` when given.
    """
    base = config or TrainConfig()
    f = yield from ucm_features(Path(root), image_encoder, text_encoder, cache_dir, seed, num_workers=num_workers)
    timings = dict(f.timings)
    data = f.training_data()
    ids = (image_encoder.identity, text_encoder.identity)

    def fit(cfg: TrainConfig, label: str):
        t = time.perf_counter()
        res = yield from _tagged(train(data, cfg, *ids), label)
        timings[label] = time.perf_counter() - t
        t = time.perf_counter()
        scores = score_model(res.model, f, curves=True)
        timings["evaluate " + label.removeprefix("train ")] = time.perf_counter() - t
        scores.update(best_epoch=res.best_epoch, best_val=res.best_val,
                      val_curve=[round(h["val"], 4) for h in res.history])
        return res, scores

    results, full_by_bits = [], {}
    for b in bits:
        cfg = replace(base, bits=b, epochs=epochs, seed=seed)
        _, s = yield from fit(cfg, f"train {b} bits")
        s["bits"] = b
        results.append(s)
        full_by_bits[b] = s
    ablation_rows = []
    if ablation:
        for label, change in ABLATIONS:
            cfg = replace(base, bits=ablation_bits, epochs=epochs, seed=seed, **change)
            _, s = yield from fit(cfg, f"train {ablation_bits} bits, {label}")
            ablation_rows.append({"run": label, **{k: v for k, v in s.items() if not k.endswith("p_at_k")}})
    rnd = {b: random_code_scores(f, b, seed) for b in bits}
    raw = {}
    lq, lr = f.data.labels[f.query_idx], f.data.labels[f.retrieval_idx]
    rel = ranked_relevance(f.views[0, f.query_idx], f.views[0, f.retrieval_idx], lq, lr)
    for variant in ("standard", "paper"):
        raw[f"i2i_{variant}"] = float(average_precisions(rel, 20, variant).mean())
    setup = {
        "data": str(Path(root).resolve()), "n_train": len(f.train_idx), "n_query": len(f.query_idx),
        "n_retrieval": len(f.retrieval_idx), "image_encoder": ids[0], "text_encoder": ids[1],
        "image_views": list(DEFAULT_VIEWS), "n_training_texts": int(np.isin(f.text_owner, f.train_idx).sum()),
        "seed": seed, "epochs": epochs, "ablation_bits": ablation_bits, "train_config": asdict(replace(base, epochs=epochs, seed=seed)),
        "machine": machine_description(), "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    report = EvalReport(results, ablation_rows, rnd, raw, timings, setup)
    if out_dir is not None:
        yield Progress("write report", 0, 1)
        write_report(report, Path(out_dir))
    return report


# --------------------------------------------------------------------------- report files

def _f(x: float) -> str:
    return f"{x:.3f}"


def results_table(report: EvalReport) -> str:
    """The main table (markdown): ours standard / ours paper-variant / the paper's reported values."""
    lines = ["| bits | I→T standard | T→I standard | I→T paper-variant | T→I paper-variant | paper I→T | paper T→I |",
             "|---|---|---|---|---|---|---|"]
    for r in report.results:
        b = r["bits"]
        ref = [_f(PAPER_UCM[d][b]) if b in PAPER_UCM[d] else "–" for d in ("i2t", "t2i")]
        lines.append(f"| {b} | {_f(r['i2t_standard'])} | {_f(r['t2i_standard'])} | {_f(r['i2t_paper'])} | "
                     f"{_f(r['t2i_paper'])} | {ref[0]} | {ref[1]} |")
    return "\n".join(lines)


def write_report(report: EvalReport, out_dir: Path) -> None:
    """Write ``results.md``, ``results.json`` and ``precision_at_k.png`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    s = report.setup
    md = [
        "# DUCH on UCM-captions: measured results", "",
        f"Measured {s['date']} with `{s['command'] or 'run_ucm_evaluation(...)'}`.", "",
        f"- Machine: {s['machine']}.",
        f"- Encoders (frozen): image `{s['image_encoder']}`, text `{s['text_encoder']}`.",
        f"- Protocol: seed {s['seed']}, {s['n_train']} training / {s['n_query']} query / {s['n_retrieval']} "
        "retrieval tiles; one caption per query/retrieval tile drawn with the seed; relevance = same class.",
        f"- Training: {s['epochs']} epochs, batch {s['train_config']['batch_size']}, lr {s['train_config']['lr']}, "
        f"τ = {s['train_config']['temperature']}; image views {', '.join(s['image_views'])} (the text "
        f"term sees an augmented view with probability {s['train_config'].get('aug_inter', 0.0)}); "
        f"{s['n_training_texts']} training texts (5 captions + rule-based variants per tile). The epoch is "
        f"chosen by a label-free score (held-out image–text NT-Xent) on {int(s['train_config']['val_fraction'] * 100)} % of the *training* "
        "tiles held out; query/retrieval tiles are never seen before scoring.",
        "", "## mAP@20, cross-modal (binary codes)", "",
        "Standard = AP over the top 20; paper-variant = the DUCH code's `calc_map_k` (counts relevant items "
        "beyond rank 20). Compare with the paper only in its variant.", "",
        results_table(report), "",
        "## More measurements per bit length (mAP@20, standard / paper-variant)", "",
        "| bits | real-valued I→T | real-valued T→I | image→image (codes) | random codes I→T | random codes T→I | best epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report.results:
        b, rnd = r["bits"], report.random[r["bits"]]
        sp = lambda d, k: f"{_f(d[k + '_standard'])} / {_f(d[k + '_paper'])}"  # noqa: E731
        md.append(f"| {b} | {sp(r, 'i2t_real')} | {sp(r, 't2i_real')} | {sp(r, 'i2i')} | {sp(rnd, 'i2t')} | "
                  f"{sp(rnd, 't2i')} | {r['best_epoch']} |")
    raw = report.raw_image_features
    md += ["", f"Image→image with the frozen encoder's features (cosine): {_f(raw['i2i_standard'])} / "
           f"{_f(raw['i2i_paper'])}.", ""]
    if report.ablation:
        b = s["ablation_bits"]
        full = next((r for r in report.results if r["bits"] == b), None)
        md += [f"## Ablation at {b} bits: one loss term off per run (mAP@20, paper-variant; standard in brackets)", "",
               "| run | I→T | T→I | image→image | best epoch |", "|---|---|---|---|---|"]
        rows = ([{"run": "full DUCH", **full}] if full else []) + report.ablation
        for r in rows:
            md.append(f"| {r['run']} | {_f(r['i2t_paper'])} ({_f(r['i2t_standard'])}) | {_f(r['t2i_paper'])} "
                      f"({_f(r['t2i_standard'])}) | {_f(r['i2i_paper'])} ({_f(r['i2i_standard'])}) | {r['best_epoch']} |")
        md.append("")
    md += ["## Timings (wall clock, seconds)", "", "| phase | s |", "|---|---|"]
    md += [f"| {k} | {v:.1f} |" for k, v in report.timings.items()]
    md += ["", "Feature extraction is cached on disk; the rows above say how much of it this run computed.", "",
           "![P@K](precision_at_k.png)", ""]
    (out_dir / "results.md").write_text("\n".join(md) + kept_section(out_dir / "results.md"), encoding="utf-8")
    (out_dir / "results.json").write_text(report.to_json(), encoding="utf-8")
    plot_precision_at_k(report, out_dir / "precision_at_k.png")


def plot_precision_at_k(report: EvalReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, (key, title) in zip(axes, (("i2t", "image → text"), ("t2i", "text → image"))):
        for r in report.results:
            p = r.get(f"{key}_p_at_k")
            if p:
                ax.plot(np.arange(1, len(p) + 1), p, label=f"{r['bits']} bits")
        ax.set_title(f"UCM, {title}")
        ax.set_xlabel("K")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("precision@K")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
