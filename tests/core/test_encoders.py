"""Encoders: mask-aware last-4 / last-layer pooling, pooling in the identity, offline loading of local HF directories, shapes."""
import numpy as np
import pytest
import torch

from duch_desktop.core.model import encoders
from duch_desktop.core.jobs import UserError

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "dense", "residential", "area", "near", "highway",
         "many", "planes", "airport", "storage", "tanks", "."]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from transformers import BertConfig, BertModel, BertTokenizer

    path = tmp_path_factory.mktemp("tiny-bert")
    (path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    BertTokenizer(str(path / "vocab.txt")).save_pretrained(path)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                         intermediate_size=37, max_position_embeddings=128)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_resnet(tmp_path_factory):
    from transformers import ResNetConfig, ResNetModel

    path = tmp_path_factory.mktemp("tiny-resnet")
    torch.manual_seed(0)
    ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")).save_pretrained(path)
    return path


def test_pooling_ignores_padding():
    torch.manual_seed(0)
    layers = [torch.randn(1, 5, 3) for _ in range(6)]
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    pooled = encoders.pool_last4_mean(layers, mask)
    expected = sum(layers[-4:])[0, :3].mean(0)
    torch.testing.assert_close(pooled[0], expected)
    # garbage in the padded positions must not change anything
    noisy = [t.clone() for t in layers]
    for t in noisy:
        t[0, 3:] = 100
    torch.testing.assert_close(encoders.pool_last4_mean(noisy, mask), pooled)


def test_last_layer_pooling_uses_the_last_layer_only_and_ignores_padding():
    torch.manual_seed(1)
    layers = [torch.randn(2, 4, 3) for _ in range(5)]
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    pooled = encoders.pool_last1_mean(layers, mask)
    torch.testing.assert_close(pooled[0], layers[-1][0, :2].mean(0))
    torch.testing.assert_close(pooled[1], layers[-1][1].mean(0))
    changed = [t.clone() for t in layers]
    changed[-2] += 5  # an earlier layer: no effect
    changed[-1][0, 2:] = 100  # padding: no effect
    torch.testing.assert_close(encoders.pool_last1_mean(changed, mask), pooled)


def test_pooling_is_recorded_in_the_identity(tiny_bert):
    paper = encoders.load_text_encoder(str(tiny_bert), device="cpu", pooling="last4")
    last = encoders.load_text_encoder(str(tiny_bert), device="cpu", pooling="last1")
    # the paper's pooling adds no tag: identities, caches and bundles from before the option stay valid
    assert ";pool=" not in paper.identity and last.identity == paper.identity + ";pool=last1"
    assert encoders.pooling_from_identity(paper.identity) == "last4"
    assert encoders.pooling_from_identity(last.identity) == "last1"
    assert encoders.encoder_spec_from_identity("all-MiniLM-L6-v2@0.1.0;pool=last1") == "all-MiniLM-L6-v2"
    a, b = paper.encode(["many planes near a highway"]), last.encode(["many planes near a highway"])
    assert a.shape == b.shape and not np.allclose(a, b)
    with pytest.raises(UserError, match="unknown text pooling"):
        encoders.load_text_encoder(str(tiny_bert), device="cpu", pooling="max")


def test_text_encoder_from_local_dir_is_padding_invariant(tiny_bert):
    enc = encoders.load_text_encoder(str(tiny_bert), device="cpu")
    assert enc.dim == 32 and enc.identity.startswith("hf:")
    alone = enc.encode(["a dense area"])
    batched = enc.encode(["a dense area", "many planes near a highway near a residential area ."])
    assert batched.shape == (2, 32) and batched.dtype == np.float32
    np.testing.assert_allclose(alone[0], batched[0], atol=1e-5)


def test_text_encoder_truncates_long_input(tiny_bert):
    enc = encoders.load_text_encoder(str(tiny_bert), device="cpu")
    out = enc.encode(["highway " * 2000])
    assert out.shape == (1, 32) and np.isfinite(out).all()
    # what is read is the first max_tokens tokens ([CLS] + words + [SEP]), no more, no fewer
    kept = enc.max_tokens - 2
    np.testing.assert_allclose(out, enc.encode(["highway " * kept]), rtol=1e-5, atol=1e-6)
    assert not np.allclose(out, enc.encode(["highway " * (kept - 1)]), rtol=1e-5, atol=1e-6)


def test_image_encoder_from_local_dir(tiny_resnet):
    enc = encoders.load_image_encoder(str(tiny_resnet), device="cpu")
    imgs = np.random.default_rng(0).integers(0, 255, size=(3, enc.input_size, enc.input_size, 3), dtype=np.uint8)
    out = enc.encode(imgs)
    assert out.shape == (3, enc.dim) and enc.dim == 16 and np.isfinite(out).all()


def test_missing_model_dir_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="config.json"):
        encoders.load_text_encoder(str(tmp_path / "nope"))
    with pytest.raises(UserError, match="config.json"):
        encoders.load_image_encoder(str(tmp_path))


@pytest.mark.slow
def test_default_encoders_load_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    text = encoders.load_text_encoder(device="cpu")
    image = encoders.load_image_encoder(device="cpu")
    assert text.dim == 384 and image.dim == 1904 and image.identity.endswith(";pool=head+b15+b14+b10")
    t = text.encode(["many planes at an airport", "planes parked at the airport", "a forest"])
    cos = t @ t.T / np.outer(np.linalg.norm(t, axis=1), np.linalg.norm(t, axis=1))
    assert cos[0, 1] > cos[0, 2]
    assert image.encode(np.zeros((1, 224, 224, 3), np.uint8)).shape == (1, 1904)


def test_image_pooling_names_its_taps_and_is_in_the_identity_unless_it_is_the_head_alone():
    assert encoders.image_taps("head+b15+b14+b10") == ["head", "b15", "b14", "b10"]
    for bad in ("b14+head", "head+b14+b14", "head+b3", "", "gap"):
        with pytest.raises(UserError, match="unknown image pooling"):
            encoders.image_taps(bad)
    base = "efficientnet-lite0@0.1.0"
    assert encoders.with_pooling(base, "head", encoders.PLAIN_IMAGE_POOLING) == base
    tagged = encoders.with_pooling(base, encoders.DEFAULT_IMAGE_POOLING, encoders.PLAIN_IMAGE_POOLING)
    assert tagged == base + ";pool=head+b15+b14+b10"
    assert encoders.image_pooling_from_identity(tagged) == encoders.DEFAULT_IMAGE_POOLING
    assert encoders.image_pooling_from_identity(base) == "head"   # bundles from before the option
    assert encoders.encoder_spec_from_identity(tagged) == "efficientnet-lite0"


def test_inner_blocks_sit_beside_the_unchanged_head_features():
    pixels = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    head = encoders.load_image_encoder(device="cpu", runtime="torch", pooling="head")
    both = encoders.load_image_encoder(device="cpu", runtime="torch", pooling="head+b14")
    a, b = head.encode(pixels), both.encode(pixels)
    assert head.identity == encoders.default_image_identity() and both.identity.endswith(";pool=head+b14")
    assert a.shape == (2, 1280) and b.shape == (2, 1280 + 192) and both.dim == 1472
    np.testing.assert_allclose(b[:, :1280], a, rtol=1e-5, atol=1e-6)
    assert np.abs(b[:, 1280:]).max() > 0 and np.abs(b[0, 1280:] - b[1, 1280:]).max() > 0


def test_a_local_vision_model_has_no_layer_poolings(tiny_resnet):
    with pytest.raises(UserError, match="efficientnet-lite0 only"):
        encoders.load_image_encoder(str(tiny_resnet), "cpu", runtime="torch", pooling="head+b14")
    assert encoders.load_image_encoder(str(tiny_resnet), "cpu", runtime="torch", pooling="head").dim == 16
