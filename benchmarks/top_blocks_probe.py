"""Probe: does training the top of the image encoder lift instance recall (mR) past frozen features?

    python benchmarks/top_blocks_probe.py --train-from none      # frozen: the default features, as shipped
    python benchmarks/top_blocks_probe.py --train-from 14        # blocks 14, 15 and the head conv trained

Every tile's original view is run once through EfficientNet-Lite0 up to block 13 (its 192 x 7 x 7
map, plus block 10 pooled: what the default pooling taps below it), cached on disk. The probe then
runs the rest of the network (blocks 14, 15, head conv) on that map and pools it as the default
pooling does (head + b15 + b14 + b10), so ``--train-from none`` gives the shipped features exactly;
``--train-from 14`` / ``15`` / ``head`` trains that block and those above it (BatchNorm statistics
kept) together with the two hash heads, without labels: the contrastive recipe's image-text NT-Xent
at temperature 0.2, quantization 0.001, text noise 0.4, image noise 0.1, Adam 1e-3 on the heads and
``--top-lr`` on the encoder's blocks. Trained on UCM + RSICD but RSICD's val tiles, the epoch chosen
by the held-out pair MRR (10 % of the training tiles); scored on the val tiles: instance recall
(Hamming, float) and per-type P@10 with the three query sets. Original views only, as the probe of
docs/rsicd.md's image-pooling review (run G's data).
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch

from duch_desktop.core.jobs import drive
from duch_desktop.core.model.encoders import IMAGE_TAPS, EfficientNetLiteEncoder, load_image_encoder, load_text_encoder
from duch_desktop.core.model.bundle import pack_codes
from duch_desktop.core.model.heads import HashHead
from duch_desktop.core.model.losses import nt_xent, quantization_loss
from duch_desktop.core.model.onnx_encoders import OnnxImageEncoder
from duch_desktop.core.research.captioned import collection_features, recall_at, type_precision, val_captions
from duch_desktop.core.research.external import load_queries
from duch_desktop.core.training.features import extract_image_features, extract_text_features
from duch_desktop.core.training.trainer import TrainingData, pair_retrieval_score

DATA = Path("../shared/data")
RSICD, UCM = DATA / "rsicd", DATA / "ucm"
QUERY_SETS = ("tests/data/rsicd_queries.json", "tests/data/rsicd_queries_b.json", "tests/data/rsicd_queries_c.json")
MAP = (192, 7, 7)


def scale(tap: str) -> float:
    return IMAGE_TAPS["head"][2] / IMAGE_TAPS[tap][2]


class MapEncoder(EfficientNetLiteEncoder):
    """EfficientNet-Lite0 up to block 13: its map flattened, then block 10 pooled and scaled."""

    def __init__(self):
        super().__init__("cpu", "head")
        self.dim = int(np.prod(MAP)) + 112
        self.identity = self.identity + ";map=b13+b10"

    def _forward(self, x):
        n = self.net
        x = n._swish(n._bn0(n._conv_stem(x)))
        for i, block in enumerate(n._blocks[:14]):
            x = block(x)
            if i == 10:
                b10 = x.mean(dim=(2, 3)) * scale("b10")
        return torch.cat([x.flatten(1), b10], dim=1)


class Top(torch.nn.Module):
    """Blocks 14, 15 and the head conv on a block-13 map -> head + b15 + b14 + b10 pooled (1904).

    Three stages (0: block 14, 1: block 15, 2: head conv); between them a tile is one flat row: the
    map entering the next stage, then the taps pooled so far (newest first, b10 last). ``lower``
    runs the frozen stages below ``start`` once (its output is what training reads); ``forward``
    runs the rest: the part that trains."""

    STAGES = ("14", "15", "head", "none")
    # Per stage: channels of the 7 x 7 map entering it, width of the pooled taps riding along.
    ENTRY = ((192, 112), (192, 112 + 192), (320, 112 + 192 + 320))

    def __init__(self, net, start: str):
        super().__init__()
        self.b14, self.b15 = copy.deepcopy(net._blocks[14]), copy.deepcopy(net._blocks[15])
        self.conv, self.bn, self.swish = copy.deepcopy(net._conv_head), copy.deepcopy(net._bn1), net._swish
        self.start = self.STAGES.index(start)

    def _stages(self, x, first: int, last: int):
        """Run stages ``first`` .. ``last - 1`` on rows entering stage ``first``."""
        if first == last:
            return x
        channels, tail = self.ENTRY[first]
        m, pooled = x[:, :-tail].reshape(-1, channels, 7, 7), [x[:, -tail:]]
        for stage in range(first, last):
            if stage == 2:
                return torch.cat([self.swish(self.bn(self.conv(m))).mean(dim=(2, 3))] + pooled, 1)
            block, tap = (self.b14, "b14") if stage == 0 else (self.b15, "b15")
            m = block(m)
            pooled.insert(0, m.mean(dim=(2, 3)) * scale(tap))
        return torch.cat([m.flatten(1)] + pooled, 1)

    def lower(self, x):
        return self._stages(x, 0, self.start)

    def forward(self, x):
        return self._stages(x, self.start, 3)


class Probe:
    def __init__(self, top, ihead, thead, bits):
        self.top, self.ihead, self.thead, self.bits = top, ihead, thead, bits

    def _run(self, fn, x, batch=512):
        out = []
        with torch.no_grad():
            for s in range(0, len(x), batch):
                out.append(fn(torch.as_tensor(np.asarray(x[s:s + batch]))).numpy())
        return np.concatenate(out)

    def image_codes(self, feats, packed=True):
        h = self._run(lambda x: self.ihead(self.top(x)), feats)
        return pack_codes(h) if packed else h

    def text_codes(self, feats, packed=True):
        h = self._run(self.thead, feats)
        return pack_codes(h) if packed else h


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-from", choices=("none", "14", "15", "head"), default="none")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--top-lr", type=float, default=1e-4)
    ap.add_argument("--temperature", type=float, default=0.2)
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    tenc = load_text_encoder(None, "cpu")
    menc = MapEncoder()
    ienc = OnnxImageEncoder(menc.identity, menc.input_size, menc.mean, menc.std, lambda: menc)
    t0 = time.perf_counter()
    f = drive(collection_features([RSICD, UCM], ienc, tenc, views=["orig"], all_tiles=True))
    print(f"features in {time.perf_counter() - t0:.0f} s", flush=True)
    img = f.views[0]
    val = np.flatnonzero(f.data.split_names()[:f.n_benchmark] == "val")
    rest = rng.permutation(np.setdiff1d(np.arange(len(f.data)), val))
    held, train = rest[:len(rest) // 10], rest[len(rest) // 10:]
    owner = np.asarray(f.text_owner)
    human = np.array([t in f.data.captions[int(o)] for o, t in zip(owner, f.texts)])
    texts_of = {int(i): np.flatnonzero((owner == i) & human) for i in np.unique(owner)}

    top = Top(menc.net, args.train_from).eval()
    trainable = {"none": [], "14": [top.b14, top.b15, top.conv, top.bn], "15": [top.b15, top.conv, top.bn],
                 "head": [top.conv, top.bn]}[args.train_from]
    t0 = time.perf_counter()
    with torch.no_grad():
        img = np.concatenate([top.lower(torch.as_tensor(img[s:s + 256])).numpy() for s in range(0, len(img), 256)])
    print(f"frozen part below {args.train_from}: {img.shape[1]} values a tile, {time.perf_counter() - t0:.0f} s",
          flush=True)
    for p in top.parameters():
        p.requires_grad_(False)
    top_params = [p for m in trainable for p in m.parameters()]
    for p in top_params:
        p.requires_grad_(True)
    ihead, thead = HashHead(1904, args.bits, 2048), HashHead(f.text_feats.shape[1], args.bits, 2048)
    p = Probe(top, ihead, thead, args.bits)
    groups = [{"params": list(ihead.parameters()) + list(thead.parameters()), "lr": 1e-3}]
    if top_params:
        groups.append({"params": top_params, "lr": args.top_lr})
    opt = torch.optim.Adam(groups)
    pooled = p._run(top, img[train[:2000]])
    shipped = drive(extract_image_features([f.data.paths[i] for i in train[:8]], load_image_encoder(None, "cpu"),
                                           ["orig"]))[0]
    print(f"frozen top against the shipped features: max abs difference {np.abs(pooled[:8] - shipped).max():.2e}")
    istd = torch.as_tensor(pooled.std(0))
    tstd = torch.as_tensor(f.text_feats[np.concatenate([texts_of[int(i)] for i in train])].std(0))
    # one caption a held-out tile, as the trainer scores its held-out tiles
    held_data = TrainingData(img[held], f.text_feats[[texts_of[int(i)][0] for i in held]], np.arange(len(held)))
    best, best_state = -1.0, None
    for epoch in range(1, args.epochs + 1):
        t = time.perf_counter()
        ihead.train(), thead.train()
        order = rng.permutation(train)
        for s in range(0, len(order) - 255, 256):
            b = order[s:s + 256]
            ti = [rng.choice(texts_of[int(i)]) for i in b]
            x = torch.as_tensor(img[b])
            with torch.set_grad_enabled(bool(top_params)):
                z = top(x)
            z = z + torch.randn_like(z) * istd * 0.1
            y = torch.as_tensor(f.text_feats[ti])
            y = y + torch.randn_like(y) * tstd * 0.4
            hi, ht = ihead(z), thead(y)
            loss = nt_xent(hi, ht, args.temperature) + 0.001 * (quantization_loss(hi) + quantization_loss(ht))
            opt.zero_grad()
            loss.backward()
            opt.step()
        ihead.eval(), thead.eval()
        score = pair_retrieval_score(p, held_data)
        print(f"epoch {epoch} loss {loss.item():.3f} held-out pair MRR {score:.4f} ({time.perf_counter() - t:.0f} s)",
              flush=True)
        if score > best:
            best, best_epoch = score, epoch
            best_state = copy.deepcopy((top.state_dict(), ihead.state_dict(), thead.state_dict()))
    top.load_state_dict(best_state[0]), ihead.load_state_dict(best_state[1]), thead.load_state_dict(best_state[2])
    rows, cowner = val_captions(f, val)
    print(f"train-from {args.train_from}, top lr {args.top_lr}, best epoch {best_epoch} (pair MRR {best:.4f})")
    for name, packed in (("Hamming", True), ("float", False)):
        r = recall_at(p, img[val], f.text_feats[rows], cowner, packed=packed)
        print(f"recall {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in r.items()))
    for path in QUERY_SETS:
        q = load_queries(Path(path), f.data.class_names)
        qf = drive(extract_text_features([s for c in q for s in q[c]], tenc))
        tt = type_precision(p, img[val], f.data.labels[val], f.data.class_names, q, qf)
        print(f"per-type P@10 {Path(path).name}: {tt.mean_all:.3f} / {tt.mean_new:.3f}")


if __name__ == "__main__":
    main()
