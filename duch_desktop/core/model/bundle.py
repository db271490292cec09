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
from .inference import CORE_META, META_FILE, WEIGHTS_FILE, check_bits, read_bundle

BUNDLE_FORMAT = 1


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
        check_bits(bits)
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
        """Load and verify a bundle (:func:`inference.read_bundle`); problems raise :class:`UserError`."""
        meta, tensors = read_bundle(directory)
        model = cls.new(meta["image_dim"], meta["text_dim"], meta["bits"], meta["image_encoder"], meta["text_encoder"],
                        meta["hidden"], **{k: v for k, v in meta.items() if k not in CORE_META})
        for name, head in (("image_head", model.image_head), ("text_head", model.text_head)):
            prefix = name + "."
            sd = {k[len(prefix):]: torch.from_numpy(v) for k, v in tensors.items() if k.startswith(prefix)}
            try:
                head.load_state_dict(sd)
            except RuntimeError as e:
                raise UserError(f"model bundle {directory}: weights do not match model.json ({e})") from e
            head.eval()
        return model.to(device)


def _state_digest(model: DuchModel) -> str:
    h = hashlib.sha256()
    for head in (model.image_head, model.text_head):
        for k, v in head.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()
