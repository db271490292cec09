"""Where things live by default, and how a model bundle's encoders are brought back to life.

- the default hashing model: ``resources/models/default`` in the repository/installation;
- the default index of a folder: ``platformdirs.user_data_dir("duch-desktop")/indexes/<name>-<hash>``
  (never inside the imagery folder: indexing must not write there);
- encoders named in a bundle: a small registry of factories by identity prefix, falling back to
  :mod:`encoders` (tests register tiny fake encoders here instead of patching production code).
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from pathlib import Path
from typing import Callable

from ..files import APP_NAME, resources_dir
from ..jobs import UserError

INDEXES = "indexes"
PLUG_IN = "n/a (a plug-in encoder)"  # the runtime of an encoder DUCH did not load: not ours to know
log = logging.getLogger("duch_desktop")

# identity prefix -> factory(identity) -> encoder
_ENCODER_FACTORIES: dict[str, Callable[[str], object]] = {}


def default_model_dir() -> Path:
    """The shipped hashing model bundle; :class:`UserError` when there is none."""
    path = resources_dir() / "models" / "default"
    if not (path / "model.json").is_file():
        raise UserError(f"no hashing model found at {path}: train one with `duch train` or pass --model")
    return path


def demo_dir() -> Path:
    """The small demo folder of tiles shipped with the app (``resources/demo``)."""
    return resources_dir() / "demo"


def data_dir() -> Path:
    """Per-user data folder of the app (indexes live below it)."""
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME))


def default_index_dir(folder: str | os.PathLike) -> Path:
    """Index directory used for ``folder`` when none is given: outside the folder, one per path.

    ``<user data dir>/indexes/<folder name, sanitised>-<12 hex of sha1(absolute path)>``; the
    hash keeps two folders with the same name apart, the name keeps the listing readable.
    """
    absolute = os.path.abspath(os.fsencode(folder))
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", os.fsdecode(os.path.basename(absolute)).encode(
        "utf-8", "replace").decode("ascii", "replace")).strip("._") or "root"
    digest = hashlib.sha1(absolute).hexdigest()[:12]
    return data_dir() / INDEXES / f"{name[:40]}-{digest}"


def known_index_dirs() -> list[Path]:
    """Index directories under the default location, most recently changed first."""
    base = data_dir() / INDEXES
    if not base.is_dir():
        return []
    found = [p for p in base.iterdir() if (p / "archive.sqlite").is_file()]
    return sorted(found, key=lambda p: (p / "archive.sqlite").stat().st_mtime, reverse=True)


# --------------------------------------------------------------------------- encoders

def register_encoder_factory(prefix: str, factory: Callable[[str], object]) -> None:
    """Make identities starting with ``prefix`` load through ``factory(identity) -> encoder``.

    Used for encoders that :mod:`encoders` cannot build from a spec (tests' tiny encoders,
    plug-ins). A later registration of the same prefix replaces the earlier one.
    """
    _ENCODER_FACTORIES[prefix] = factory


def unregister_encoder_factory(prefix: str) -> None:
    """Undo :func:`register_encoder_factory` (no error when absent)."""
    _ENCODER_FACTORIES.pop(prefix, None)


def has_encoder_factory(identity: str) -> bool:
    """Whether ``identity`` loads through a registered factory (a plug-in or a test's encoder)."""
    return any(identity.startswith(prefix) for prefix in _ENCODER_FACTORIES)


def encoder_spec(model, kind: str) -> str:
    """What to load the ``kind`` ("image" or "text") encoder of ``model`` from.

    An identity like "hf:resnet18:<hash>" names a local directory it cannot be loaded from;
    a bundle may record the loadable spec (the directory) as meta "<kind>_encoder_spec".
    """
    return model.meta.get(f"{kind}_encoder_spec") or getattr(model, f"{kind}_encoder")


def _from_registry(identity: str):
    for prefix, factory in _ENCODER_FACTORIES.items():
        if identity.startswith(prefix):
            return factory(identity)
    return None


def load_image_encoder_for(identity: str, runtime: str | None = None):
    """Image encoder for an identity recorded in a model bundle (registry first, then encoders.py);
    ``runtime``: auto/onnx/torch (None: the default, see :mod:`runtime`)."""
    enc = _from_registry(identity)
    if enc is None:
        from . import encoders

        enc = encoders.load_image_encoder(encoders.encoder_spec_from_identity(identity), runtime=runtime,
                                          pooling=encoders.image_pooling_from_identity(identity))
    return enc


def load_text_encoder_for(identity: str, runtime: str | None = None):
    """Text encoder for an identity recorded in a model bundle (registry first, then encoders.py)."""
    enc = _from_registry(identity)
    if enc is None:
        from . import encoders

        enc = encoders.load_text_encoder(encoders.encoder_spec_from_identity(identity),
                                         pooling=encoders.pooling_from_identity(identity), runtime=runtime)
    return enc


class Encoders:
    """The frozen encoders of one hashing model: given ones, else loaded on first use (thread-safe)
    from the identities its bundle records. A given encoder is checked against the model's heads."""

    def __init__(self, model, image=None, text=None, runtime: str | None = None):
        self.model, self.runtime = model, runtime
        for enc, dim, kind in ((image, model.image_dim, "image"), (text, model.text_dim, "text")):
            if enc is not None:
                check_encoder_dim(enc, dim, kind)
        self._loaded = {"image": image, "text": text}
        self._given = {kind for kind, enc in self._loaded.items() if enc is not None}
        # Two locks: _lock guards the state and is held only for moments, so that a window changing the
        # runtime or asking what is loaded never waits; _load_lock makes loads one at a time (a first
        # use exports an ONNX graph, a minute) and nothing on a GUI thread takes it.
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._generation = 0  # bumped by use_runtime: a load begun before it is returned, not kept
        self._watchers: list[Callable[[], None]] = []

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` whenever an encoder is loaded or the runtime changes, from the thread
        that did it (e.g. so a window can say what the encoders really run on)."""
        self._watchers.append(callback)

    def _changed(self) -> None:
        for callback in list(self._watchers):
            try:
                callback()
            except Exception:  # noqa: BLE001 - a watcher gone (a closed window) must not fail the load it hears of
                log.debug("an encoder watcher failed", exc_info=True)

    def use_runtime(self, runtime: str | None) -> None:
        """Load the encoders on ``runtime`` from now on (None: the default); given encoders stay.
        Codes do not depend on the runtime, so an index stays valid."""
        with self._lock:
            self.runtime = runtime
            self._generation += 1
            for kind in self._loaded:
                if kind not in self._given:
                    self._loaded[kind] = None
        self._changed()

    def _get(self, kind: str, load):
        with self._lock:
            enc = self._loaded[kind]
        if enc is not None:
            return enc
        with self._load_lock:
            with self._lock:
                enc, runtime, generation = self._loaded[kind], self.runtime, self._generation
            if enc is not None:  # another thread loaded it while this one waited
                return enc
            enc = load(encoder_spec(self.model, kind), runtime)
            check_encoder_dim(enc, getattr(self.model, f"{kind}_dim"), kind)
            with self._lock:
                kept = generation == self._generation
                if kept:
                    self._loaded[kind] = enc
        if kept:
            self._changed()
        return enc

    def describe_runtime(self) -> str:
        """What the encoders run on: loaded ones as they really are (an auto that fell back to
        torch says torch), the others as loading them now would; one text when both agree."""
        from . import encoders, runtime

        with self._lock:
            loaded = dict(self._loaded)
        parts = {}
        for kind, enc in loaded.items():
            spec = encoder_spec(self.model, kind)
            if enc is not None:
                parts[kind] = runtime.describe_encoder(enc) or PLUG_IN
            elif has_encoder_factory(spec):
                parts[kind] = PLUG_IN
            else:
                parts[kind] = runtime.describe(self.runtime, exportable=encoders.auto_exports(spec, kind))
        if parts["image"] == parts["text"]:
            return parts["image"]
        return f"{parts['image']} for images; {parts['text']} for text"

    @property
    def image(self):
        return self._get("image", load_image_encoder_for)

    @property
    def text(self):
        return self._get("text", load_text_encoder_for)

    @property
    def loaded_image(self):
        """The image encoder if given or loaded already, else None (loads nothing)."""
        with self._lock:
            return self._loaded["image"]


def check_encoder_dim(encoder, dim: int, kind: str) -> None:
    """:class:`UserError` unless ``encoder`` makes the ``dim``-d features the model's ``kind`` head takes."""
    got = int(getattr(encoder, "dim", dim))
    if got != dim:
        raise UserError(f"the hashing model expects {dim}-d {kind} features but the {kind} encoder "
                        f"{getattr(encoder, 'identity', '?')} gives {got}-d: use the encoder it was trained with")


def load_model(directory: str | os.PathLike | None = None):
    """The hashing model bundle at ``directory`` (default: :func:`default_model_dir`) loaded to make
    codes (:class:`inference.InferenceModel`, no torch); training loads a ``bundle.DuchModel``."""
    from .inference import InferenceModel

    path = Path(directory) if directory is not None else default_model_dir()
    if not (path / "model.json").is_file():
        raise UserError(f"no hashing model found at {path}: train one with `duch train` or pass --model")
    return InferenceModel.load(path)


def resolve_model(model=None, recorded: str | None = None):
    """``(model, bundle dir or None)`` from a model (anything with ``image_codes``, e.g. a DuchModel),
    a bundle path, or else the recorded/default bundle."""
    if hasattr(model, "image_codes"):
        return model, None
    if model is not None:
        path = Path(model)
    elif recorded and Path(recorded).is_dir():
        path = Path(recorded)
    else:
        path = default_model_dir()
    return load_model(path), path.resolve()


def default_workers() -> int:
    """Decoding processes used when none are asked for: up to 2, but none on a machine of <= 2 cores.

    Decoding costs ~10x less than encoding; on 2 cores, worker processes oversubscribe torch's
    threads and measured indexing ran 2.5x slower with 2 workers than with in-process decoding.
    """
    return min(2, max(0, (os.cpu_count() or 1) - 2))
