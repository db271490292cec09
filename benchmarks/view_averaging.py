"""Index-time view averaging on RSICD val: does averaging several views of a tile lift instance recall?

    python benchmarks/rsicd_recipe.py --recipe contrastive --views all --save /tmp/k_model
    python benchmarks/view_averaging.py /tmp/k_model

Each val tile's views are made as training makes them (seed 42); the model's real-valued image codes
of the views named are averaged before the sign, then mR (Hamming and float) is computed against the
tiles' own captions as ``rsicd_recipe.py`` does. Figures: docs/rsicd.md, third review.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from duch_desktop.core.jobs import drive
from duch_desktop.core.model.bundle import DuchModel, pack_codes
from duch_desktop.core.model.encoders import load_image_encoder, load_text_encoder
from duch_desktop.core.research.captioned import collection_features, recall_at, val_captions
from duch_desktop.core.training.augment import DEFAULT_VIEWS
from duch_desktop.core.training.features import extract_image_features

DATA = Path("../shared/data")
MIXES = (("orig",), ("orig", "rot"), ("orig", "rot", "crop"), DEFAULT_VIEWS)


class Averaged:
    """The codes of a model with the image side given (already averaged), for :func:`recall_at`."""

    def __init__(self, image_codes: np.ndarray, text_codes: np.ndarray):
        self.codes = {"image": image_codes, "text": text_codes}

    def image_codes(self, _feats, packed=True):
        return pack_codes(self.codes["image"]) if packed else self.codes["image"]

    def text_codes(self, _feats, packed=True):
        return pack_codes(self.codes["text"]) if packed else self.codes["text"]


def main() -> None:
    model = DuchModel.load(sys.argv[1])
    ienc, tenc = load_image_encoder(None, "cpu"), load_text_encoder(None, "cpu")
    f = drive(collection_features([DATA / "rsicd", DATA / "ucm"], ienc, tenc, views=list(DEFAULT_VIEWS),
                                  all_tiles=True))
    val = np.flatnonzero(f.data.split_names()[:f.n_benchmark] == "val")
    views = drive(extract_image_features([f.data.paths[i] for i in val], ienc, list(DEFAULT_VIEWS), seed=42))
    rows, owner = val_captions(f, val)
    real = {v: model.image_codes(views[k], packed=False) for k, v in enumerate(DEFAULT_VIEWS)}
    text = model.text_codes(f.text_feats[rows], packed=False)
    for mix in MIXES:
        codes = Averaged(np.mean([real[v] for v in mix], axis=0), text)
        for name, packed in (("Hamming", True), ("float", False)):
            r = recall_at(codes, None, None, owner, packed=packed)
            print(f"{'+'.join(mix)} {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in r.items()), flush=True)


if __name__ == "__main__":
    main()
