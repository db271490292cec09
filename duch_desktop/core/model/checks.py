"""Whether a hashing model and its encoders can actually make codes, asked before an index changes.

An indexing run with a new model first marks every tile for re-encoding; a model that then
fails (wrong feature size, an encoder that does not load or crashes) would leave an index
without codes. :func:`check_model` runs the whole path once on a probe image and a probe
text, so every such failure is a :class:`UserError` raised while the index is still intact.
"""
from __future__ import annotations

import numpy as np

from ..jobs import UserError
from .defaults import check_encoder_dim

PROBE_TEXT = "a probe caption"
DEFAULT_INPUT_SIZE = 224


def check_model(model, image_encoder, text_encoder, name: str = "the hashing model") -> None:
    """UserError unless both encoders match ``model`` (identity, feature size) and a probe forward
    pass through encoder and head gives finite features and codes of ``model.bits`` bits."""
    for enc, dim, kind in ((image_encoder, model.image_dim, "image"), (text_encoder, model.text_dim, "text")):
        check_encoder_dim(enc, dim, kind)
        _check_identity(getattr(model, f"{kind}_encoder"), getattr(enc, "identity", None), kind, name)
    size = int(getattr(image_encoder, "input_size", DEFAULT_INPUT_SIZE))
    probes = (("image", image_encoder, np.zeros((1, size, size, 3), np.uint8), model.image_codes, model.image_dim),
              ("text", text_encoder, [PROBE_TEXT], model.text_codes, model.text_dim))
    for kind, enc, probe, to_codes, dim in probes:
        try:
            feats = np.asarray(enc.encode(probe))
            codes = to_codes(feats) if feats.shape == (1, dim) and np.isfinite(feats).all() else None
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure of a foreign encoder or head is the model's problem
            raise UserError(f"{name} cannot encode a probe {kind} ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:120] if str(e) else 'no details'})") from e
        if codes is None:
            raise UserError(f"the {kind} encoder gives features of shape {list(feats.shape)} "
                            f"{'with NaN or inf' if feats.shape == (1, dim) else f'instead of [1, {dim}]'}: "
                            f"{name} cannot use it")
        if codes.shape != (1, model.bits // 8) or codes.dtype != np.uint8:
            raise UserError(f"{name} makes codes of shape {list(codes.shape)} instead of {model.bits} bits")


def _check_identity(recorded: str, actual: str | None, kind: str, name: str) -> None:
    """A packaged encoder (``name@version``) must be the one the model was trained with, at any
    version; directory encoders are recorded by path and identified by content hash, so the
    loading itself (from the recorded spec) is their check."""
    if actual is None or recorded is None or "@" not in str(recorded) or "@" not in str(actual):
        return
    if _base(recorded) != _base(actual):
        raise UserError(f"{name} was trained with the {kind} encoder {recorded}, not {actual}: "
                        "use the encoder it was trained with")


def _base(identity: str) -> tuple[str, str]:
    """(name without version, pooling tag) of an encoder identity like 'all-MiniLM-L6-v2@0.1.0;pool=last1'."""
    head, _, pooling = str(identity).partition(";")
    return head.split("@", 1)[0], pooling
