"""The DUCH training objective (Mikriukov, Ravanbakhsh & Demir 2022): every loss term, and
:func:`duch_losses`, the terms of one batch as :func:`training.trainer.train` weighs and sums them.

- NT-Xent inter-modal (image <-> text) and intra-modal (view <-> view, both modalities);
- a WGAN-GP adversarial term (:func:`critic_loss` trains the critic, :func:`adversarial_loss`
  moves both heads);
- quantization (codes near +-1) and bit balance (each bit +1 for half the batch).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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


def duch_losses(critic: nn.Module, i1: torch.Tensor, i2: torch.Tensor | None, t1: torch.Tensor,
                t2: torch.Tensor | None, temperature: float = 1.0, adversarial: bool = True) -> dict[str, torch.Tensor]:
    """The heads' loss terms of one batch: two image views ``i1``, ``i2`` and two texts ``t1``, ``t2``
    (real-valued codes, row i = the same tile). The trainer weighs them with its config.

    A second view left out (None) or ``adversarial`` False gives a zero term: a trainer that weighs
    a term 0 need not pay for its head pass (what a step costs on a CPU) or the critic."""
    codes = [h for h in (i1, i2, t1, t2) if h is not None]
    target = torch.sign(sum(h.detach() for h in codes) / len(codes))  # one binary code per image for all its views
    zero = i1.new_zeros(())
    both = lambda a, b: torch.cat([a, b]) if b is not None else a  # noqa: E731
    return {
        "inter": nt_xent(i1, t1, temperature),
        "intra_image": nt_xent(i1, i2, temperature) if i2 is not None else zero,
        "intra_text": nt_xent(t1, t2, temperature) if t2 is not None else zero,
        "adversarial": adversarial_loss(critic, both(i1, i2), both(t1, t2)) if adversarial else zero,
        "quantization": sum(quantization_loss(h, target) for h in codes) / len(codes),
        "balance": sum(bit_balance_loss(h) for h in codes) / len(codes),
    }
