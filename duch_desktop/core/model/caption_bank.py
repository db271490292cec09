"""Codes of a model's caption bank (its bundle's ``captions.json``), for image -> captions.

The bank is the same for every index a model builds, so its codes are made once: by ``duch train``
into the bundle (``captions-<key>.npy``, read-only data like the weights), else by the first index
into the user cache (:mod:`archive.captions`). The key names the model's fingerprint, its text
encoder and the exact texts, so a file made for other texts or another model is never used.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..files import atomic_path
from ..jobs import Job, Progress

CODES_FILE = "captions-{key}.npy"


def bank_key(model, texts: list[str]) -> str:
    """What a bank's codes depend on: the model (fingerprint, text encoder) and the texts."""
    return hashlib.sha256(json.dumps([model.fingerprint, model.text_encoder, texts]).encode()).hexdigest()[:32]


def load_codes(path: Path, model, n: int) -> np.ndarray | None:
    """Packed codes of ``n`` texts stored at ``path``; None when missing, damaged or of another shape."""
    try:
        codes = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    return codes if codes.shape == (n, model.bits // 8) and codes.dtype == np.uint8 else None


def save_codes(path: Path, codes: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(codes, np.uint8), allow_pickle=False)


def encode_texts(model, text_encoder, texts: list[str]) -> Job[np.ndarray]:
    """Packed codes of ``texts``, 256 at a time, with a Progress("captions") after each block."""
    codes = [np.zeros((0, model.bits // 8), np.uint8)]
    for start in range(0, len(texts), 256):
        codes.append(model.text_codes(text_encoder.encode(texts[start:start + 256])))
        yield Progress("captions", min(len(texts), start + 256), len(texts), "encoding captions")
    return np.concatenate(codes)


def bundle_codes_path(bundle: Path, model, texts: list[str]) -> Path:
    return Path(bundle) / CODES_FILE.format(key=bank_key(model, texts))


def write_bundle_codes(bundle: Path, model, text_encoder, texts: list[str]) -> Job[Path]:
    """Encode ``texts`` (the bundle's caption bank, as an index reads it) into the bundle. ``model``
    must be the bundle as loaded from disk (its stored float16 weights make the codes)."""
    for old in Path(bundle).glob(CODES_FILE.format(key="*")):
        old.unlink()
    codes = yield from encode_texts(model, text_encoder, texts)
    path = bundle_codes_path(bundle, model, texts)
    save_codes(path, codes)
    return path
