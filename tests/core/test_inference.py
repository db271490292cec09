"""The torch-free model for making codes: same codes as the DuchModel it was saved from, same
bundle checks, and a search that imports neither torch nor transformers."""
import json
import subprocess
import sys

import numpy as np
import pytest

from duch_desktop.core.jobs import UserError
from duch_desktop.core.model.defaults import load_model, resolve_model
from duch_desktop.core.model.bundle import DuchModel
from duch_desktop.core.model.inference import InferenceModel
from tests.conftest import make_tiny_model


def test_numpy_heads_make_the_codes_of_the_torch_heads(tmp_path):
    model = make_tiny_model(bits=32, seed=3)
    for head in (model.image_head, model.text_head):  # running statistics away from 0 / 1, as after training
        bn = head.net[1]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    model.save(tmp_path)
    loaded = load_model(tmp_path)
    assert isinstance(loaded, InferenceModel)
    assert (loaded.bits, loaded.image_dim, loaded.text_dim, loaded.fingerprint) == \
        (model.bits, model.image_dim, model.text_dim, model.fingerprint)
    assert (loaded.image_encoder, loaded.text_encoder) == (model.image_encoder, model.text_encoder)
    feats = np.random.default_rng(0).standard_normal((500, model.image_dim)).astype(np.float32)
    np.testing.assert_allclose(loaded.image_codes(feats, packed=False), model.image_codes(feats, packed=False),
                               atol=1e-5)
    same = (loaded.image_codes(feats) == model.image_codes(feats)).all(axis=1).mean()
    assert same >= 0.99
    texts = np.random.default_rng(1).standard_normal((200, model.text_dim)).astype(np.float32)
    np.testing.assert_allclose(loaded.text_codes(texts, packed=False), model.text_codes(texts, packed=False), atol=1e-5)
    assert loaded.image_codes(feats[:0]).shape == (0, model.bits // 8)
    assert resolve_model(model)[0] is model  # a model in memory is used as it is


def test_bundle_problems_are_user_errors_for_both_loaders(tmp_path):
    make_tiny_model().save(tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({**meta, "bits": 64}))
    for load in (InferenceModel.load, DuchModel.load):
        with pytest.raises(UserError, match="do not match"):
            load(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps(meta))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    for load in (InferenceModel.load, DuchModel.load):
        with pytest.raises(UserError, match="corrupt"):
            load(tmp_path)


def test_a_search_on_the_onnx_runtime_imports_neither_torch_nor_transformers(archive):
    """The whole `duch search` command: process start, model load, query (tiny encoders here, loaded
    through the registry as real ones load through the runtime), output."""
    script = ("import sys; from tests.conftest import register_tiny_encoders; register_tiny_encoders()\n"
              "from duch_desktop.cli import main\n"
              f"code = main(['search', 'a lake', '--index-dir', {str(archive.index_dir)!r}, '--runtime', 'onnx'])\n"
              "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules)); sys.exit(code)\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_a_bundle_without_a_checksum_keeps_the_fingerprint_torch_gives_it(tmp_path):
    model = make_tiny_model()
    model.save(tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    del meta["weights_sha256"]
    (tmp_path / "model.json").write_text(json.dumps(meta))
    torch_model = DuchModel.load(tmp_path)
    assert not torch_model.meta.get("weights_sha256")
    assert InferenceModel.load(tmp_path).fingerprint == torch_model.fingerprint
