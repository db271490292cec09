"""Which inference runtime runs the frozen encoders, and the cache of their exported ONNX graphs.

Runtimes: ``torch`` (the encoders' own PyTorch modules) or ``onnx`` (ONNX Runtime, CPU, on a
graph exported from the same packaged weights). ``auto``, the default, is onnx for the two
default encoders on a CPU and torch on CUDA and for other (local Hugging Face) encoders, whose
export is not guaranteed; when onnxruntime is missing or fails, ``auto`` falls back to torch and
says so in one log line, while an explicit ``onnx`` is a :class:`UserError`.

The runtime never changes an encoder's identity: both runtimes' features agree to about 1e-6
relative (``tests/core/test_runtime.py`` holds them to 1e-4 on real tiles and captions), so
feature caches, model bundles and indexes made with one runtime are valid with the other.

Graphs are exported on first use into ``<user cache dir>/duch-desktop/onnx`` (nothing is ever
downloaded), one file per encoder identity and exporter version, beside a JSON sidecar naming
both and the graph's SHA-256. A graph whose sidecar is missing, names something else or does not
match the bytes is exported again. Exports run under an exclusive file lock and are written to a
temporary file renamed into place, so processes starting together never see half a graph.

An installation may also ship graphs, read-only, in ``resources/onnx`` (the PyInstaller bundle
does: it holds onnxruntime but not the exporter, see packaging/README.md). They are looked up
first and checked like cached ones (identity, kind, SHA-256), but keyed by identity, kind and
:data:`EXPORT_FORMAT` only: the exporter's versions are those of the build machine, and an
installation without the exporter could never match them. A shipped graph that is missing, does
not verify or that onnxruntime rejects is passed over for the user cache; it is never written.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from importlib import metadata, util
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..files import atomic_path, file_sha256, resources_dir, unlink_quietly, user_cache, write_text_atomic
from ..jobs import UserError

RUNTIMES = ("auto", "onnx", "torch")
HELP = ("what runs the encoders: onnx (ONNX Runtime, CPU), torch, or auto (default: onnx on a CPU, torch on a "
        "CUDA GPU; $DUCH_RUNTIME overrides). Codes do not depend on it")
# Part of every graph's key: bump when the exported wrappers change what a graph computes.
EXPORT_FORMAT = 1
# onnxruntime's intra-op threads spin while they wait for work by default, burning the cores the
# decoding process needs while indexing (and those of anything else running). Sleeping instead
# indexed 16 % faster (47.3 against 40.6 tiles/s, each round faster; the bare forward 91 against 72)
# on 320 UCM tiles, 2 cores shared at load 2.5-3.4 (benchmarks/bench_index.py --spinning, 2026-12-02).
INTRA_OP_SPINNING = False
log = logging.getLogger("duch_desktop")
_default: str | None = None
_threads: int | None = None


def set_default_runtime(name: str | None) -> None:
    """The runtime used when a caller names none (the GUI's setting); None: ``$DUCH_RUNTIME`` or auto."""
    global _default
    _default = check_runtime(name) if name else None


def default_runtime() -> str:
    return check_runtime(_default or os.environ.get("DUCH_RUNTIME") or "auto")


def check_runtime(name: str) -> str:
    if name not in RUNTIMES:
        raise UserError(f"unknown runtime {name!r}: use one of {', '.join(RUNTIMES)}")
    return name


def cuda_available() -> bool:
    """True when torch can use a CUDA GPU.

    Importing torch costs seconds, which a search on the onnx runtime must not pay: a CPU build of
    torch (its version.py says ``cuda = None``) cannot use a GPU, so that file is read first.
    """
    spec = util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return False
    try:
        text = (Path(list(spec.submodule_search_locations)[0]) / "version.py").read_text()
    except OSError:
        text = ""
    m = re.search(r"^cuda\s*(?::[^=\n]*)?=\s*(\S+)", text, re.M)
    if m and m.group(1) == "None":
        return False
    import torch

    return bool(torch.cuda.is_available())


def choose(runtime: str | None, device: str | None, exportable: bool) -> str:
    """``"onnx"`` or ``"torch"`` for ``runtime`` (None: :func:`default_runtime`) on ``device``.

    ``exportable``: the encoder is one auto may export (the default ones).
    """
    runtime = check_runtime(runtime or default_runtime())
    on_cpu = device.split(":")[0] == "cpu" if device else not cuda_available()
    if runtime == "onnx" and device and not on_cpu:
        raise UserError(f"the onnx runtime runs on the CPU only: use --runtime torch with --device {device}")
    if runtime == "auto":
        return "onnx" if on_cpu and exportable else "torch"
    return runtime


def onnxruntime():
    """The onnxruntime module; :class:`UserError` when it cannot be imported."""
    try:
        import onnxruntime as ort
    except Exception as e:  # noqa: BLE001 - a broken install raises more than ImportError
        raise UserError(f"onnxruntime cannot be loaded ({type(e).__name__}: {e}): "
                        "pip install onnxruntime, or use --runtime torch") from e
    return ort


def describe(runtime: str | None = None, device: str | None = None, exportable: bool = True) -> str:
    """What loading an encoder on ``runtime`` would run it on, e.g. ``onnx (onnxruntime 1.32.0, CPU,
    2 threads)``; ``exportable`` as for :func:`choose` (the default encoders are). Under auto, an
    onnxruntime that cannot be imported means torch, as it will when the encoders load."""
    try:
        kind = choose(runtime, device, exportable)
    except UserError as e:
        return str(e)
    if kind == "onnx":
        try:
            onnxruntime()
        except UserError as e:
            if check_runtime(runtime or default_runtime()) != "auto":
                return str(e)
            return f"{_torch_text(device)}, onnxruntime unavailable"
        return _onnx_text()
    return _torch_text(device)


def describe_encoder(encoder) -> str | None:
    """What a loaded encoder really runs on (one that fell back from onnx says torch); None for an
    encoder that names no runtime (a plug-in's, a test's)."""
    kind = getattr(encoder, "runtime", None)
    if kind == "onnx":
        return _onnx_text()
    if kind == "torch":
        return _torch_text(str(getattr(encoder, "device", None) or "cpu"))
    return None


def _onnx_text() -> str:
    return f"onnx (onnxruntime {_version('onnxruntime')}, CPU, {cpu_threads()} threads)"


def _torch_text(device: str | None) -> str:
    return f"torch ({_version('torch')}, {device or ('cuda' if cuda_available() else 'cpu')})"


def set_threads(n: int | None) -> None:
    """Threads of each onnxruntime operator in sessions made from now on (None: every core), e.g.
    for one of several encoding workers sharing a machine."""
    global _threads
    _threads = max(1, int(n)) if n else None


def cpu_threads() -> int:
    """Threads an onnxruntime session uses: :func:`set_threads`, else the cores this process may run on."""
    if _threads:
        return _threads
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def session(path: Path):
    """An onnxruntime CPU session on ``path`` using every core for each operator."""
    ort = onnxruntime()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = cpu_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # onnxruntime's warnings about unused initialisers are noise here
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if INTRA_OP_SPINNING else "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def open_session(identity: str, kind: str, export: Callable[[Path], None],
                 cache_dir: str | os.PathLike | None = None):
    """A session on the graph of the ``kind`` encoder ``identity``: the shipped one when it verifies
    and loads, else the cached one, exported with ``export(temp path)`` when missing, stale or
    damaged, and exported once more when onnxruntime rejects it."""
    onnxruntime()  # fail on a missing onnxruntime before spending a minute on an export
    shipped = shipped_graph(identity, kind)
    if shipped is not None:
        try:
            return session(shipped)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for damaged protobufs
            log.warning("onnxruntime cannot load the shipped graph %s (%s): using the user cache", shipped.name,
                        (str(e).strip().splitlines() or [type(e).__name__])[0])
    path = cached_graph(identity, kind, export, cache_dir)
    try:
        return session(path)
    except Exception:  # noqa: BLE001 - as above
        return session(cached_graph(identity, kind, export, cache_dir, rebuild=True))


def normalise(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """uint8 (n, s, s, 3) RGB -> float32 (n, 3, s, s) scaled as the image encoder was trained (both runtimes)."""
    x = (np.asarray(images).astype(np.float32) / 255.0 - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


# --------------------------------------------------------------------------- graph cache

def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def exporter_version() -> str:
    """What made a graph (torch + onnxscript versions, wrapper format); part of the cache key."""
    return f"torch.onnx-dynamo;torch={_version('torch')};onnxscript={_version('onnxscript')};format={EXPORT_FORMAT}"


def default_graph_dir() -> Path:
    return user_cache("onnx")


def shipped_graph_dir() -> Path:
    """The read-only graphs an installation ships (``resources/onnx``, beside the default model)."""
    return resources_dir() / "onnx"


def _file_name(identity: str, kind: str, key: list) -> str:
    digest = hashlib.sha256(json.dumps([kind, identity, *key]).encode()).hexdigest()[:16]
    return f"{kind}-{re.sub(r'[^A-Za-z0-9._-]+', '_', identity)[:48]}-{digest}.onnx"


def graph_path(identity: str, kind: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the graph of the ``kind`` ("image"/"text") encoder ``identity`` is cached."""
    return Path(cache_dir or default_graph_dir()) / _file_name(identity, kind, [exporter_version()])


def shipped_graph_path(identity: str, kind: str, folder: str | os.PathLike | None = None) -> Path:
    """Where a shipped graph of the ``kind`` encoder ``identity`` lies in ``folder`` (default:
    :func:`shipped_graph_dir`); keyed without the exporter's versions (see the module's notes)."""
    return Path(folder or shipped_graph_dir()) / _file_name(identity, kind, [EXPORT_FORMAT])


def sidecar(path: Path) -> Path:
    """The JSON file beside a graph naming what it is (identity, kind, exporter, format, SHA-256)."""
    return path.with_suffix(".json")


def graph_is_valid(path: Path, identity: str, kind: str, shipped: bool = False) -> bool:
    """True when ``path`` holds the complete graph its sidecar describes, for this identity and
    exporter (``shipped``: for this identity and :data:`EXPORT_FORMAT`, whatever exported it)."""
    try:
        meta = json.loads(sidecar(path).read_text())
        made_here = meta.get("format") == EXPORT_FORMAT if shipped else meta.get("exporter") == exporter_version()
        return (meta.get("identity") == identity and meta.get("kind") == kind and made_here
                and meta.get("sha256") == file_sha256(path))
    except (OSError, ValueError, AttributeError):
        return False


def shipped_graph(identity: str, kind: str, folder: str | os.PathLike | None = None) -> Path | None:
    """The shipped graph of the ``kind`` encoder ``identity`` when there is one and it verifies;
    else None (one that is there but does not verify says so in one log line)."""
    path = shipped_graph_path(identity, kind, folder)
    if not path.exists() and not sidecar(path).exists():
        return None
    if graph_is_valid(path, identity, kind, shipped=True):
        return path
    log.warning("the shipped ONNX graph %s does not verify (damaged or incomplete): using the user cache", path.name)
    return None


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (across processes where fcntl exists)."""
    with open(lock_path, "a+b") as f:
        try:
            import fcntl
        except ImportError:  # Windows: the atomic rename alone keeps readers safe
            yield
            return
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def cached_graph(identity: str, kind: str, export: Callable[[Path], None],
                 cache_dir: str | os.PathLike | None = None, rebuild: bool = False) -> Path:
    """The cached graph of an encoder, made with ``export(temp path)`` when missing, stale or damaged.

    ``rebuild``: export again even when the file looks valid (onnxruntime could not load it).
    """
    return _graph_at(graph_path(identity, kind, cache_dir), identity, kind, export, rebuild)


def ship_graph(identity: str, kind: str, export: Callable[[Path], None], folder: str | os.PathLike) -> Path:
    """Build time: the graph of an encoder in ``folder``, a shipped-graphs folder to be; one there
    already is kept only when this exporter made it."""
    return _graph_at(shipped_graph_path(identity, kind, folder), identity, kind, export, False)


def _graph_at(path: Path, identity: str, kind: str, export: Callable[[Path], None], rebuild: bool) -> Path:
    if not rebuild and graph_is_valid(path, identity, kind):
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the cache folder {path.parent}: {e.strerror or e}") from e
    with _exclusive(path.with_suffix(".lock")):
        # Another process may have exported it while this one waited for the lock.
        if not rebuild and graph_is_valid(path, identity, kind):
            return path
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a process killed mid-export
            unlink_quietly(stale)
        log.info("preparing the ONNX graph of %s (once per install, about a minute)", identity)
        with atomic_path(path) as tmp:
            export(Path(tmp))
            meta = {"identity": identity, "kind": kind, "exporter": exporter_version(), "format": EXPORT_FORMAT,
                    "sha256": file_sha256(Path(tmp))}
        write_text_atomic(sidecar(path), json.dumps(meta, indent=1))
    return path
