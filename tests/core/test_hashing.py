"""The DUCH model: losses, heads, codes and the bundle format."""
import math

import numpy as np
import pytest
import torch

from duch_desktop.core.model.bundle import DuchModel, pack_codes, unpack_codes
from duch_desktop.core.model.heads import Discriminator, HashHead
from duch_desktop.core.model.losses import (adversarial_loss, bit_balance_loss, critic_loss, gradient_penalty, nt_xent,
                                            quantization_loss)
from duch_desktop.core.jobs import UserError


def test_head_shape_and_range():
    head = HashHead(12, 16, hidden=32)
    out = head(torch.randn(5, 12))
    assert out.shape == (5, 16)
    assert out.abs().max() <= 1


def test_nt_xent_known_value():
    # Two orthogonal pairs, perfect alignment, tau = 1: every row has its positive at cos 1
    # and three negatives at cos 0 (its own twin is masked), so
    # loss = -log(e / (e + 2)) for each of the 4 rows.
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = -math.log(math.e / (math.e + 2))
    assert nt_xent(a, a.clone(), 1.0).item() == pytest.approx(expected, rel=1e-5)


def test_nt_xent_prefers_aligned_views_and_temperature_sharpens():
    torch.manual_seed(0)
    a = torch.randn(16, 8)
    aligned = nt_xent(a, a + 0.01 * torch.randn_like(a))
    shuffled = nt_xent(a, a[torch.randperm(16)])
    assert aligned < shuffled
    assert nt_xent(a, a.clone(), 0.1) < nt_xent(a, a.clone(), 1.0)


def test_nt_xent_gradients_flow():
    a = torch.randn(8, 4, requires_grad=True)
    b = torch.randn(8, 4, requires_grad=True)
    nt_xent(a, b).backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


def test_quantization_loss_values():
    h = torch.tensor([[1.0, -1.0], [0.5, -0.5]])
    # sign targets: [[1,-1],[1,-1]] -> squared gaps 0,0,0.25,0.25 -> mean 0.125
    assert quantization_loss(h).item() == pytest.approx(0.125)
    assert quantization_loss(torch.sign(h)).item() == 0


def test_bit_balance_loss_zero_when_balanced_and_pushes_towards_balance():
    balanced = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    assert bit_balance_loss(balanced).item() == 0
    assert bit_balance_loss(torch.ones(4, 2)).item() == pytest.approx(1.0)
    # gradient descent on the balance loss alone makes an all-positive bit balanced
    h = torch.full((10, 1), 0.5) + torch.linspace(-0.1, 0.1, 10)[:, None]
    h.requires_grad_(True)
    opt = torch.optim.SGD([h], lr=1.0)
    for _ in range(50):
        opt.zero_grad()
        bit_balance_loss(h).backward()
        opt.step()
    assert abs(h.mean().item()) < 1e-3


def test_adversarial_loss_moves_both_modalities():
    torch.manual_seed(0)
    critic = Discriminator(8)
    img = torch.randn(16, 8, requires_grad=True)
    txt = torch.randn(16, 8, requires_grad=True)
    adversarial_loss(critic, img, txt).backward()
    # the paper's public code only moved the text head; ours must move both
    assert img.grad.abs().sum() > 0 and txt.grad.abs().sum() > 0


def test_critic_loss_detaches_codes_and_penalty_is_positive():
    torch.manual_seed(0)
    critic = Discriminator(8)
    img = torch.randn(16, 8, requires_grad=True)
    txt = torch.randn(16, 8, requires_grad=True)
    loss = critic_loss(critic, img, txt)
    loss.backward()
    assert img.grad is None and txt.grad is None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in critic.parameters())
    assert gradient_penalty(critic, img.detach(), txt.detach()).item() >= 0


def test_critic_learns_to_separate_modalities():
    torch.manual_seed(0)
    critic = Discriminator(4)
    opt = torch.optim.Adam(critic.parameters(), lr=1e-2, betas=(0.5, 0.9))
    img, txt = torch.randn(64, 4) + 2, torch.randn(64, 4) - 2
    for _ in range(100):
        opt.zero_grad()
        critic_loss(critic, img, txt).backward()
        opt.step()
    critic.eval()
    assert critic(img).mean() > critic(txt).mean()


def test_pack_unpack_roundtrip():
    h = np.array([[0.3, -0.2, 0.9, -1, 0.1, 0.1, -0.1, 0.5, -0.5, 0.2, 0.2, 0.2, -0.9, 0.9, 0.1, -0.1]])
    packed = pack_codes(h)
    assert packed.shape == (1, 2) and packed.dtype == np.uint8
    np.testing.assert_array_equal(unpack_codes(packed, 16), np.sign(h))


def test_bundle_roundtrip_fp16_and_integrity(tmp_path):
    model = DuchModel.new(12, 6, 16, "img-enc", "txt-enc", hidden=32, note="x")
    feats = np.random.default_rng(0).normal(size=(5, 12)).astype(np.float32)
    model.image_head.eval()
    before = model.image_codes(feats)
    model.save(tmp_path / "b", fp16=True)
    loaded = DuchModel.load(tmp_path / "b")
    assert (loaded.bits, loaded.image_dim, loaded.text_dim) == (16, 12, 6)
    assert loaded.image_encoder == "img-enc" and loaded.meta["note"] == "x"
    assert loaded.fingerprint == model.fingerprint
    # fp16 storage may flip a bit that sits at ~0; nearly all must survive
    assert (np.unpackbits(before) == np.unpackbits(loaded.image_codes(feats))).mean() > 0.95

    weights = tmp_path / "b" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match="corrupt"):
        DuchModel.load(tmp_path / "b")
    weights.unlink()
    with pytest.raises(UserError, match="missing"):
        DuchModel.load(tmp_path / "b")


def test_bits_must_be_byte_multiple():
    with pytest.raises(UserError):
        DuchModel.new(4, 4, 12, "a", "b")


def test_check_bits_is_the_one_code_length_rule():
    from duch_desktop.core.model.inference import MAX_BITS, check_bits

    assert check_bits(64) == 64 and check_bits(MAX_BITS) == MAX_BITS
    for bad in (0, -64, 12, MAX_BITS + 8, True, 64.0):
        with pytest.raises(UserError, match="--bits must be a multiple of 8"):
            check_bits(bad, "--bits")
    with pytest.raises(UserError, match="multiple of 8"):
        DuchModel.new(8, 8, 12, "img", "txt")
