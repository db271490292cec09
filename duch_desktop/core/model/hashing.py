"""DUCH hashing module: per-modality heads, discriminator, the losses, and the model bundle.

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
import torch.nn.functional as F
from torch import nn

from ..files import atomic_path, write_text_atomic
from ..jobs import UserError

HIDDEN = 4096
BUNDLE_FORMAT = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"


class HashHead(nn.Module):
    """Linear(d, 4096) -> BatchNorm -> ReLU -> Linear(4096, bits) -> tanh."""

    def __init__(self, in_dim: int, bits: int, hidden: int = HIDDEN):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, bits), nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Discriminator(nn.Module):
    """Critic telling image codes from text codes: Linear(K, 2K) -> BN -> ReLU -> Linear(2K, 1)."""

    def __init__(self, bits: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(bits, 2 * bits), nn.BatchNorm1d(2 * bits), nn.ReLU(inplace=True),
                                 nn.Linear(2 * bits, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


# --------------------------------------------------------------------------- losses

def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """NT-Xent (SimCLR) between two aligned views: row i of ``a`` and of ``b`` are positives.

    The 2N rows are cosine-compared; each row's positive is its partner, the other
    2N - 2 rows are its negatives. Mean over the 2N rows.
    """
    n = a.shape[0]
    z = F.normalize(torch.cat([a, b], dim=0), dim=1)
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def quantization_loss(codes: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared gap between real-valued codes and binary targets (default: their own sign)."""
    if target is None:
        target = torch.sign(codes).detach()
    return (target - codes).pow(2).mean()


def bit_balance_loss(codes: torch.Tensor) -> torch.Tensor:
    """Mean over bits of (mean over the batch of that bit)^2: zero when each bit is +1 for half the batch."""
    return codes.mean(dim=0).pow(2).mean()


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: (||grad critic(x_hat)|| - 1)^2 on random interpolates of the two code sets."""
    eps = torch.rand(real.shape[0], 1, device=real.device)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    grad, = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.norm(2, dim=1) - 1).pow(2).mean()


def critic_loss(critic: nn.Module, img_codes: torch.Tensor, txt_codes: torch.Tensor,
                gp_weight: float = 10.0) -> torch.Tensor:
    """Loss the discriminator minimises: score image codes high, text codes low (+ penalty)."""
    img_codes, txt_codes = img_codes.detach(), txt_codes.detach()
    return (critic(txt_codes).mean() - critic(img_codes).mean()
            + gp_weight * gradient_penalty(critic, img_codes, txt_codes))


def adversarial_loss(critic: nn.Module, img_codes: torch.Tensor, txt_codes: torch.Tensor) -> torch.Tensor:
    """Loss both heads minimise to fool the critic: the negated Wasserstein estimate.

    Its gradient moves image codes towards what the critic calls text *and* text codes
    towards what it calls image; the paper's public code only moved the text side.
    """
    return critic(img_codes).mean() - critic(txt_codes).mean()


# --------------------------------------------------------------------------- model + codes

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
        if bits % 8:
            raise UserError(f"bits must be a multiple of 8, got {bits}")
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
            digest = _file_sha256(Path(tmp))
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
            meta = json.loads(meta_path.read_text())
            bits, hidden = int(meta["bits"]), int(meta.get("hidden", HIDDEN))
            image_dim, text_dim = int(meta["image_dim"]), int(meta["text_dim"])
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"model bundle {directory}: {META_FILE} is unreadable ({e})") from e
        expected = meta.get("weights_sha256")
        if expected and _file_sha256(weights) != expected:
            raise UserError(f"model bundle {directory}: {WEIGHTS_FILE} is corrupt (checksum mismatch)")
        try:
            tensors = load_file(str(weights))
        except Exception as e:  # safetensors raises its own error types for truncated files
            raise UserError(f"model bundle {directory}: {WEIGHTS_FILE} is unreadable ({e})") from e
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


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _state_digest(model: DuchModel) -> str:
    h = hashlib.sha256()
    for head in (model.image_head, model.text_head):
        for k, v in head.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()


