"""The training job of ``duch train`` and of the app's Tools ▸ Train Model…: features (with the on-disk
cache) -> hash heads -> bundle + captions.json, from options shaped like ``duch train``'s arguments
(an argparse namespace, or the dialog's ``SimpleNamespace``), so both drive the same generator.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..files import write_text_atomic
from ..jobs import Job, Progress, UserError

CAPTION_FILE_NAMES = ("captions.csv", "captions.json")  # looked for in a tile folder given no --captions

# Options a user may set one by one (CLI option name -> TrainConfig field).
RECIPE = {"temperature": "temperature", "lr": "lr", "hidden": "hidden", "image_noise": "image_noise",
          "intra_image": "w_intra_image"}
# Named recipes: TrainConfig values (and epochs) a recipe sets unless an option above is given.
# "paper": the paper's options, every loss term, 100 epochs. "contrastive": the shipped default
# model's (docs/rsicd.md): on UCM + RSICD's 24,815 distinct captions the text-text, adversarial and
# balance terms and weight decay together cost free-form precision, while a low temperature and
# feature noise on both sides pay; no image-image term: with the head+inner-block image features it
# only costs precision on RSICD's types, and UCM's I->T no longer needs it (with the head-only features
# it did, at 0.3); UCM's augmented views still reach the image-text term. The held-out NT-Xent stops
# too early at that temperature, the pair MRR does not.
RECIPES = {
    "paper": {"epochs": 100},
    "contrastive": {"epochs": 40, "temperature": 0.2, "lr": 1e-3, "hidden": 2048, "image_noise": 0.1,
                    "text_noise": 0.4, "w_intra_image": 0.0, "w_intra_text": 0.0, "alpha": 0.0, "gamma": 0.0,
                    "weight_decay": 0.0, "select": "pair_mrr"},
}


def _recipe(args) -> dict:
    name = getattr(args, "recipe", None) or "paper"
    if name not in RECIPES:
        raise UserError(f"unknown recipe {name!r}: use one of {', '.join(RECIPES)}")
    return RECIPES[name]


def recipe_epochs(args) -> int:
    """--epochs, else the recipe's."""
    epochs = getattr(args, "epochs", None)
    epochs = _recipe(args)["epochs"] if epochs is None else epochs
    if epochs < 1:
        raise UserError("--epochs must be at least 1")
    return epochs


def recipe_views(args) -> list[str]:
    from .augment import DEFAULT_VIEWS, IMAGE_VIEWS

    views = [v.strip() for v in (getattr(args, "views", None) or ",".join(DEFAULT_VIEWS)).split(",") if v.strip()]
    if not views or views[0] != "orig" or not set(views) <= set(IMAGE_VIEWS):
        raise UserError(f"--views must start with 'orig' and name views of: {', '.join(IMAGE_VIEWS)}")
    return views


def recipe_config(args, **fixed):
    """TrainConfig of the named recipe (``args.recipe``, default "paper"), the recipe options given on
    top of it, and ``fixed``."""
    from .trainer import TrainConfig

    chosen = {k: v for k, v in _recipe(args).items() if k != "epochs"}
    chosen.update({field: getattr(args, opt) for opt, field in RECIPE.items() if getattr(args, opt, None) is not None})
    if getattr(args, "select_by", None):
        chosen["select"] = args.select_by.replace("-", "_")
    if chosen.get("hidden", 1) < 1 or chosen.get("temperature", 1) <= 0 or chosen.get("lr", 1) <= 0:
        raise UserError("--hidden, --temperature and --lr must be positive")
    return TrainConfig(device=args.device, **chosen, **fixed)


def folder_tiles(folder: Path, captions_file: Path | None) -> tuple[list[Path], list[list[str]]]:
    from .datasets import load_captions_file, match_captions
    from ..imagery.reading import scan

    folder = Path(os.path.abspath(folder))
    if captions_file is None:
        captions_file = next((folder / n for n in CAPTION_FILE_NAMES if (folder / n).is_file()), None)
        if captions_file is None:
            raise UserError(f"no captions for {folder}: pass --captions FILE (CSV 'file,caption' or JSON)")
    caps = load_captions_file(captions_file)
    return match_captions(folder, caps, [e.path for e in scan(folder)])


def collections(args) -> list[Path]:
    """The captioned collections to train on (--data, or a positional collection folder); [] for a tile folder."""
    from .datasets import is_collection

    data = getattr(args, "data", None)
    if data:
        bad = [r for r in data if not is_collection(r)]
        if bad:
            raise UserError(f"{bad[0]} is not a captioned collection (captions.json and images/ expected)")
        if args.source is not None:
            raise UserError("give either a folder of tiles or --data collections, not both")
        return list(data)
    if args.source is None:
        raise UserError("nothing to train on: give a folder of tiles or --data FOLDER")
    return [args.source] if is_collection(args.source) else []


def train_job(args, image_encoder, text_encoder) -> Job[dict]:
    """Features -> training -> bundle (+ captions.json); returns a summary dict."""
    from ..model.bundle import DuchModel
    from ..model.caption_bank import write_bundle_codes
    from ..research.captioned import collection_features
    from ..research.evaluate import score_model
    from .augment import training_texts
    from .datasets import distinct_captions
    from .features import extract_image_features, extract_text_features
    from .trainer import TrainingData, train

    cfg = recipe_config(args, bits=args.bits, epochs=recipe_epochs(args), seed=args.seed)
    feats, roots = None, collections(args)
    if roots:
        feats = yield from collection_features(roots, image_encoder, text_encoder, args.cache_dir, args.seed,
                                               recipe_views(args), num_workers=args.workers, all_tiles=args.all_images)
        idx = np.arange(len(feats.data)) if args.all_images else feats.train_idx
        data, captions = feats.training_data(idx), feats.captions_of(idx)
        names = " + ".join(Path(r).resolve().name for r in roots)
        source = (f"{names}: {'all tiles' if args.all_images else 'protocol training split of the first + the others'}"
                  f" ({len(idx)} tiles)")
    else:
        if args.all_images:
            raise UserError("--all-images only applies to captioned collections")
        paths, caps = folder_tiles(args.source, args.captions)
        views = yield from extract_image_features(paths, image_encoder, cache_dir=args.cache_dir, seed=args.seed,
                                                  num_workers=args.workers)
        texts, owner = training_texts(caps, np.random.default_rng([args.seed, 1]))
        tf = yield from extract_text_features(texts, text_encoder, args.cache_dir)
        data = TrainingData(views, tf, owner)
        captions = list(dict.fromkeys(c for cs in caps for c in cs))
        source = f"{len(paths)} captioned tiles under {Path(args.source).resolve()}"
    result = yield from train(data, cfg, image_encoder.identity, text_encoder.identity)
    model = result.model
    model.meta.update(training_source=source, n_captions=len(captions))
    summary = {"bundle": str(args.out), "bits": args.bits, "best_epoch": result.best_epoch,
               "best_val": round(result.best_val, 4), "source": source}
    if feats is not None and not args.all_images:
        s = score_model(model, feats)
        metrics = {k: round(v, 4) for k, v in s.items()}
        model.meta["evaluation"] = {"protocol": f"{Path(roots[0]).resolve().name}, seed {args.seed}, "
                                                f"{len(feats.query_idx)} queries / {len(feats.retrieval_idx)} "
                                                "retrieval tiles, mAP@20", **metrics}
        summary["mAP@20"], summary["benchmark"] = metrics, Path(roots[0]).resolve().name.upper()
    yield Progress("save", 0, 1)
    model.save(args.out, fp16=args.fp16)
    # As an index reads the bank back (archive.captions.read_caption_texts), so that the codes made
    # here are the ones it looks for.
    captions = distinct_captions(captions)
    write_text_atomic(Path(args.out) / "captions.json", json.dumps(captions, ensure_ascii=False, indent=0))
    # The bank's codes ship in the bundle: else every first index of this model encodes them (a
    # minute for UCM + RSICD's 24,912 captions) before its first tile.
    yield from write_bundle_codes(Path(args.out), DuchModel.load(args.out), text_encoder, captions)
    return summary
