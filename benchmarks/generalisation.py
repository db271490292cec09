"""Levers for generalisation: train DUCH variants on the UCM protocol's training split and score
each on (a) UCM mAP@20 (query/retrieval split, as `duch evaluate`) and (b) the external archive
with free-form queries (AID / NWPU tiles never trained on, see duch_desktop/core/external.py).

    python benchmarks/generalisation.py [--variants baseline,+zoomout,...] [--epochs 100] [--out docs/generalisation.jsonl]

The second query set (``--check-queries``) is scored beside the first but never used to choose a
lever: it says whether what helps on the first 48 phrasings also helps on phrasings nobody tuned to.

Prints one markdown row per variant as it finishes and appends it to the JSON file. Features
are cached (the user cache folder), so only training repeats. Labels are used for scoring only.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from duch_desktop.core.training.augment import PAPER_VIEWS  # noqa: E402
from duch_desktop.core.model.encoders import PAPER_POOLING, load_image_encoder, load_text_encoder  # noqa: E402
from duch_desktop.core.research.captioned import collection_features  # noqa: E402
from duch_desktop.core.research.evaluate import score_model  # noqa: E402
from duch_desktop.core.research.external import generalisation_set, score_generalisation  # noqa: E402
from duch_desktop.core.training.features import extract_text_features  # noqa: E402
from duch_desktop.core.jobs import drive  # noqa: E402
from duch_desktop.core.training.trainer import TrainConfig, TrainingData, train  # noqa: E402

# "scale" (resolution loss without a footprint change) is left out: zoomout covers other ground
# sampling distances and tile sizes, and every extra view costs a full feature pass on CPU.
ALL = PAPER_VIEWS + ("zoomout", "colour", "zoomfar", "recolour")
PREVIOUS = PAPER_VIEWS + ("zoomout", "colour")  # the views of the recipe shipped before 2026-12-02
# Every row starts from the paper's training options and text pooling, whatever the shipped
# defaults are, so that a row means the same thing after the defaults change.
PAPER_CONFIG = TrainConfig(aug_inter=0.0)
# name -> (image views, text set, TrainConfig changes). Two keys of the changes are handled here,
# not by TrainConfig: "pooling" picks the text encoder's pooling (see HFTextEncoder; "a+b"
# concatenates two), "l2" ("text" or "both") makes those features unit length.
VARIANTS = {
    "baseline (paper views; captions + rule-based variants; tau 1)": (PAPER_VIEWS, "variants", {}),
    "+zoomout": (PAPER_VIEWS + ("zoomout",), "variants", {}),
    "+colour": (PAPER_VIEWS + ("colour",), "variants", {}),
    "+zoomout+colour": (PREVIOUS, "variants", {}),
    "+zoomout+colour; tau 0.5": (PREVIOUS, "variants", {"temperature": 0.5}),
    "+zoomout+colour; text noise 0.5": (PREVIOUS, "variants", {"text_noise": 0.5}),
    "baseline; captions only (no rule-based variants)": (PAPER_VIEWS, "human", {}),
    "baseline; tau 0.5": (PAPER_VIEWS, "variants", {"temperature": 0.5}),
    "+zoomout+colour; tau 0.3": (PREVIOUS, "variants", {"temperature": 0.3}),
    "+zoomout+colour+zoomfar": (PREVIOUS + ("zoomfar",), "variants", {}),
    "+zoomout+colour+recolour": (PREVIOUS + ("recolour",), "variants", {}),
    "+zoomout+colour+zoomfar+recolour": (ALL, "variants", {}),
    "+zoomout+colour; aug-inter 0.5": (PREVIOUS, "variants", {"aug_inter": 0.5}),
    "+zoomout+colour+zoomfar+recolour; aug-inter 0.5": (ALL, "variants", {"aug_inter": 0.5}),
    "+zoomout+colour; text pooling last1": (PREVIOUS, "variants", {"pooling": "last1"}),
    "+zoomout+colour; text pooling last1; aug-inter 0.5": (PREVIOUS, "variants", {"pooling": "last1", "aug_inter": 0.5}),
    "+zoomout+colour+zoomfar+recolour; text pooling last1": (ALL, "variants", {"pooling": "last1"}),
    "+zoomout+colour+zoomfar+recolour; text pooling last1; aug-inter 0.5":
        (ALL, "variants", {"pooling": "last1", "aug_inter": 0.5}),
    "+zoomout+colour+zoomfar+recolour; text pooling last1; aug-inter 0.25":
        (ALL, "variants", {"pooling": "last1", "aug_inter": 0.25}),
    "+zoomout+colour+zoomfar+recolour; text pooling last1; aug-inter 0.5; captions only":
        (ALL, "human", {"pooling": "last1", "aug_inter": 0.5}),
    "+zoomout+colour+zoomfar+recolour; text pooling last1+last4; aug-inter 0.5":
        (ALL, "variants", {"pooling": "last1+last4", "aug_inter": 0.5}),
    "+zoomout+colour+zoomfar+recolour; text pooling last1; aug-inter 0.5; tau 0.5":
        (ALL, "variants", {"pooling": "last1", "aug_inter": 0.5, "temperature": 0.5}),
    "+zoomout+colour+zoomfar+recolour; text pooling last1; aug-inter 0.5; beta 0.05":
        (ALL, "variants", {"pooling": "last1", "aug_inter": 0.5, "beta": 0.05}),
    "+zoomout+colour+zoomfar+recolour; text pooling last1; aug-inter 0.5; beta 0.5":
        (ALL, "variants", {"pooling": "last1", "aug_inter": 0.5, "beta": 0.5}),
    "+zoomout+colour+zoomfar+recolour; text pooling last1; aug-inter 0.5; l2 text":
        (ALL, "variants", {"pooling": "last1", "aug_inter": 0.5, "l2": "text"}),
    "+zoomout+colour+zoomfar+recolour; text pooling last1; aug-inter 0.5; l2 both":
        (ALL, "variants", {"pooling": "last1", "aug_inter": 0.5, "l2": "both"}),
}


def training_data(f, views: tuple[str, ...], texts: str) -> TrainingData:
    vi = [ALL.index(v) for v in views]
    keep = np.ones(len(f.texts), bool)
    if texts == "human":
        keep = np.array([t in set(f.data.captions[o]) for t, o in zip(f.texts, f.text_owner)])
    full = TrainingData(f.views[vi], f.text_feats[keep], f.text_owner[keep])
    return full.subset(f.train_idx)


def _unit(x):
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def l2_features(x, which: str):
    """Benchmark features (or a generalisation set) with unit-length text (and image) vectors."""
    if hasattr(x, "query_feats"):
        return replace(x, query_feats=_unit(x.query_feats),
                       image_feats=_unit(x.image_feats) if which == "both" else x.image_feats)
    return replace(x, text_feats=_unit(x.text_feats), views=_unit(x.views) if which == "both" else x.views)


def with_text_encoder(f, query_sets, tenc):
    """``f`` and each generalisation set with their text features re-extracted (cached) by ``tenc``."""
    return (replace(f, text_feats=drive(extract_text_features(f.texts, tenc))),
            *(replace(g, query_feats=drive(extract_text_features(g.query_texts, tenc))) for g in query_sets))


def concatenated(parts):
    """One feature tuple (f, gs, gs_b, encoder) from several, text features side by side."""
    cat = lambda xs, a: np.concatenate([getattr(x, a) for x in xs], axis=1)  # noqa: E731
    f, gs, gs_b, _ = parts[0]
    return (replace(f, text_feats=cat([p[0] for p in parts], "text_feats")),
            replace(gs, query_feats=cat([p[1] for p in parts], "query_feats")),
            replace(gs_b, query_feats=cat([p[2] for p in parts], "query_feats")),
            type("Cat", (), {"identity": "+".join(p[3].identity for p in parts)})())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ucm", type=Path, default=ROOT.parent / "shared/data/ucm")
    ap.add_argument("--external", type=Path, default=ROOT.parent / "shared/data/external")
    ap.add_argument("--queries", type=Path, default=ROOT / "tests/data/external_queries.json")
    ap.add_argument("--check-queries", type=Path, default=ROOT / "tests/data/external_queries_b.json",
                    help="a second query set, held back from choosing levers (scored, never tuned on)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names (see VARIANTS; names hold no commas)")
    ap.add_argument("--bits", type=int, nargs="+", default=[64])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=42, help="protocol seed: UCM split, captions, augmented views")
    ap.add_argument("--train-seeds", type=int, nargs="+", help="training seeds (initialisation, batches); default --seed")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/generalisation.jsonl")
    args = ap.parse_args()

    ienc, tenc = load_image_encoder(), load_text_encoder(pooling=PAPER_POOLING)
    f = drive(collection_features([args.ucm], ienc, tenc, seed=args.seed, views=ALL))
    gs = drive(generalisation_set(ienc, tenc, args.external, args.queries))
    gs_b = drive(generalisation_set(ienc, tenc, args.external, args.check_queries))
    by_pooling = {tenc.pooling: (f, gs, gs_b, tenc)}
    print("| variant | bits | UCM I→T | UCM T→I | ext. P@10 | ext. top-5 hits | ext. image→image P@10 | "
          "check set P@10 | check set top-5 | best epoch | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
        views, texts, change = VARIANTS[name]
        change = dict(change)
        pooling = change.pop("pooling", PAPER_POOLING)
        for p in pooling.split("+"):  # "a+b": concatenated poolings, e.g. last1+last4
            if p not in by_pooling:
                t_enc = load_text_encoder(pooling=p)
                by_pooling[p] = (*with_text_encoder(f, (gs, gs_b), t_enc), t_enc)
        if pooling not in by_pooling:
            by_pooling[pooling] = concatenated([by_pooling[p] for p in pooling.split("+")])
        fv, gsv, gsv_b, t_enc = by_pooling[pooling]
        l2 = change.pop("l2", "")
        if l2:
            fv, gsv, gsv_b = (l2_features(x, l2) for x in (fv, gsv, gsv_b))
        data = training_data(fv, views, texts)
        for bits, train_seed in itertools.product(args.bits, args.train_seeds or [args.seed]):
            cfg = replace(PAPER_CONFIG, bits=bits, epochs=args.epochs, seed=train_seed, **change)
            t = time.perf_counter()
            res = drive(train(data, cfg, ienc.identity, t_enc.identity))
            secs = time.perf_counter() - t
            ucm = score_model(res.model, fv)
            ext = score_generalisation(res.model, gsv)
            ext_b = score_generalisation(res.model, gsv_b)
            row = {"variant": name, "bits": bits, "train_seed": train_seed, "views": list(views), "texts": texts,
                   "config": dict(change, pooling=pooling, **({"l2": l2} if l2 else {})),
                   "ucm_i2t_paper": ucm["i2t_paper"], "ucm_t2i_paper": ucm["t2i_paper"],
                   "ext_p_at_10": ext.mean_p_at_10, "ext_top5": ext.top5_hit_rate,
                   "ext_i2i_p_at_10": ext.image_p_at_10, "best_epoch": res.best_epoch, "train_s": secs,
                   "ext_b_p_at_10": ext_b.mean_p_at_10, "ext_b_top5": ext_b.top5_hit_rate,
                   "per_class": {k: v["p_at_10"] for k, v in ext.per_class.items()},
                   "per_class_b": {k: v["p_at_10"] for k, v in ext_b.per_class.items()}}
            print(f"| {name} (seed {train_seed}) | {bits} | {row['ucm_i2t_paper']:.3f} | {row['ucm_t2i_paper']:.3f} | "
                  f"{row['ext_p_at_10']:.3f} | {row['ext_top5']:.3f} | {row['ext_i2i_p_at_10']:.3f} | "
                  f"{row['ext_b_p_at_10']:.3f} | {row['ext_b_top5']:.3f} | {res.best_epoch} | {secs:.0f} |", flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with open(args.out, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
