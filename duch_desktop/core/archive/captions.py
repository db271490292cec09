"""The caption archive's texts: captions files, and the model bundle's caption bank.

A bundle's ``captions.json`` (its caption bank) is encoded once per model (by ``duch train``, into
the bundle; else by the first index, into the user cache dir), not once per index; the user's own
captions (``duch index --captions FILE``) are encoded by each run that is given them.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..files import user_cache
from ..jobs import Job
from ..model.caption_bank import bank_key, bundle_codes_path, encode_texts, load_codes, save_codes


def caption_bank_dir() -> Path:
    """Where the codes of model bundles' caption banks are cached (the user cache dir)."""
    return user_cache("captions")


def caption_bank_codes(model, text_encoder, texts: list[str], bundle: Path | None = None) -> Job[np.ndarray]:
    """Packed codes of a model's caption bank: from the bundle (``duch train`` puts them there), else
    from the user cache, else encoded once and cached there (not once per index).

    The key (:func:`caption_bank.bank_key`) names the model and the texts; the runtime that encoded
    them does not matter (its features agree to 1e-4, see :mod:`runtime`).
    """
    if bundle is not None:
        codes = load_codes(bundle_codes_path(bundle, model, texts), model, len(texts))
        if codes is not None:
            return codes
    path = caption_bank_dir() / f"{bank_key(model, texts)}.npy"
    codes = load_codes(path, model, len(texts))
    if codes is not None:
        return codes
    codes = yield from encode_texts(model, text_encoder, texts)
    try:
        save_codes(path, codes)
    except OSError:
        pass  # a read-only cache only costs the encoding next time
    return codes


def read_caption_texts(path: Path) -> list[str]:
    """Distinct caption texts of a captions file, in file order.

    Accepted: a JSON list of strings, or anything :func:`datasets.load_captions_file` reads
    (CSV ``file,caption``, JSON ``{file: [captions]}``, Karpathy-style JSON).
    """
    from ..training.datasets import distinct_captions, load_captions_file

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig")) if path.suffix.lower() == ".json" else None
    except (OSError, ValueError):
        data = None  # let load_captions_file produce the plain-sentence error
    if isinstance(data, list) and all(isinstance(t, str) for t in data):
        return distinct_captions(data)
    return distinct_captions(c for caps in load_captions_file(path).values() for c in caps)
