"""Unsupervised DUCH training as a generator of progress events.

Input is pre-extracted features only (no labels): ``TrainingData`` holds V image views
per image (view 0 = the original tile, the rest augmented) and any number of text
features per image (its captions and augmented variants of them). Each step pairs, for
every image of the batch, two image views and two *different* texts of that image.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..model.bundle import DuchModel
from ..model.heads import Discriminator
from ..model.losses import critic_loss, duch_losses, nt_xent
from ..jobs import Job, Progress, UserError


@dataclass
class TrainConfig:
    """Training options; defaults are the paper's (shared/docs/duch-method.md) except ``aug_inter``."""

    bits: int = 64
    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 5e-4
    disc_lr: float = 1e-4
    disc_weight_decay: float = 1e-4
    temperature: float = 1.0
    w_inter: float = 1.0      # image <-> text NT-Xent
    w_intra_image: float = 1.0
    w_intra_text: float = 1.0
    alpha: float = 0.01       # adversarial
    beta: float = 0.001       # quantization
    gamma: float = 0.01       # bit balance
    gp_weight: float = 10.0
    text_noise: float = 0.0   # Gaussian noise on text features, in units of their per-dimension std
    # The same for image features: the only image augmentation of tiles extracted without
    # augmented views (a large collection such as RSICD), and a cheap extra one for the others.
    image_noise: float = 0.0
    hidden: int = 4096        # width of both heads' hidden layer
    # Probability that the image side of the image-text term is an augmented view rather than the
    # original tile. The paper: 0 (augmented views only enter the image-image term); 0.5 gives
    # back part of what the last1 text pooling costs on UCM (docs/generalisation.md).
    aug_inter: float = 0.5
    val_fraction: float = 0.1
    # The label-free score that picks the epoch: "nt_xent" (held-out image-text NT-Xent) or
    # "pair_mrr" (held-out own-pair Hamming MRR). At a low temperature the NT-Xent rises again while
    # the ranking still improves (overconfident mistakes weigh more), so it stops too early there.
    select: str = "nt_xent"
    seed: int = 42
    device: str | None = None


@dataclass
class TrainingData:
    """image_views: float32 (V, n, d_img); texts: float32 (m, d_txt); text_owner: int (m,) image index.

    A tile whose augmented views (rows 1..V-1) are NaN has only its original view: training then
    pairs that view with itself (image noise, when configured, makes the two differ).
    """

    image_views: np.ndarray
    texts: np.ndarray
    text_owner: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image_views.ndim == 2:
            self.image_views = self.image_views[None]
        n = self.image_views.shape[1]
        owners = np.asarray(self.text_owner)
        if len(owners) != len(self.texts):
            raise ValueError("texts and text_owner differ in length")
        if n < 4:
            raise UserError(f"training needs at least 4 tiles with captions, got {n}")
        if owners.min(initial=0) < 0 or owners.max(initial=0) >= n or len(np.unique(owners)) != n:
            raise UserError("every training tile needs at least one caption")
        self.text_owner = owners
        # texts_of[i] = indices into self.texts belonging to image i
        order = np.argsort(owners, kind="stable")
        counts = np.bincount(owners, minlength=n)
        self.texts_of = np.split(order, np.cumsum(counts)[:-1])
        self.has_views = (~np.isnan(self.image_views[1:, :, 0])).all(0) if len(self.image_views) > 1 \
            else np.zeros(n, dtype=bool)

    @property
    def n_images(self) -> int:
        return self.image_views.shape[1]

    def subset(self, idx: np.ndarray) -> "TrainingData":
        idx = np.asarray(idx)
        remap = -np.ones(self.n_images, dtype=np.int64)
        remap[idx] = np.arange(len(idx))
        keep = np.isin(self.text_owner, idx)
        return TrainingData(self.image_views[:, idx], self.texts[keep], remap[self.text_owner[keep]], self.meta)


@dataclass
class TrainResult:
    model: DuchModel
    history: list[dict[str, float]]
    best_epoch: int
    best_val: float


def _sample_pairs(data: TrainingData, batch: np.ndarray, rng: np.random.Generator, aug_inter: float = 0.0):
    """Per image: (view a, view b, text a, text b), b always a different view/text when one exists.

    View a (the one aligned with text a) is the original tile, or with probability ``aug_inter``
    an augmented view; view b is then any other view, the original included."""
    v = data.image_views.shape[0]
    view_a = np.zeros(len(batch), dtype=np.int64)
    view_b = rng.integers(1, v, size=len(batch)) if v > 1 else view_a
    if v > 1 and aug_inter > 0:
        swap = rng.random(len(batch)) < aug_inter
        view_a = np.where(swap, view_b, 0)
        other = rng.integers(0, v - 1, size=len(batch))       # any view but view_a
        view_b = np.where(swap, other + (other >= view_a), view_b)
    plain = ~data.has_views[batch]
    view_a[plain], view_b[plain] = 0, 0
    ta, tb = np.empty(len(batch), np.int64), np.empty(len(batch), np.int64)
    for j, i in enumerate(batch):
        own = data.texts_of[i]
        if len(own) > 1:
            a, b = rng.choice(len(own), size=2, replace=False)
        else:
            a = b = 0
        ta[j], tb[j] = own[a], own[b]
    return view_a, view_b, ta, tb


def pair_retrieval_score(model: DuchModel, data: TrainingData) -> float:
    """Label-free validation score: mean reciprocal Hamming rank of each image's own caption
    (I->T) and of each caption's own image (T->I), using one caption per image."""
    first = np.array([own[0] for own in data.texts_of])
    hi = np.sign(model.image_codes(data.image_views[0], packed=False))
    ht = np.sign(model.text_codes(data.texts[first], packed=False))
    d = (model.bits - hi @ ht.T) / 2  # Hamming distances, images x captions
    own = np.diag(d)[:, None]
    # rank = 1 + number of strictly closer items + half the ties (ties are a coin flip in practice)
    r_it = 1 + (d < own).sum(1) + 0.5 * ((d == own).sum(1) - 1)
    r_ti = 1 + (d.T < own).sum(1) + 0.5 * ((d.T == own).sum(1) - 1)
    return float(0.5 * (np.mean(1 / r_it) + np.mean(1 / r_ti)))


def val_nt_xent_score(model: DuchModel, data: TrainingData, temperature: float = 1.0) -> float:
    """Label-free validation score for choosing the epoch: minus the image<->text NT-Xent of
    held-out tiles (original view, first and last caption), on the real-valued codes.

    Unlike :func:`pair_retrieval_score` it is smooth (no Hamming ties), so on short codes it
    does not stop training at an early epoch whose ranks merely tie better.
    """
    hi = torch.from_numpy(model.image_codes(data.image_views[0], packed=False))
    losses = []
    for pick in (0, -1):
        own = np.array([t[pick] for t in data.texts_of])
        ht = torch.from_numpy(model.text_codes(data.texts[own], packed=False))
        losses.append(float(nt_xent(hi, ht, temperature)))
    return -float(np.mean(losses))


def _jitter(x: torch.Tensor, std: torch.Tensor | None) -> torch.Tensor:
    return x if std is None else x + torch.randn_like(x) * std


def _step_losses(model, critic, opt_d, cfg: TrainConfig, img, txt, bt, va, vb, ta, tb, img_std, txt_std):
    """One batch's loss terms (and the critic's step); the passes of terms weighed 0 are skipped."""
    i1 = model.image_head(_jitter(img[va, bt], img_std))
    t1 = model.text_head(_jitter(txt[ta], txt_std))
    i2 = model.image_head(_jitter(img[vb, bt], img_std)) if cfg.w_intra_image else None
    t2 = model.text_head(_jitter(txt[tb], txt_std)) if cfg.w_intra_text else None
    d_loss = torch.zeros(())
    if cfg.alpha:
        opt_d.zero_grad(set_to_none=True)
        d_loss = critic_loss(critic, i1, t1, cfg.gp_weight)
        d_loss.backward()
        opt_d.step()
    return duch_losses(critic, i1, i2, t1, t2, cfg.temperature, adversarial=bool(cfg.alpha)), d_loss


def train(data: TrainingData, config: TrainConfig, image_encoder: str, text_encoder: str) -> Job[TrainResult]:
    """Train DUCH heads on ``data``; yields a Progress per step, returns a :class:`TrainResult`.

    A ``val_fraction`` of the images is held out (never trained on) and the epoch with the
    best label-free :func:`val_nt_xent_score` on it is kept (:func:`pair_retrieval_score`
    is recorded beside it in the history).
    """
    cfg = config
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = torch.device(cfg.device) if cfg.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n = data.n_images
    perm = rng.permutation(n)
    n_val = int(round(n * cfg.val_fraction)) if cfg.val_fraction > 0 else 0
    if n_val and (n - n_val < 4 or n_val < 4):  # a held-out set too small to score on: train on all
        n_val = 0
    val, fit = (data.subset(np.sort(perm[:n_val])) if n_val else None), data.subset(np.sort(perm[n_val:]))

    model = DuchModel.new(data.image_views.shape[2], data.texts.shape[1], cfg.bits, image_encoder, text_encoder,
                          cfg.hidden, train_config=asdict(cfg), n_train_images=fit.n_images, n_val_images=n_val).to(device)
    critic = Discriminator(cfg.bits).to(device)
    heads = list(model.image_head.parameters()) + list(model.text_head.parameters())
    opt = torch.optim.Adam(heads, lr=cfg.lr, weight_decay=cfg.weight_decay)
    opt_d = torch.optim.Adam(critic.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.9), weight_decay=cfg.disc_weight_decay)

    img = torch.as_tensor(fit.image_views, dtype=torch.float32, device=device)
    txt = torch.as_tensor(fit.texts, dtype=torch.float32, device=device)
    # Free-form queries land near, not on, the training captions in the text encoder's space;
    # jittering the features during training teaches the heads that neighbourhood.
    txt_std = txt.std(dim=0, keepdim=True) * cfg.text_noise if cfg.text_noise > 0 else None
    img_std = img[0].std(dim=0, keepdim=True) * cfg.image_noise if cfg.image_noise > 0 else None
    bs = min(cfg.batch_size, fit.n_images)
    steps_per_epoch = max(1, fit.n_images // bs)  # drop the ragged tail: BatchNorm needs full-ish batches
    total = cfg.epochs * steps_per_epoch
    history: list[dict[str, float]] = []
    best_val, best_epoch, best_state = -float("inf"), 0, None
    step = 0
    for epoch in range(1, cfg.epochs + 1):
        model.image_head.train(), model.text_head.train(), critic.train()
        order = rng.permutation(fit.n_images)
        sums: dict[str, float] = {}
        for s in range(steps_per_epoch):
            batch = order[s * bs:(s + 1) * bs]
            pairs = (torch.as_tensor(x, device=device) for x in _sample_pairs(fit, batch, rng, cfg.aug_inter))
            losses, d_loss = _step_losses(model, critic, opt_d, cfg, img, txt, torch.as_tensor(batch, device=device),
                                          *pairs, img_std, txt_std)
            weights = {"inter": cfg.w_inter, "intra_image": cfg.w_intra_image, "intra_text": cfg.w_intra_text,
                       "adversarial": cfg.alpha, "quantization": cfg.beta, "balance": cfg.gamma}
            loss = sum(weights[k] * v for k, v in losses.items() if weights[k])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            vals = {k: float(v.detach()) for k, v in losses.items()}
            vals.update(total=float(loss.detach()), critic=float(d_loss.detach()))
            for k, v in vals.items():
                sums[k] = sums.get(k, 0.0) + v
            yield Progress("train", step, total, f"epoch {epoch}/{cfg.epochs}", {"epoch": epoch, "losses": vals})

        record = {k: v / steps_per_epoch for k, v in sums.items()}
        record["epoch"] = epoch
        held = val if val is not None else fit
        score = val_nt_xent_score(model, held, cfg.temperature)
        record["val"] = score
        record["val_pair_mrr"] = pair_retrieval_score(model, held)
        history.append(record)
        chosen = record["val_pair_mrr"] if cfg.select == "pair_mrr" else score
        if chosen > best_val:
            best_val, best_epoch = chosen, epoch
            best_state = (copy.deepcopy(model.image_head.state_dict()), copy.deepcopy(model.text_head.state_dict()))
        yield Progress("train", step, total, f"epoch {epoch}/{cfg.epochs}: held-out NT-Xent {-score:.3f}",
                       {"epoch": epoch, "val": score, "val_pair_mrr": record["val_pair_mrr"], "epoch_done": True})

    if best_state is not None:
        model.image_head.load_state_dict(best_state[0])
        model.text_head.load_state_dict(best_state[1])
    model.image_head.eval(), model.text_head.eval()
    model.meta.update(best_epoch=best_epoch, best_val=best_val,
                      val_metric=(("mean reciprocal Hamming rank of each tile's own caption and back"
                                   if cfg.select == "pair_mrr" else "minus image-text NT-Xent")
                                  + " (label-free) on " + ("held-out training tiles" if val else "training tiles")))
    return TrainResult(model.to("cpu"), history, best_epoch, best_val)
