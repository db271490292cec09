"""A model bundle loaded to make codes, without torch: the two hash heads in numpy.

An index, a search or the GUI only run the trained heads forward in eval mode, Linear -> BatchNorm
(running statistics) -> ReLU -> Linear -> tanh, which numpy does in a few lines once BatchNorm is
folded into the first Linear; so a search on the onnx runtime never imports torch (seconds of a
2 s budget). Training and research load the full :class:`bundle.DuchModel`; both read a bundle
with :func:`read_bundle` and make the same codes (real-valued outputs within 1e-5).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..files import file_sha256
from ..jobs import UserError

WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
HIDDEN = 4096
MAX_BITS = 4096  # a code of 512 bytes; model.json values beyond are damage, not a model
BN_EPS = 1e-5  # torch.nn.BatchNorm1d's default, which the heads use
CORE_META = ("bits", "hidden", "image_dim", "text_dim", "image_encoder", "text_encoder", "format")


def check_bits(bits: int, what: str = "bits") -> int:
    """``bits`` when it is a code length a model can have (a multiple of 8 from 8 to MAX_BITS);
    UserError naming ``what`` (the option or field the user set) otherwise."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not (0 < bits <= MAX_BITS and bits % 8 == 0):
        raise UserError(f"{what} must be a multiple of 8 from 8 to {MAX_BITS}, got {bits!r}")
    return bits


def _size(meta: dict, key: str, limit: int, default: int | None = None) -> int:
    """A whole number from model.json in 1..limit (a float like 8e8 or a bool is refused, not rounded)."""
    value = meta.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise ValueError(f"{key} must be a whole number from 1 to {limit}, got {value!r}")
    return value


def _check_shapes(directory: Path, tensors: dict, meta: dict) -> None:
    """UserError unless the weights file holds exactly the heads model.json describes (sizes are
    compared, nothing is allocated, so a model.json claiming huge sizes costs nothing)."""
    hidden, bits = meta["hidden"], meta["bits"]
    want = {}
    for head, dim in (("image_head", meta["image_dim"]), ("text_head", meta["text_dim"])):
        shapes = {"0.weight": (hidden, dim), "0.bias": (hidden,), "1.weight": (hidden,), "1.bias": (hidden,),
                  "1.running_mean": (hidden,), "1.running_var": (hidden,), "1.num_batches_tracked": (),
                  "3.weight": (bits, hidden), "3.bias": (bits,)}
        want.update({f"{head}.net.{k}": v for k, v in shapes.items()})
    got = {k: tuple(v.shape) for k, v in tensors.items() if k.split(".", 1)[0] in ("image_head", "text_head")}
    if got != want:
        bad = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))[0]
        raise UserError(f"model bundle {directory}: weights do not match model.json ({bad}: file "
                        f"{list(got.get(bad, ()))}, model.json {list(want.get(bad, ()))})")


def read_bundle(directory: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(meta, float32 tensors)`` of the bundle at ``directory``, verified; :class:`UserError` when
    a file is missing, unreadable, inconsistent or does not match its recorded checksum."""
    from safetensors.numpy import load_file

    directory = Path(directory)
    meta_path, weights = directory / META_FILE, directory / WEIGHTS_FILE
    for f in (meta_path, weights):
        if not f.is_file():
            raise UserError(f"model bundle {directory} is incomplete: {f.name} is missing")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        meta.update(bits=_size(meta, "bits", MAX_BITS), hidden=_size(meta, "hidden", 1 << 16, HIDDEN),
                    image_dim=_size(meta, "image_dim", 1 << 16), text_dim=_size(meta, "text_dim", 1 << 16))
        if meta["bits"] % 8 or not all(isinstance(meta.get(k), str) and meta[k] for k in ("image_encoder", "text_encoder")):
            raise ValueError("bits must be a multiple of 8 and both encoders must be named")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"model bundle {directory}: {META_FILE} is unreadable ({e})") from e
    expected = meta.get("weights_sha256")
    if expected and file_sha256(weights) != expected:
        raise UserError(f"model bundle {directory}: {WEIGHTS_FILE} is corrupt (checksum mismatch)")
    try:
        tensors = load_file(str(weights))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for truncated files
        raise UserError(f"model bundle {directory}: {WEIGHTS_FILE} is unreadable ({e})") from e
    _check_shapes(directory, tensors, meta)
    return meta, {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in tensors.items()}


class _Head:
    """One hash head in eval mode, BatchNorm folded into the first Linear."""

    def __init__(self, t: dict[str, np.ndarray], prefix: str):
        def get(name: str) -> np.ndarray:
            return t[f"{prefix}.net.{name}"]

        scale = get("1.weight") / np.sqrt(get("1.running_var") + BN_EPS)
        self.w1 = np.ascontiguousarray((get("0.weight") * scale[:, None]).T)
        self.b1 = (get("0.bias") - get("1.running_mean")) * scale + get("1.bias")
        self.w2, self.b2 = np.ascontiguousarray(get("3.weight").T), get("3.bias")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.tanh(np.maximum(x @ self.w1 + self.b1, 0) @ self.w2 + self.b2)


STATE_KEYS = ("0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
              "1.num_batches_tracked", "3.weight", "3.bias")  # a head's state_dict, in its order


def _state_digest(tensors: dict[str, np.ndarray]) -> str:
    """``bundle.DuchModel``'s fingerprint of a bundle that records no checksum (its weights' digest)."""
    h = hashlib.sha256()
    for head in ("image_head", "text_head"):
        for key in STATE_KEYS:
            h.update(f"net.{key}".encode())
            h.update(np.asarray(tensors[f"{head}.net.{key}"], dtype=np.float32).tobytes())
    return h.hexdigest()


class InferenceModel:
    """What :class:`bundle.DuchModel` offers an index: identities, sizes, fingerprint and codes."""

    def __init__(self, meta: dict[str, Any], tensors: dict[str, np.ndarray], directory: Path):
        try:
            self.image_head, self.text_head = _Head(tensors, "image_head"), _Head(tensors, "text_head")
        except KeyError as e:
            raise UserError(f"model bundle {directory}: weights do not match model.json (no {e})") from e
        self.bits, self.image_dim, self.text_dim = meta["bits"], meta["image_dim"], meta["text_dim"]
        if self.image_head.w1.shape[0] != self.image_dim or self.text_head.w1.shape[0] != self.text_dim \
                or self.image_head.w2.shape[1] != self.bits or self.text_head.w2.shape[1] != self.bits:
            raise UserError(f"model bundle {directory}: weights do not match model.json")
        self.image_encoder, self.text_encoder = meta["image_encoder"], meta["text_encoder"]
        self.meta = {k: v for k, v in meta.items() if k not in CORE_META}
        self.fingerprint = (meta.get("weights_sha256") or _state_digest(tensors))[:16]

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "InferenceModel":
        """The bundle at ``directory`` (see :func:`read_bundle`)."""
        meta, tensors = read_bundle(directory)
        return cls(meta, tensors, Path(directory))

    def _codes(self, head: _Head, feats: np.ndarray, packed: bool, batch: int = 4096) -> np.ndarray:
        feats = np.asarray(feats, dtype=np.float32)
        h = np.concatenate([head(feats[s:s + batch]) for s in range(0, len(feats), batch)]) if len(feats) \
            else np.zeros((0, self.bits), np.float32)
        return np.packbits(h > 0, axis=1) if packed else h

    def image_codes(self, feats: np.ndarray, packed: bool = True) -> np.ndarray:
        """Image features (n, image_dim) -> packed uint8 codes (or real-valued (n, bits))."""
        return self._codes(self.image_head, feats, packed)

    def text_codes(self, feats: np.ndarray, packed: bool = True) -> np.ndarray:
        """Text features (n, text_dim) -> packed uint8 codes (or real-valued (n, bits))."""
        return self._codes(self.text_head, feats, packed)
