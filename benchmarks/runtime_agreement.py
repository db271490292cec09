"""How far the onnx runtime's features and codes are from torch's on UCM tiles and captions.

Encodes every ``--step``-th UCM tile (and its five captions) with the default encoders on both
runtimes and prints the relative feature error max|onnx - torch| / max|torch| (the tolerance the
tests hold to 1e-4), and the share of tiles and captions whose shipped-model codes are identical
(an index built with one runtime is searched with the other). Also prints encoding rates.
Run: ``python benchmarks/runtime_agreement.py [--data ../shared/data/ucm] [--step 10]``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ucm")
    ap.add_argument("--step", type=int, default=10, help="every STEP-th tile (1: all 2100)")
    args = ap.parse_args()

    from duch_desktop.core.imagery.reading import read_tile
    from duch_desktop.core.model import defaults
    from duch_desktop.core.training.datasets import load_ucm

    ucm = load_ucm(args.data)
    picked = range(0, len(ucm.paths), args.step)
    model = defaults.load_model()
    texts = [c for i in picked for c in ucm.captions[i]]
    feats, rates = {}, {}
    for rt in ("onnx", "torch"):
        image = defaults.load_image_encoder_for(model.image_encoder, rt)
        text = defaults.load_text_encoder_for(model.text_encoder, rt)
        pixels = np.stack([read_tile(ucm.paths[i], size=image.input_size)[0] for i in picked])
        t = time.perf_counter()
        fi = image.encode(pixels)
        rates[f"{rt} images/s"] = len(pixels) / (time.perf_counter() - t)
        t = time.perf_counter()
        ft = text.encode(texts)
        rates[f"{rt} texts/s"] = len(texts) / (time.perf_counter() - t)
        feats[rt] = (fi, ft)
    print(f"{len(picked)} UCM tiles, {len(texts)} captions; model {model.fingerprint} ({model.bits} bits), "
          f"text encoder {model.text_encoder}")
    for j, (kind, codes) in enumerate((("tiles", model.image_codes), ("captions", model.text_codes))):
        a, b = feats["onnx"][j], feats["torch"][j]
        same = (codes(a) == codes(b)).all(axis=1)
        bits = np.unpackbits(codes(a) ^ codes(b), axis=1).sum()
        print(f"{kind:>9}: max|onnx - torch| / max|torch| = {np.abs(a - b).max() / np.abs(b).max():.2e}; "
              f"identical codes {same.mean() * 100:.2f} % ({same.sum()}/{len(same)}), {bits} bits differ in all")
    for key, value in rates.items():
        print(f"{key:>17}: {value:.1f}")


if __name__ == "__main__":
    main()
