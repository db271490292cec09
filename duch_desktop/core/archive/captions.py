"""The caption archive's texts: captions files, and the model bundle's caption bank.

A bundle's ``captions.json`` (its caption bank) is encoded once per model and cached in the user
cache dir, not once per index; the user's own captions (``duch index --captions FILE``) are
encoded by each run that is given them.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..files import atomic_path, user_cache
from ..jobs import Job, Progress


def caption_bank_dir() -> Path:
    """Where the codes of model bundles' caption banks are cached (the user cache dir)."""
    return user_cache("captions")


def caption_bank_codes(model, text_encoder, texts: list[str]) -> Job[np.ndarray]:
    """Packed codes of a model's caption bank, encoded once per model and cached, not once per index.

    Keyed by the model's fingerprint, its text encoder's identity and the texts; the runtime that
    encoded them does not matter (its features agree to 1e-4, see :mod:`runtime`).
    """
    key = hashlib.sha256(json.dumps([model.fingerprint, model.text_encoder, texts]).encode()).hexdigest()[:32]
    path = caption_bank_dir() / f"{key}.npy"
    try:
        codes = np.load(path, allow_pickle=False)
        if codes.shape == (len(texts), model.bits // 8) and codes.dtype == np.uint8:
            return codes
    except (OSError, ValueError, EOFError):
        pass  # not cached yet, or damaged: encode again
    codes = yield from encode_captions(model, text_encoder, texts)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, codes, allow_pickle=False)
    except OSError:
        pass  # a read-only cache only costs the encoding next time
    return codes


def encode_captions(model, text_encoder, texts: list[str]) -> Job[np.ndarray]:
    """Packed codes of ``texts``, 256 at a time, with a Progress after each block."""
    codes = [np.zeros((0, model.bits // 8), np.uint8)]
    for start in range(0, len(texts), 256):
        codes.append(model.text_codes(text_encoder.encode(texts[start:start + 256])))
        yield Progress("captions", min(len(texts), start + 256), len(texts), "encoding captions")
    return np.concatenate(codes)


def read_caption_texts(path: Path) -> list[str]:
    """Distinct caption texts of a captions file, in file order.

    Accepted: a JSON list of strings, or anything :func:`datasets.load_captions_file` reads
    (CSV ``file,caption``, JSON ``{file: [captions]}``, Karpathy-style JSON).
    """
    from ..training.datasets import clean_caption, load_captions_file

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig")) if path.suffix.lower() == ".json" else None
    except (OSError, ValueError):
        data = None  # let load_captions_file produce the plain-sentence error
    if isinstance(data, list) and all(isinstance(t, str) for t in data):
        texts = [clean_caption(t) for t in data]
    else:
        texts = [c for caps in load_captions_file(path).values() for c in caps]
    return list(dict.fromkeys(t for t in texts if t))
