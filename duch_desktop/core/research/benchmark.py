"""The benchmark on a captioned collection (UCM, RSICD): one training per code length (+ ablations),
all metrics, and its report files (see shared/docs/duch-method.md for the protocol)."""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..jobs import Job, Progress
from ..training.augment import DEFAULT_VIEWS
from ..training.trainer import TrainConfig, train
from .captioned import collection_features, heldout_scores
from .evaluate import average_precisions, random_code_scores, ranked_relevance, score_model
from .report import kept_section, with_section

PAPER_UCM = {"i2t": {16: 0.760, 32: 0.794, 64: 0.844, 128: 0.870},
             "t2i": {16: 0.799, 32: 0.851, 64: 0.916, 128: 0.927}}
PAPER_RSICD = {"i2t": {16: 0.684, 32: 0.791, 64: 0.836, 128: 0.829},
               "t2i": {16: 0.697, 32: 0.780, 64: 0.824, 128: 0.826}}
PAPER = {"ucm": PAPER_UCM, "rsicd": PAPER_RSICD}
ABLATIONS = (("no inter-modal NT-Xent (w_inter=0)", {"w_inter": 0.0}),
             ("no intra-image NT-Xent (w_intra_image=0)", {"w_intra_image": 0.0}),
             ("no intra-text NT-Xent (w_intra_text=0)", {"w_intra_text": 0.0}),
             ("no adversarial (alpha=0)", {"alpha": 0.0}),
             ("no quantization (beta=0)", {"beta": 0.0}),
             ("no bit balance (gamma=0)", {"gamma": 0.0}))


# --------------------------------------------------------------------------- the full benchmark

@dataclass
class EvalReport:
    results: list[dict[str, Any]]        # one per bit length
    ablation: list[dict[str, Any]]
    random: dict[int, dict[str, float]]
    raw_image_features: dict[str, float]  # I->I with the frozen encoder's features
    timings: dict[str, float]
    setup: dict[str, Any]
    heldout: dict[str, Any] = field(default_factory=dict)  # instance recall + per-type P@10 on a 'val' split

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
                       config: TrainConfig | None = None, num_workers: int = 1, extra: Sequence[Path] = (),
                       type_queries: Path | None = None, views: Sequence[str] = DEFAULT_VIEWS) -> Job[EvalReport]:
    """The benchmark on a captioned collection (UCM, RSICD): features, one training per bit length
    (+ ablations), all metrics; ``extra`` collections add training tiles (all of theirs).

    Training sees the train split only (it holds out its own validation tiles and selects the
    epoch label-free); labels and the query/retrieval split are used only for scoring. A
    collection with a ``val`` split also gets a model trained without those tiles, scored on them
    (instance recall, per-type P@10 with ``type_queries``). Writes the collection's section of
    results.md (UCM: the file) / results.json / precision_at_k.png into ``out_dir`` when given.
    """
    base = config or TrainConfig()
    f = yield from collection_features([Path(root), *map(Path, extra)], image_encoder, text_encoder, cache_dir, seed,
                                       views, num_workers=num_workers)
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

    heldout = {}  # first: on a busy machine its figures are the ones most wanted
    if (f.data.split_names()[:f.n_benchmark] == "val").any():
        t = time.perf_counter()
        heldout = yield from _tagged(heldout_scores(f, replace(base, bits=ablation_bits, epochs=epochs, seed=seed), ids,
                                                    text_encoder, type_queries, cache_dir), "held-out split")
        timings[f"train {ablation_bits} bits without the val tiles + score them"] = time.perf_counter() - t
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
    name = Path(root).resolve().name
    setup = {
        "name": name, "extra": [str(Path(e).resolve()) for e in extra],
        "data": str(Path(root).resolve()), "n_train": int((f.train_idx < (f.n_benchmark or len(f.data))).sum()),
        "n_extra": len(f.data) - (f.n_benchmark or len(f.data)), "n_query": len(f.query_idx),
        "n_retrieval": len(f.retrieval_idx), "image_encoder": ids[0], "text_encoder": ids[1],
        "image_views": list(views), "n_training_texts": int(np.isin(f.text_owner, f.train_idx).sum()),
        "seed": seed, "epochs": epochs, "ablation_bits": ablation_bits, "train_config": asdict(replace(base, epochs=epochs, seed=seed)),
        "machine": machine_description(), "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    report = EvalReport(results, ablation_rows, rnd, raw, timings, setup, heldout)
    if out_dir is not None:
        yield Progress("write report", 0, 1)
        write_report(report, Path(out_dir))
    return report


# --------------------------------------------------------------------------- report files

def _f(x: float) -> str:
    return f"{x:.3f}"


def _loss_terms(c: dict) -> str:
    """The loss terms a training config weighs (and its feature noise), e.g. for the paper's recipe
    'image–text, image–image, text–text NT-Xent, adversarial 0.01, quantization 0.001, balance 0.01'."""
    terms = [name for key, name in (("w_inter", "image–text"), ("w_intra_image", "image–image"),
                                    ("w_intra_text", "text–text")) if c.get(key, 1.0)]
    out = ", ".join(terms) + " NT-Xent"
    out += "".join(f", {name} {c[key]:g}" for key, name in (("alpha", "adversarial"), ("beta", "quantization"),
                                                              ("gamma", "balance")) if c.get(key))
    noise = [f"{side} {c[key]:g}" for key, side in (("image_noise", "image"), ("text_noise", "text")) if c.get(key)]
    return out + (f"; feature noise (× per-dimension std): {', '.join(noise)}" if noise else "")


def results_table(report: EvalReport) -> str:
    """The main table (markdown): ours standard / ours paper-variant / the paper's reported values."""
    paper = PAPER.get(report.setup.get("name", "ucm"), {"i2t": {}, "t2i": {}})
    lines = ["| bits | I→T standard | T→I standard | I→T paper-variant | T→I paper-variant | paper I→T | paper T→I |",
             "|---|---|---|---|---|---|---|"]
    for r in report.results:
        b = r["bits"]
        ref = [_f(paper[d][b]) if b in paper[d] else "–" for d in ("i2t", "t2i")]
        lines.append(f"| {b} | {_f(r['i2t_standard'])} | {_f(r['t2i_standard'])} | {_f(r['i2t_paper'])} | "
                     f"{_f(r['t2i_paper'])} | {ref[0]} | {ref[1]} |")
    return "\n".join(lines)


TITLES = {"ucm": "UCM-captions", "rsicd": "RSICD (AID tiles)"}
CAVEATS = {"rsicd": "Not the paper's setting: these are AID's tiles at 150×150 px (RSICD's are 224×224), 8,672 of "
                    "RSICD's 10,921 images (79 %: its numeric-named images and its test split are not here), and "
                    "another random draw of the split."}


def write_report(report: EvalReport, out_dir: Path) -> None:
    """Write the collection's results into ``out_dir``: UCM owns ``results.md`` (other sections
    kept), ``results.json`` and ``precision_at_k.png``; another collection NAME writes its section of
    ``results.md`` and ``results_NAME.json`` / ``precision_at_k_NAME.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = report.setup.get("name", "ucm")
    suffix = "" if name == "ucm" else f"_{name}"
    md = _report_lines(report, f"precision_at_k{suffix}.png")
    path = out_dir / "results.md"
    if name == "ucm":
        path.write_text("\n".join(md) + kept_section(path), encoding="utf-8")
    else:
        md = ["#" + line if line.startswith("#") else line for line in md]  # a section, one level down
        old = path.read_text(encoding="utf-8") if path.is_file() else ""
        path.write_text(with_section(old, "\n".join(md) + "\n", name), encoding="utf-8")
    (out_dir / f"results{suffix}.json").write_text(report.to_json(), encoding="utf-8")
    plot_precision_at_k(report, out_dir / f"precision_at_k{suffix}.png")


def _report_lines(report: EvalReport, png: str) -> list[str]:
    s = report.setup
    name = s.get("name", "ucm")
    extra = (f" (+ all {s['n_extra']} tiles of {', '.join(Path(e).name for e in s['extra'])})" if s.get("extra") else "")
    md = [
        f"# DUCH on {TITLES.get(name, name)}: measured results", "",
        f"Measured {s['date']} with `{s['command'] or 'run_ucm_evaluation(...)'}`.", "",
        f"- Machine: {s['machine']}.",
        f"- Encoders (frozen): image `{s['image_encoder']}`, text `{s['text_encoder']}`.",
        f"- Protocol: seed {s['seed']}, {s['n_train']} training{extra} / {s['n_query']} query / {s['n_retrieval']} "
        "retrieval tiles; one caption per query/retrieval tile drawn with the seed; relevance = same class.",
        *([f"- {CAVEATS[name]}"] if name in CAVEATS else []),
        f"- Training: {s['epochs']} epochs, batch {s['train_config']['batch_size']}, lr {s['train_config']['lr']}, "
        f"τ = {s['train_config']['temperature']}; {_loss_terms(s['train_config'])}; image views "
        f"{', '.join(s['image_views'])} (the text term sees an augmented view with probability "
        f"{s['train_config'].get('aug_inter', 0.0)}); {s['n_training_texts']} training texts (the captions, plus "
        "rule-based variants for collections of up to 3000 tiles). The epoch is chosen by a label-free score ("
        + ("held-out own-pair Hamming MRR" if s['train_config'].get('select') == "pair_mrr" else
           "held-out image–text NT-Xent")
        + f") on {int(s['train_config']['val_fraction'] * 100)} % of the *training* "
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
    md += _heldout_lines(report.heldout)
    md += ["## Timings (wall clock, seconds)", "", "| phase | s |", "|---|---|"]
    md += [f"| {k} | {v:.1f} |" for k, v in report.timings.items()]
    md += ["", "Feature extraction is cached on disk; the rows above say how much of it this run computed.", "",
           f"![P@K]({png})", ""]
    return md


# Published instance-level figures on RSICD's *test* split, full-resolution tiles (mR, %).
PUBLISHED_MR = (("CLIP zero-shot", 15.7), ("RemoteCLIP", 35.3), ("GeoRSCLIP-FT", 38.9))


def _recall_row(label: str, r: dict[str, float]) -> str:
    cells = " | ".join(f"{r[f'{d}_R@{k}']:.1f}" for d in ("i2t", "t2i") for k in (1, 5, 10))
    return f"| {label} | {cells} | **{r['mR']:.1f}** |"


def _heldout_lines(h: dict[str, Any]) -> list[str]:
    """Instance recall and per-type P@10 of the model trained without the held-out split."""
    if not h:
        return []
    md = [f"## Held-out {h['split']} split: {h['n_tiles']} tiles the model never saw ({h['bits']} bits)", "",
          f"Trained on every other tile (best epoch {h['best_epoch']}), then scored on the {h['split']} tiles only.", "",
          f"### Instance recall (%): a caption's own tile is the relevant one ({h['n_captions']} captions)", "",
          "| ranking | I→T R@1 | R@5 | R@10 | T→I R@1 | R@5 | R@10 | mR |", "|---|---|---|---|---|---|---|---|",
          _recall_row(f"Hamming, {h['bits']}-bit codes", h["recall_hamming"]),
          _recall_row("float (cosine of the heads' outputs)", h["recall_float"])]
    md += [f"| published: {n} (RSICD test split, full-resolution tiles) | | | | | | | {v} |" for n, v in PUBLISHED_MR]
    md += ["", "Hamming ties are broken at random (expected recall). The published figures are on another split "
           "(RSICD's test images) at full resolution: indicative, not a like-for-like comparison.", ""]
    t = h.get("types")
    if t:
        new = [c for c in t["per_type"] if c not in t["ucm_types"]]
        md += [f"### Free-form queries per scene type (P@10, Hamming; queries: `{h['queries']}`)", "",
               f"Mean over all {len(t['per_type'])} types **{t['mean_all']:.3f}**, over the {len(new)} types that "
               f"are not UCM classes **{t['mean_new']:.3f}** (float ranking: {t['float_mean_all']:.3f} / "
               f"{t['float_mean_new']:.3f}).", "",
               "| type | P@10 | a UCM class |", "|---|---|---|"]
        md += [f"| {c} | {p:.1f} | {'' if c in new else 'yes'} |" for c, p in t["per_type"].items()]
        md.append("")
    return md


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
        ax.set_title(f"{TITLES.get(report.setup.get('name', 'ucm'), '')}, {title}")
        ax.set_xlabel("K")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("precision@K")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
