"""Features -> training -> codes -> mAP on real UCM tiles, with tiny stand-in encoders
(fast) and with the real default encoders (slow)."""
import json
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from duch_desktop import cli_research
from duch_desktop.core.research.benchmark import run_ucm_evaluation
from duch_desktop.core.model.bundle import DuchModel
from duch_desktop.core.jobs import UserError, drive
from duch_desktop.core.training.trainer import TrainConfig

UCM = Path(__file__).resolve().parents[3] / "shared" / "data" / "ucm"
pytestmark = pytest.mark.skipif(not (UCM / "captions.json").is_file(), reason="UCM data not present")


class PixelProjection:
    """Fixed random projection of 4x4-pooled colours plus a colour histogram: a weak but honest image encoder."""

    identity, dim, input_size = "test-pixel-projection@1", 64, 32

    def __init__(self):
        self.w = np.random.default_rng(0).normal(size=(4 * 4 * 3 + 24, self.dim)).astype(np.float32)

    def encode(self, images):
        x = np.asarray(images, np.float32) / 255.0
        n = len(x)
        pooled = x.reshape(n, 4, 8, 4, 8, 3).mean((2, 4)).reshape(n, -1)
        hist = np.stack([np.histogram(x[i, ..., c], bins=8, range=(0, 1))[0] / x[i, ..., c].size
                         for i in range(n) for c in range(3)]).reshape(n, -1)
        return np.tanh(np.concatenate([pooled, hist], 1) @ self.w).astype(np.float32)


class WordBag:
    """Mean of fixed random word vectors (seeded by the word): a bag-of-words text encoder."""

    identity, dim = "test-word-bag@1", 64

    def encode(self, texts):
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            words = t.lower().replace(".", " ").split() or [""]
            out[i] = np.mean([np.random.default_rng(zlib.crc32(w.encode())).normal(size=self.dim) for w in words], 0)
        return out


def mini_ucm(dest: Path, per_class: int) -> Path:
    """A UCM-layout folder of ``per_class`` tiles per class (symlinks to the real JPEGs)."""
    data = json.loads((UCM / "captions.json").read_text())
    keep = []
    for e in data["images"]:
        n = int(e["filename"].split(".")[0])
        c, k = divmod(n - 1, 100)
        if k < per_class:
            name = data["classes"][str(c)]
            link = dest / "images" / name / f"{name}{k:02d}.jpg"
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(UCM / "images" / name / f"{name}{k:02d}.jpg")
            keep.append(e)
    (dest / "captions.json").write_text(json.dumps({**data, "images": keep}))
    return dest


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These models are tiny: one thread beats two, and far more so when the cores are busy."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    """84 tiles (4 per class) and a feature cache shared by this module's tests."""
    tmp = tmp_path_factory.mktemp("e2e")
    return mini_ucm(tmp / "ucm", per_class=4), tmp / "cache"


def test_trained_codes_beat_random_codes_and_report_is_written(mini, tmp_path):
    root, cache = mini
    report = drive(run_ucm_evaluation(root, PixelProjection(), WordBag(), bits=(16,), epochs=30, ablation=False,
                                      cache_dir=cache, out_dir=tmp_path / "docs",
                                      config=TrainConfig(batch_size=16, lr=3e-4), num_workers=0))
    assert (report.setup["n_train"], report.setup["n_query"], report.setup["n_retrieval"]) == (42, 8, 34)
    (r,) = report.results
    rnd = report.random[16]
    # measured: trained ~0.50 / 0.48 against random ~0.09 / 0.10 (standard mAP@20, I->T / T->I)
    assert r["i2t_standard"] > rnd["i2t_standard"] + 0.15
    assert r["t2i_standard"] > rnd["t2i_standard"] + 0.15
    md = (tmp_path / "docs" / "results.md").read_text()
    assert "| 16 |" in md and "0.760" in md  # the paper's 16-bit I->T, for comparison
    assert json.loads((tmp_path / "docs" / "results.json").read_text())["results"][0]["bits"] == 16
    assert (tmp_path / "docs" / "precision_at_k.png").stat().st_size > 1000


def test_ablation_runs_one_row_per_loss_term(mini, tmp_path):
    root, cache = mini
    report = drive(run_ucm_evaluation(root, PixelProjection(), WordBag(), bits=(8,), epochs=1, ablation=True,
                                      ablation_bits=8, cache_dir=cache, out_dir=tmp_path,
                                      config=TrainConfig(batch_size=16), num_workers=0))
    assert [r["run"].split(" (")[0] for r in report.ablation] == [
        "no inter-modal NT-Xent", "no intra-image NT-Xent", "no intra-text NT-Xent", "no adversarial",
        "no quantization", "no bit balance"]
    md = (tmp_path / "results.md").read_text()
    assert "Ablation at 8 bits" in md and "| full DUCH |" in md and "| no bit balance (gamma=0) |" in md


def test_cli_train_writes_a_loadable_bundle_with_captions(mini, tmp_path, monkeypatch, capsys):
    root, cache = mini
    monkeypatch.setattr(cli_research, "_encoders", lambda args: (PixelProjection(), WordBag()))
    args = SimpleNamespace(source=root, captions=None, bits=16, epochs=2, out=tmp_path / "model", all_images=False,
                           fp16=True, image_encoder=None, text_encoder=None, cache_dir=cache,
                           device=None, seed=42, workers=0)
    assert cli_research.cmd_train(args) == 0
    model = DuchModel.load(tmp_path / "model")
    assert model.bits == 16 and "i2t_paper" in model.meta["evaluation"]
    caps = json.loads((tmp_path / "model" / "captions.json").read_text())
    assert len(caps) == len(set(caps)) > 42 and all(isinstance(c, str) for c in caps)
    assert "UCM mAP@20" in capsys.readouterr().out
    # the caption bank's codes ship in the bundle: an index of it encodes none of the bank
    from duch_desktop.core.archive.captions import caption_bank_codes, read_caption_texts

    class Refuses:
        def encode(self, texts):
            raise AssertionError(f"encoded {len(texts)} texts")

    bank = read_caption_texts(tmp_path / "model" / "captions.json")
    (codes_file,) = (tmp_path / "model").glob("captions-*.npy")
    codes = drive(caption_bank_codes(model, Refuses(), bank, tmp_path / "model"))
    assert codes.shape == (len(bank), 2)
    assert (codes == model.text_codes(WordBag().encode(bank))).all()
    with pytest.raises(AssertionError, match="encoded"):  # other texts: the bundle's codes are not theirs
        drive(caption_bank_codes(model, Refuses(), bank[:-1], tmp_path / "model"))
    assert codes_file.exists()
    # a plain folder without a captions file: one plain error line, exit 2
    args.source, args.out = root / "images", tmp_path / "m2"
    with pytest.raises(UserError, match="^no captions"):
        cli_research.cmd_train(args)


@pytest.mark.slow
def test_real_encoders_on_210_tiles(tmp_path):
    from duch_desktop.core.model.encoders import load_image_encoder, load_text_encoder

    root = mini_ucm(tmp_path / "ucm", per_class=10)
    report = drive(run_ucm_evaluation(root, load_image_encoder(), load_text_encoder(), bits=(32,), epochs=30,
                                      ablation=False, cache_dir=tmp_path / "cache",
                                      config=TrainConfig(batch_size=64, lr=3e-4)))
    (r,), rnd = report.results, report.random[32]
    assert r["i2t_standard"] > rnd["i2t_standard"] + 0.25
    assert r["t2i_standard"] > rnd["t2i_standard"] + 0.25
