"""Levers for generalisation: train DUCH variants on the UCM protocol's training split and score
each on (a) UCM mAP@20 (query/retrieval split, as `duch evaluate`) and (b) the external archive
with free-form queries (AID / NWPU tiles never trained on, see duch_desktop/core/external.py).

    python benchmarks/generalisation.py [--variants baseline,+zoomout,...] [--epochs 100] [--out docs/generalisation.jsonl]

Prints one markdown row per variant as it finishes and appends it to the JSON file. Features
are cached (the user cache folder), so only training repeats. Labels are used for scoring only.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from duch_desktop.core.augment import PAPER_VIEWS  # noqa: E402
from duch_desktop.core.encoders import load_image_encoder, load_text_encoder  # noqa: E402
from duch_desktop.core.evaluate import score_model, ucm_features  # noqa: E402
from duch_desktop.core.external import generalisation_set, score_generalisation  # noqa: E402
from duch_desktop.core.jobs import drive  # noqa: E402
from duch_desktop.core.training import TrainConfig, TrainingData, train  # noqa: E402

# "scale" (resolution loss without a footprint change) is left out: zoomout covers other ground
# sampling distances and tile sizes, and every extra view costs a full feature pass on CPU.
ALL = PAPER_VIEWS + ("zoomout", "colour")
# name -> (image views, text set, TrainConfig changes)
VARIANTS = {
    "baseline (paper views; captions + rule-based variants; tau 1)": (PAPER_VIEWS, "variants", {}),
    "+zoomout": (PAPER_VIEWS + ("zoomout",), "variants", {}),
    "+colour": (PAPER_VIEWS + ("colour",), "variants", {}),
    "+zoomout+colour": (ALL, "variants", {}),
    "+zoomout+colour; tau 0.5": (ALL, "variants", {"temperature": 0.5}),
    "+zoomout+colour; text noise 0.5": (ALL, "variants", {"text_noise": 0.5}),
    "baseline; captions only (no rule-based variants)": (PAPER_VIEWS, "human", {}),
    "baseline; tau 0.5": (PAPER_VIEWS, "variants", {"temperature": 0.5}),
    "+zoomout+colour; tau 0.3": (ALL, "variants", {"temperature": 0.3}),
}


def training_data(f, views: tuple[str, ...], texts: str) -> TrainingData:
    vi = [ALL.index(v) for v in views]
    keep = np.ones(len(f.texts), bool)
    if texts == "human":
        keep = np.array([t in set(f.data.captions[o]) for t, o in zip(f.texts, f.text_owner)])
    full = TrainingData(f.views[vi], f.text_feats[keep], f.text_owner[keep])
    return full.subset(f.train_idx)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ucm", type=Path, default=ROOT.parent / "shared/data/ucm")
    ap.add_argument("--external", type=Path, default=ROOT.parent / "shared/data/external")
    ap.add_argument("--queries", type=Path, default=ROOT / "tests/data/external_queries.json")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names (see VARIANTS; names hold no commas)")
    ap.add_argument("--bits", type=int, nargs="+", default=[64])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", type=Path, default=ROOT / "docs/generalisation.jsonl")
    args = ap.parse_args()

    ienc, tenc = load_image_encoder(), load_text_encoder()
    f = drive(ucm_features(args.ucm, ienc, tenc, seed=args.seed, views=ALL))
    gs = drive(generalisation_set(ienc, tenc, args.external, args.queries))
    print("| variant | bits | UCM I→T | UCM T→I | ext. P@10 | ext. top-5 hits | ext. image→image P@10 | best epoch | train s |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
        views, texts, change = VARIANTS[name]
        data = training_data(f, views, texts)
        for bits in args.bits:
            cfg = replace(TrainConfig(), bits=bits, epochs=args.epochs, seed=args.seed, **change)
            t = time.perf_counter()
            res = drive(train(data, cfg, ienc.identity, tenc.identity))
            secs = time.perf_counter() - t
            ucm = score_model(res.model, f)
            ext = score_generalisation(res.model, gs)
            row = {"variant": name, "bits": bits, "views": list(views), "texts": texts, "config": change,
                   "ucm_i2t_paper": ucm["i2t_paper"], "ucm_t2i_paper": ucm["t2i_paper"],
                   "ext_p_at_10": ext.mean_p_at_10, "ext_top5": ext.top5_hit_rate,
                   "ext_i2i_p_at_10": ext.image_p_at_10, "best_epoch": res.best_epoch, "train_s": secs,
                   "per_class": {k: v["p_at_10"] for k, v in ext.per_class.items()}}
            print(f"| {name} | {bits} | {row['ucm_i2t_paper']:.3f} | {row['ucm_t2i_paper']:.3f} | "
                  f"{row['ext_p_at_10']:.3f} | {row['ext_top5']:.3f} | {row['ext_i2i_p_at_10']:.3f} | "
                  f"{res.best_epoch} | {secs:.0f} |", flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with open(args.out, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
