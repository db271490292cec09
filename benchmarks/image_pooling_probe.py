"""Which EfficientNet-Lite0 layers to pool (docs/rsicd.md, "Image features"): the probe behind that table.

    python benchmarks/image_pooling_probe.py extract --size 224 --out /tmp/taps224.npz
    python benchmarks/image_pooling_probe.py train /tmp/taps224.npz head+b15+b14+b10 [--set seed=7]

``extract`` runs one multi-output graph over the original view of every UCM + RSICD tile and stores
the global average of the head and of blocks 4, 7, 10, 12, 14, 15, plus the head's max, GeM (p = 3)
and 2 x 2-grid poolings. ``train`` concatenates the named parts (each scaled to a mean norm of 30,
as :data:`duch_desktop.core.model.encoders.IMAGE_TAPS` scales blocks to the head's), trains the
contrastive recipe without image-image term on the original views, without RSICD's val tiles, and
prints per-type P@10 (the three RSICD query sets) and mR on those tiles. The product's own pooling
(``--image-pooling``) is reproduced end to end by ``rsicd_recipe.py --image-pooling TAPS``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from rsicd_recipe import QUERY_SETS, RSICD, UCM, parse_set  # noqa: E402

from duch_desktop.core.jobs import drive  # noqa: E402
from duch_desktop.core.model.encoders import load_image_encoder, load_text_encoder  # noqa: E402
from duch_desktop.core.research.captioned import collection_features, scores_on  # noqa: E402
from duch_desktop.core.research.external import load_queries  # noqa: E402
from duch_desktop.core.training.features import extract_text_features  # noqa: E402
from duch_desktop.core.training.job import RECIPES  # noqa: E402
from duch_desktop.core.training.trainer import TrainConfig, train  # noqa: E402

BLOCKS = (4, 7, 10, 12, 14, 15)
PARTS = ["head", "head_max", "head_gem", *(f"b{i}" for i in BLOCKS), "head_grid2"]


def extract(size: int, out: Path) -> None:
    import onnxruntime as ort
    import torch

    from duch_desktop.core.imagery.reading import read_tile
    from duch_desktop.core.model import runtime
    from duch_desktop.core.model.encoders import EfficientNetLiteEncoder
    from duch_desktop.core.research.captioned import load_collection, merge_collections

    data = merge_collections([load_collection(RSICD), load_collection(UCM)])
    enc = EfficientNetLiteEncoder("cpu", pooling="head")

    class Taps(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.n = enc.net

        def forward(self, x):
            n, taps = self.n, []
            x = n._swish(n._bn0(n._conv_stem(x)))
            for i, block in enumerate(n._blocks):
                x = block(x)
                if i in BLOCKS:
                    taps.append(x.mean(dim=(2, 3)))
            h = n._swish(n._bn1(n._conv_head(x)))
            return (h.mean(dim=(2, 3)), h.amax(dim=(2, 3)), h.clamp(min=1e-6).pow(3).mean(dim=(2, 3)).pow(1 / 3),
                    *taps, torch.nn.functional.adaptive_avg_pool2d(h, 2).flatten(1))

    graph = out.with_suffix(".onnx")
    torch.onnx.export(Taps().eval(), (torch.zeros(2, 3, size, size),), str(graph), dynamo=True, input_names=["x"],
                      output_names=PARTS, dynamic_shapes={"x": {0: torch.export.Dim("b")}}, external_data=False)
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    parts, t = {k: [] for k in PARTS}, time.perf_counter()
    for a in range(0, len(data), 32):
        pixels = np.stack([read_tile(p, size)[0] for p in data.paths[a:a + 32]])
        for k, v in zip(PARTS, session.run(None, {"x": runtime.normalise(pixels, enc.mean, enc.std)})):
            parts[k].append(v)
    np.savez(out, paths=np.array([str(p) for p in data.paths]), **{k: np.concatenate(v) for k, v in parts.items()})
    print(f"{len(data)} tiles in {time.perf_counter() - t:.0f} s -> {out}")


def train_on(npz: Path, taps: str, overrides: list[str]) -> None:
    cfg = replace(TrainConfig(device="cpu"), **{**RECIPES["contrastive"], "w_intra_image": 0.0, **parse_set(overrides)})
    ienc, tenc = load_image_encoder(None, "cpu"), load_text_encoder(None, "cpu")
    feats = drive(collection_features([RSICD, UCM], ienc, tenc, views=["orig"], all_tiles=True))
    z = np.load(npz)
    if list(z["paths"]) != [str(p) for p in feats.data.paths]:
        raise SystemExit(f"{npz} holds other tiles than the collections: extract again")
    parts = [z[k] / np.linalg.norm(z[k], axis=1).mean() * 30 for k in taps.split("+")]
    feats = replace(feats, views=np.concatenate(parts, 1).astype(np.float32)[None])
    val = np.flatnonzero(feats.data.split_names()[:feats.n_benchmark] == "val")
    keep = np.setdiff1d(np.arange(len(feats.data)), val)
    res = drive(train(feats.training_data(keep), cfg, ienc.identity, tenc.identity))
    out = {"taps": taps, "dim": feats.views.shape[2], "set": overrides, "best_epoch": res.best_epoch}
    for path in QUERY_SETS:
        queries = load_queries(path, feats.data.class_names)
        s = scores_on(res.model, feats, val, queries,
                      drive(extract_text_features([q for c in queries for q in queries[c]], tenc)))
        out[path.stem] = [round(s["types"]["mean_all"], 3), round(s["types"]["mean_new"], 3)]
    out["mR"], out["mR_float"] = round(s["recall_hamming"]["mR"], 1), round(s["recall_float"]["mR"], 1)
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("extract")
    e.add_argument("--size", type=int, default=224)
    e.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("train")
    t.add_argument("npz", type=Path)
    t.add_argument("taps", help=f"+-joined parts of: {', '.join(PARTS)}")
    t.add_argument("--set", nargs="*", default=[], help="TrainConfig overrides, key=value")
    t.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.cmd == "extract":
        extract(args.size, args.out)
    else:
        import torch

        torch.set_num_threads(args.threads)
        train_on(args.npz, args.taps, args.set)


if __name__ == "__main__":
    main()
