"""The frozen encoders on ONNX Runtime: same identities, inputs and outputs as their PyTorch
versions in :mod:`encoders`, from graphs exported from the same weights (:mod:`runtime`).

:mod:`encoders` makes these (``load_*_encoder(runtime=...)``) and hands them what they cannot
know without torch: the identity, the input scaling and a factory of the PyTorch encoder to
export, called only when no graph is shipped or cached yet. Once it is, nothing here imports torch or
transformers: images are scaled with :func:`runtime.normalise` exactly as on torch, texts are
tokenized by the ``tokenizers`` library from the model's own ``tokenizer.json`` (what
transformers' fast tokenizer runs too). The text graph outputs both poolings (``last1``,
``last4``) so one file serves either.
"""
from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..jobs import UserError
from . import runtime

TEXT_OUTPUTS = ("last1", "last4")  # the poolings of :mod:`encoders`, in the text graph's output order


class OnnxImageEncoder:
    """An image encoder on onnxruntime; ``torch_encoder()`` makes its PyTorch twin for the export."""

    runtime = "onnx"
    device = "cpu"
    batch_size = 32

    def __init__(self, identity: str, input_size: int, mean: np.ndarray, std: np.ndarray,
                 torch_encoder: Callable[[], object], cache_dir: str | os.PathLike | None = None):
        self.identity, self.input_size, self.mean, self.std = identity, input_size, mean, std
        self._session = runtime.open_session(identity, "image", lambda dest: export_image(torch_encoder(), dest),
                                             cache_dir)
        self._input = self._session.get_inputs()[0].name
        dim = self._session.get_outputs()[0].shape[-1]
        self.dim = dim if isinstance(dim, int) else len(self.encode(np.zeros((1, input_size, input_size, 3),
                                                                              np.uint8))[0])

    def encode(self, images: np.ndarray) -> np.ndarray:
        """uint8 (n, input_size, input_size, 3) RGB -> float32 (n, dim)."""
        images = np.asarray(images)
        parts = [self._session.run(None, {self._input: runtime.normalise(images[s:s + self.batch_size],
                                                                         self.mean, self.std)})[0]
                 for s in range(0, len(images), self.batch_size)]
        return np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros((0, self.dim), np.float32)


class OnnxTextEncoder:
    """A BERT-like text encoder (its HF directory ``path``) on onnxruntime, mean-pooled as ``pooling``
    says; ``graph_key`` is its identity without the pooling tag, ``torch_encoder()`` as above."""

    runtime = "onnx"
    device = "cpu"
    batch_size = 64

    def __init__(self, path: str | os.PathLike, identity: str, graph_key: str, pooling: str, max_tokens: int,
                 torch_encoder: Callable[[], object], cache_dir: str | os.PathLike | None = None):
        path = Path(path)
        self.identity, self.pooling, self.max_tokens = identity, pooling, max_tokens
        self._tokens = _tokenizer(path)
        self._tokens.no_truncation()
        self._tokens.no_padding()
        self._cut = _tokenizer(path)
        self._cut.enable_truncation(max_tokens)
        pad = self._cut.padding or {}
        self._cut.enable_padding(pad_id=pad.get("pad_id", 0), pad_token=pad.get("pad_token", "[PAD]"))
        # The graph holds both poolings, so one file (keyed without the pooling tag) serves both.
        self._session = runtime.open_session(graph_key, "text", lambda dest: export_text(torch_encoder(), dest),
                                             cache_dir)
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._output = [o.name for o in self._session.get_outputs()].index(pooling)
        dim = self._session.get_outputs()[self._output].shape[-1]
        self.dim = dim if isinstance(dim, int) else len(self.encode(["a"])[0])

    def token_count(self, text: str) -> int:
        """Tokens ``text`` takes, special tokens included (more than ``max_tokens`` are cut off)."""
        return len(self._tokens.encode(text).ids)

    def kept_text(self, text: str) -> str:
        """The part of ``text`` the encoder reads (all of it unless longer than ``max_tokens``)."""
        return self._cut.decode(self._cut.encode(text).ids, skip_special_tokens=True)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """n strings -> float32 (n, dim)."""
        texts = [str(t) for t in texts]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for s in range(0, len(texts), self.batch_size):
            batch = self._cut.encode_batch(texts[s:s + self.batch_size])
            feed = {"input_ids": [e.ids for e in batch], "attention_mask": [e.attention_mask for e in batch],
                    "token_type_ids": [e.type_ids for e in batch]}
            res = self._session.run(None, {k: np.asarray(feed[k], dtype=np.int64) for k in self._inputs})
            out[s:s + len(batch)] = res[self._output]
        return out


def _tokenizer(path: Path):
    """The model's fast tokenizer: its tokenizer.json, else the one transformers builds from its files."""
    from tokenizers import Tokenizer

    if (path / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(path / "tokenizer.json"))
    from transformers import AutoTokenizer

    return Tokenizer.from_str(AutoTokenizer.from_pretrained(path, local_files_only=True).backend_tokenizer.to_str())


# --------------------------------------------------------------------------- export (needs torch)

@contextlib.contextmanager
def _quiet_export():
    """The exporter's warnings and progress lines say nothing the user can act on."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _export(module, args: tuple, dest: Path, inputs: list[str], outputs: list[str], dynamic: dict) -> None:
    try:
        import onnxscript  # noqa: F401 - torch.onnx's exporter; the PyInstaller bundle ships graphs instead
    except ImportError as e:
        raise UserError("no ONNX graph of this encoder is shipped or cached, and the ONNX exporter is not "
                        "installed (pip install onnx onnxscript)") from e
    import torch

    with _quiet_export(), torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(module.eval(), args, str(dest), dynamo=True, external_data=False, verbose=False,
                          input_names=inputs, output_names=outputs, dynamic_shapes=dynamic)


def export_image(enc, dest: Path) -> None:
    """Write the ONNX graph of the PyTorch image encoder ``enc`` (its ``_forward`` on scaled pixels) to ``dest``."""
    import torch

    class Features(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = enc.net

        def forward(self, pixels):
            return enc._forward(pixels)

    x = torch.zeros(2, 3, enc.input_size, enc.input_size)
    _export(Features(), (x,), dest, ["pixels"], ["features"], {"pixels": {0: torch.export.Dim("batch")}})


def export_text(enc, dest: Path) -> None:
    """Write the ONNX graph of the PyTorch text encoder ``enc`` to ``dest``: token ids -> both poolings."""
    import torch

    names = ["input_ids", "attention_mask", "token_type_ids"]

    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = enc.net

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.net(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                              output_hidden_states=True).hidden_states
            return tuple(enc.pooled(hidden, attention_mask, p) for p in TEXT_OUTPUTS)

    tok = enc.tokenizer(["a probe sentence", "two"], padding=True, return_tensors="pt")
    batch = torch.export.Dim("batch")
    tokens = torch.export.Dim("tokens", max=int(getattr(enc.net.config, "max_position_embeddings", 512)))
    args = tuple(tok[n] if n in tok else torch.zeros_like(tok["input_ids"]) for n in names)
    _export(Pooled(), args, dest, names, list(TEXT_OUTPUTS), {n: {0: batch, 1: tokens} for n in names})
