"""The trainable networks of DUCH: one hash head per modality, and the critic of the adversarial term.

The heads map frozen encoder features to ``bits`` real values in (-1, 1) (the code is their
sign, see :mod:`bundle`); the critic is only used while training (see :mod:`losses`).
"""
from __future__ import annotations

import torch
from torch import nn

from .inference import HIDDEN  # a bundle without it in model.json was made with this


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
