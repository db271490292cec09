"""``duch train`` and ``duch evaluate``: the research side of the CLI.

``duch_desktop.cli`` calls :func:`register` with its sub-parsers; every handler returns an
exit code (0 ok, 2 user error, 130 cancelled with Ctrl-C).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from .core.files import write_text_atomic
from .cli_jobs import run_job
from .core.jobs import UserError
from .core.model import runtime
from .core.model.inference import check_bits
from .core.training.job import RECIPES, recipe_config, recipe_epochs, recipe_views, train_job

DEFAULT_UCM = Path("../shared/data/ucm")
DEFAULT_QUERIES = Path("tests/data/external_queries.json")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` and ``evaluate`` sub-commands."""
    t = subparsers.add_parser(
        "train", help="train a DUCH model (hash heads) on captioned tiles",
        description="Train DUCH hash heads on captioned collections (captions.json + images/, e.g. UCM, RSICD) "
                    "or on a folder of tiles with a captions file (CSV 'file,caption' or JSON), and save a model bundle.")
    t.add_argument("source", type=Path, nargs="?", help="a folder of tiles (or one captioned collection, as --data)")
    t.add_argument("--data", type=Path, action="append", metavar="FOLDER",
                   help="a captioned collection (captions.json + images/); repeat to train on several. The first "
                        "is split by the benchmark protocol and scored (unless --all-images); the others are used whole")
    t.add_argument("--captions", type=Path, help="captions file for a folder of tiles "
                   "(default: captions.csv or captions.json inside the folder)")
    t.add_argument("--bits", type=int, default=64, help="code length, a multiple of 8 (default 64)")
    t.add_argument("--epochs", type=int, help="training epochs (default: the recipe's, 100 paper / 40 contrastive)")
    t.add_argument("--out", type=Path, required=True, help="bundle folder to write, e.g. resources/models/ucm64")
    t.add_argument("--all-images", action="store_true",
                   help="collections: train on all their tiles instead of the first one's protocol half "
                        "(no evaluation figures then)")
    t.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=True,
                   help="store the weights as float16 (half the size; default on)")
    _common(t)
    t.set_defaults(func=cmd_train)

    e = subparsers.add_parser(
        "evaluate", help="run the UCM or RSICD benchmark (mAP@20 at several code lengths, ablation, timings)",
        description="Train and score DUCH on a captioned collection with the paper's protocol; writes its "
                    "section of results.md, results[_NAME].json and precision_at_k[_NAME].png. A collection "
                    "with a 'val' split (RSICD) also gets instance recall and per-type precision on it.")
    e.add_argument("--data", type=Path, action="append", metavar="FOLDER",
                   help=f"captioned collection to benchmark (default {DEFAULT_UCM}); repeat it to add others "
                        "as extra training tiles (all of them), e.g. --data ../shared/data/ucm --data ../shared/data/rsicd")
    e.add_argument("--bits", type=int, nargs="+", default=[16, 32, 64, 128], help="code lengths (default 16 32 64 128)")
    e.add_argument("--epochs", type=int, help="training epochs per run (default: the recipe's, 100 paper / 40 contrastive)")
    e.add_argument("--no-ablation", action="store_true", help="skip the six loss-ablation runs at 64 bits")
    e.add_argument("--out", type=Path, default=Path("docs"), help="folder for the report files (default docs)")
    e.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    e.add_argument("--external", type=Path, metavar="FOLDER",
                   help="instead of the UCM benchmark, score a trained model on a folder of <class>/<tile> images "
                        "it never saw, with free-form queries (e.g. ../shared/data/external)")
    e.add_argument("--queries", type=Path,
                   help=f"JSON {{class: [query, ...]}}; with --external (default {DEFAULT_QUERIES}), or free-form "
                        "queries per scene type of a collection with a 'val' split (default "
                        "tests/data/<folder name>_queries.json when it exists)")
    e.add_argument("--model", type=Path, help="with --external: model bundle to score (default: the shipped model)")
    _common(e)
    e.set_defaults(func=cmd_evaluate)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-encoder", help="'efficientnet-lite0' (default) or a local Hugging Face vision model folder")
    p.add_argument("--image-pooling", metavar="TAPS",
                   help="EfficientNet-Lite0 layers the image features average: head+b15+b14+b10 (default: the head "
                        "beside three inner blocks), head (the head alone, as the paper's kind of model and "
                        "models before the option); any 'head' followed by +-joined blocks of b4, b7, b10, b12, "
                        "b14, b15")
    p.add_argument("--text-encoder", help="'all-MiniLM-L6-v2' (default) or a local BERT-like model folder")
    p.add_argument("--text-pooling", choices=("last1", "last4"),
                   help="token embeddings the text encoder averages: last1 = its last layer (default; the "
                        "pooling sentence-transformers models were trained with), last4 = the sum of the last "
                        "four layers (the DUCH paper's, for BERT-base)")
    p.add_argument("--cache-dir", type=Path, help="feature cache folder (default: the user cache folder)")
    p.add_argument("--device", help="torch device, e.g. cpu or cuda (default: cuda when available)")
    p.add_argument("--runtime", choices=runtime.RUNTIMES, help=runtime.HELP)
    p.add_argument("--seed", type=int, default=42, help="seed of split, caption choice, augmentation, training")
    p.add_argument("--workers", type=int, default=1, help="tile-decoding processes (0 = decode in the main one)")
    r = p.add_argument_group("recipe (default: the paper's options, see docs/results.md)")
    r.add_argument("--recipe", choices=tuple(RECIPES), default="paper",
                   help="paper: the paper's options and loss terms (default); contrastive: the shipped model's, "
                        "for large collections with many distinct captions (image-text NT-Xent at temperature "
                        "0.2, feature noise, no image-image/text-text/adversarial/balance terms; "
                        "docs/rsicd.md). The options below change single values of it")
    r.add_argument("--temperature", type=float, help="NT-Xent temperature (paper 1.0, contrastive 0.2)")
    r.add_argument("--lr", type=float, help="Adam learning rate of the heads (paper 1e-4, contrastive 1e-3)")
    r.add_argument("--hidden", type=int, help="hidden width of both heads (paper 4096, contrastive 2048)")
    r.add_argument("--image-noise", type=float, help="Gaussian noise on image features, in units of their "
                   "per-dimension std (paper 0, contrastive 0.1)")
    r.add_argument("--views", help="image views to extract for collections of up to 3000 tiles, comma-separated, "
                   "'orig' first (default: orig,rot,blur,crop,zoomout,colour,zoomfar,recolour); larger ones use 'orig' only")
    r.add_argument("--select-by", choices=("nt-xent", "pair-mrr"), help="label-free held-out score that picks the "
                   "epoch: image-text NT-Xent (paper) or the own-pair Hamming MRR (contrastive)")
    r.add_argument("--intra-image", type=float, help="weight of the image-image NT-Xent term (paper 1, contrastive 0; 0 skips "
                   "the second image pass)")


def _encoders(args, model=None):
    """The encoders the options name; with ``model``, options left out follow what it was trained on."""
    from .core.model.encoders import (DEFAULT_IMAGE_ENCODER, DEFAULT_TEXT_POOLING, encoder_spec_from_identity,
                                image_pooling_from_identity, load_image_encoder, load_text_encoder,
                                pooling_from_identity)

    image_spec, text_spec, pooling = args.image_encoder, args.text_encoder, args.text_pooling
    image_pooling = getattr(args, "image_pooling", None)
    # A bundle's encoder identities are DuchModel attributes (not in meta).
    recorded = getattr(model, "text_encoder", None)
    if recorded and text_spec is None and not recorded.startswith("hf:"):
        text_spec = encoder_spec_from_identity(recorded)
    if recorded and pooling is None:
        pooling = pooling_from_identity(recorded)
    recorded = getattr(model, "image_encoder", None)
    if recorded and image_pooling is None and (image_spec or DEFAULT_IMAGE_ENCODER) == DEFAULT_IMAGE_ENCODER:
        image_pooling = image_pooling_from_identity(recorded)
    rt = getattr(args, "runtime", None)
    return (load_image_encoder(image_spec, args.device, runtime=rt, pooling=image_pooling),
            load_text_encoder(text_spec, args.device, pooling=pooling or DEFAULT_TEXT_POOLING, runtime=rt))


def _check_bits(bits: list[int]) -> None:
    for b in bits:
        check_bits(b, "--bits")


# --------------------------------------------------------------------------- evaluate

def cmd_evaluate(args) -> int:
    if args.external is not None:
        return _evaluate_external(args)
    from .core.research.benchmark import results_table, run_ucm_evaluation
    from .core.training.datasets import is_collection

    _check_bits(args.bits)
    args.epochs = recipe_epochs(args)
    roots = args.data or [DEFAULT_UCM]
    for r in roots:  # fail now, not after loading the encoders
        if not is_collection(r):
            raise UserError(f"{r} is not a captioned collection (captions.json and images/ expected)")
    queries = args.queries or Path("tests/data") / f"{Path(roots[0]).resolve().name}_queries.json"
    ienc, tenc = _encoders(args)
    command = "duch " + shlex.join(sys.argv[1:]) if "evaluate" in sys.argv[1:] else ""
    job = run_ucm_evaluation(roots[0], ienc, tenc, bits=args.bits, epochs=args.epochs, ablation=not args.no_ablation,
                             cache_dir=args.cache_dir, seed=args.seed, out_dir=args.out, command=command,
                             config=recipe_config(args), num_workers=args.workers, extra=roots[1:], views=recipe_views(args),
                             type_queries=queries if queries.is_file() else None)
    report = run_job(job)
    if args.json:
        print(report.to_json())
    else:
        print(results_table(report))
        print(f"\nwrote the {report.setup['name']} section of {args.out / 'results.md'} and its json/png files")
    return 0


def _evaluate_external(args) -> int:
    from .core.model.defaults import default_model_dir
    from .core.research.external import generalisation_set, load_labelled_folder, load_queries, report_markdown, \
        score_generalisation
    from .core.research.report import with_section
    from .core.model.bundle import DuchModel

    args.queries = args.queries or DEFAULT_QUERIES
    load_queries(args.queries, load_labelled_folder(args.external).class_names)  # fail before loading encoders
    model = DuchModel.load(args.model or default_model_dir())
    ienc, tenc = _encoders(args, model)
    for have, ident, what in ((ienc, model.image_encoder, "image"), (tenc, model.text_encoder, "text")):
        if ident and have.identity != ident:
            raise UserError(f"the model was trained on {what} features of {ident}, not {have.identity}: "
                            f"pass --{what}-encoder (and --{what}-pooling) accordingly")
    gs = run_job(generalisation_set(ienc, tenc, args.external, args.queries, args.cache_dir, args.workers))
    report = score_generalisation(model, gs, seed=args.seed)
    docs = Path(__file__).resolve().parents[1] / "docs"
    section = report_markdown(report, levers_link=Path(os.path.relpath(docs / "generalisation.md",
                                                                       args.out.resolve())).as_posix())
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(section)
    args.out.mkdir(parents=True, exist_ok=True)
    _write_json(args.out / "external.json", report.to_dict())
    md = args.out / "results.md"
    write_text_atomic(md, with_section(md.read_text(encoding="utf-8") if md.is_file() else "", section))
    print(f"wrote {args.out / 'external.json'} and the generalisation section of {args.out / 'results.md'}",
          file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- train

def _write_json(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, ensure_ascii=False, indent=0))


def cmd_train(args) -> int:
    _check_bits([args.bits])
    args.epochs = recipe_epochs(args)
    for folder in ([args.source] if args.source is not None else []) + list(getattr(args, "data", None) or []):
        if not Path(folder).is_dir():
            raise UserError(f"folder not found: {folder}")
    ienc, tenc = _encoders(args)
    summary = run_job(train_job(args, ienc, tenc))
    print(f"saved {summary['bundle']} ({summary['bits']} bits, trained on {summary['source']}; "
          f"best epoch {summary['best_epoch']}, held-out score {summary['best_val']:.3f})")
    m = summary.get("mAP@20")
    if m:
        print(f"{summary['benchmark']} mAP@20 (standard / paper-variant): I->T {m['i2t_standard']:.3f} / {m['i2t_paper']:.3f}, "
              f"T->I {m['t2i_standard']:.3f} / {m['t2i_paper']:.3f}")
    return 0
