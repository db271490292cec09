"""The trained DUCH model as it is used and shipped: features -> packed binary codes, and the bundle.

A bundle is a directory holding ``model.safetensors`` (weights, fp32 or fp16) and
``model.json`` (bits, dims, encoder identities, training config, metrics and the
SHA-256 of the weights file). Loading never unpickles anything.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..files import atomic_path, file_sha256, write_text_atomic
from ..jobs import UserError
from .heads import HIDDEN, HashHead

MAX_BITS = 4096  # a code of 512 bytes; model.json values beyond are damage, not a model
BUNDLE_FORMAT = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"


def pack_codes(h: np.ndarray | torch.Tensor) -> np.ndarray:
    """Real-valued codes (n, bits) -> binary codes packed as uint8 (n, bits/8); bit = h > 0."""
    if isinstance(h, torch.Tensor):
        h = h.detach().float().cpu().numpy()
    return np.packbits(np.asarray(h) > 0, axis=1)


def unpack_codes(packed: np.ndarray, bits: int) -> np.ndarray:
    """Packed uint8 codes -> {-1, +1} float32 (n, bits)."""
    return np.unpackbits(packed, axis=1, count=bits).astype(np.float32) * 2 - 1


@dataclass
class DuchModel:
    """The two trained heads plus everything needed to use them again."""

    image_head: HashHead
    text_head: HashHead
    bits: int
    image_encoder: str
    text_encoder: str
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def new(cls, image_dim: int, text_dim: int, bits: int, image_encoder: str, text_encoder: str,
            hidden: int = HIDDEN, **meta: Any) -> "DuchModel":
        if not (0 < bits <= MAX_BITS and bits % 8 == 0):
            raise UserError(f"bits must be a multiple of 8 from 8 to {MAX_BITS}, got {bits}")
        return cls(HashHead(image_dim, bits, hidden), HashHead(text_dim, bits, hidden), bits,
                   image_encoder, text_encoder, dict(meta))

    @property
    def image_dim(self) -> int:
        return self.image_head.net[0].in_features

    @property
    def text_dim(self) -> int:
        return self.text_head.net[0].in_features

    @property
    def fingerprint(self) -> str:
        """Identity of the codes this model makes: indexes built with another fingerprint are stale."""
        return self.meta.get("weights_sha256", "")[:16] or _state_digest(self)[:16]

    def to(self, device: torch.device | str) -> "DuchModel":
        self.image_head.to(device)
        self.text_head.to(device)
        return self

    @torch.inference_mode()
    def _hash(self, head: HashHead, feats: np.ndarray, batch: int = 4096) -> np.ndarray:
        head.eval()
        p = next(head.parameters())
        out = []
        for s in range(0, len(feats), batch):
            x = torch.as_tensor(np.asarray(feats[s:s + batch]), dtype=p.dtype, device=p.device)
            out.append(head(x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.bits), np.float32)

    def image_codes(self, feats: np.ndarray, packed: bool = True) -> np.ndarray:
        """Image features (n, image_dim) -> packed uint8 codes (or real-valued (n, bits))."""
        h = self._hash(self.image_head, feats)
        return pack_codes(h) if packed else h

    def text_codes(self, feats: np.ndarray, packed: bool = True) -> np.ndarray:
        """Text features (n, text_dim) -> packed uint8 codes (or real-valued (n, bits))."""
        h = self._hash(self.text_head, feats)
        return pack_codes(h) if packed else h

    # ---------------------------------------------------------------- bundle I/O
    def save(self, directory: str | os.PathLike, fp16: bool = False) -> Path:
        """Write the bundle atomically into ``directory``; returns the directory."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for name, head in (("image_head", self.image_head), ("text_head", self.text_head)):
            for k, v in head.state_dict().items():
                v = v.detach().cpu().contiguous()
                if fp16 and v.is_floating_point():
                    v = v.half()
                tensors[f"{name}.{k}"] = v
        with atomic_path(directory / WEIGHTS_FILE) as tmp:
            save_file(tensors, tmp)
            digest = file_sha256(Path(tmp))
        self.meta["weights_sha256"] = digest
        meta = {
            "format": BUNDLE_FORMAT, "bits": self.bits, "hidden": self.image_head.net[0].out_features,
            "image_dim": self.image_dim, "text_dim": self.text_dim,
            "image_encoder": self.image_encoder, "text_encoder": self.text_encoder, **self.meta,
        }
        write_text_atomic(directory / META_FILE, json.dumps(meta, indent=2, sort_keys=True, default=str))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> "DuchModel":
        """Load and verify a bundle; a missing or corrupt file raises :class:`UserError`."""
        from safetensors.torch import load_file

        directory = Path(directory)
        meta_path, weights = directory / META_FILE, directory / WEIGHTS_FILE
        for f in (meta_path, weights):
            if not f.is_file():
                raise UserError(f"model bundle {directory} is incomplete: {f.name} is missing")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            bits, hidden = _size(meta, "bits", MAX_BITS), _size(meta, "hidden", 1 << 16, HIDDEN)
            image_dim, text_dim = _size(meta, "image_dim", 1 << 16), _size(meta, "text_dim", 1 << 16)
            if bits % 8 or not all(isinstance(meta.get(k), str) and meta[k] for k in ("image_encoder", "text_encoder")):
                raise ValueError("bits must be a multiple of 8 and both encoders must be named")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise UserError(f"model bundle {directory}: {META_FILE} is unreadable ({e})") from e
        expected = meta.get("weights_sha256")
        if expected and file_sha256(weights) != expected:
            raise UserError(f"model bundle {directory}: {WEIGHTS_FILE} is corrupt (checksum mismatch)")
        try:
            tensors = load_file(str(weights))
        except Exception as e:  # safetensors raises its own error types for truncated files
            raise UserError(f"model bundle {directory}: {WEIGHTS_FILE} is unreadable ({e})") from e
        _check_shapes(directory, tensors, image_dim, text_dim, bits, hidden)
        core = {"bits", "hidden", "image_dim", "text_dim", "image_encoder", "text_encoder", "format"}
        model = cls.new(image_dim, text_dim, bits, meta["image_encoder"], meta["text_encoder"], hidden,
                        **{k: v for k, v in meta.items() if k not in core})
        for name, head in (("image_head", model.image_head), ("text_head", model.text_head)):
            prefix = name + "."
            sd = {k[len(prefix):]: v.float() if v.is_floating_point() else v
                  for k, v in tensors.items() if k.startswith(prefix)}
            try:
                head.load_state_dict(sd)
            except RuntimeError as e:
                raise UserError(f"model bundle {directory}: weights do not match model.json ({e})") from e
            head.eval()
        return model.to(device)


def _size(meta: dict, key: str, limit: int, default: int | None = None) -> int:
    """A whole number from model.json in 1..limit (a float like 8e8 or a bool is refused, not rounded)."""
    value = meta.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise ValueError(f"{key} must be a whole number from 1 to {limit}, got {value!r}")
    return value


def _check_shapes(directory: Path, tensors: dict, image_dim: int, text_dim: int, bits: int, hidden: int) -> None:
    """UserError unless the weights file holds exactly the heads model.json describes.

    Checked on the meta device, so a model.json that claims huge sizes allocates nothing.
    """
    with torch.device("meta"):
        heads = {"image_head": HashHead(image_dim, bits, hidden), "text_head": HashHead(text_dim, bits, hidden)}
    want = {f"{name}.{k}": tuple(v.shape) for name, head in heads.items() for k, v in head.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items() if k.split(".", 1)[0] in heads}
    if got != want:
        bad = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))[0]
        raise UserError(f"model bundle {directory}: weights do not match model.json ({bad}: file "
                        f"{list(got.get(bad, ()))}, model.json {list(want.get(bad, ()))})")


def _state_digest(model: DuchModel) -> str:
    h = hashlib.sha256()
    for head in (model.image_head, model.text_head):
        for k, v in head.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()
