"""Encoding an indexing run on a Ray cluster with Ray Data (``duch index FOLDER --ray ADDRESS``).

Only the decode + encode step moves to the cluster; everything else stays in the driver and is
the local path's own code (:mod:`indexing`): scan, incremental diff, chip planning, and committing
rows + codes batch by batch to SQLite / faiss. So the index format, incremental runs, resuming
after a cancel or a kill, and search are exactly those of a local run.

The run's items (the files and chips the diff left to encode) become a Ray dataset of
``(i, path, window)`` rows; ``map_batches`` hands them to :class:`TileEncoder`, a callable class
Ray Data runs as a pool of actors (one per GPU, or CPU workers): it reads each item from the
shared filesystem with the local reader (:class:`reader.TileReader`: same decoding, same
errors-as-data), encodes and hashes, and returns codes, tile metadata and error text per item.
The driver consumes results with ``iter_batches`` and commits them through the local path's
commit code, yielding the same :class:`jobs.Progress` events; closing the job stops the dataset.

- Workers read the imagery by path: on a multi-node cluster the folder must be mounted at the
  same path on every node (NFS, Lustre...). The index directory is only written by the driver.
- A worker (actor) that dies is restarted by Ray Data and its block retried; an unreadable file
  is a recorded error (``duch info --errors``), never a failed job. An encoder failing on every
  tile of a batch (a broken worker, not bad files) fails the run, which resumes like a local one.
- The hashing model is shipped to the workers with the job; the built-in encoders are rebuilt on
  each worker from the model's identity (so the packages must be installed there), other
  encoder objects (plug-ins, tests' tiny ones) are pickled to the workers.
- Thumbnails are not made while indexing (local or Ray): the archive makes them on demand.

Ray is an optional dependency (``pip install 'duch-desktop[ray]'``), imported only here and only
when a run has something to encode.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from ..jobs import UserError
from ..imagery.budget import MAX_DECODE_BYTES
from .reader import TileReader, Work

RAY_MISSING = "Ray is not installed: pip install 'duch-desktop[ray]' (or 'ray[data]') to index with --ray"
BLOCKS_PER_WORKER = 8  # dataset blocks per worker: load balancing, and what a dead worker's retry redoes
MAX_BLOCK_ROWS = 4096
WINDOW = ("win_col", "win_row", "win_w", "win_h")  # dataset columns of an item's window (-1s: whole file)
COMMIT_ROWS = 256  # rows per SQLite transaction at least: results arrive faster than from one local GPU


def require_ray():
    """The ``ray`` module (with Ray Data), or :class:`UserError` saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is the part this module needs
    except ImportError as e:
        raise UserError(RAY_MISSING) from e
    return ray


def check_address(address: str) -> str:
    """``"local"``, ``"auto"``, ``ray://host:port`` or ``host:port``; else :class:`UserError`."""
    address = str(address or "").strip()
    if address in ("local", "auto") or address.startswith("ray://"):
        return address
    host, sep, port = address.rpartition(":")
    if sep and host and port.isdigit():
        return address
    raise UserError(f'unknown Ray address "{address}": use local, auto, ray://HOST:PORT or HOST:PORT')


@dataclass
class RayOptions:
    """Where and how wide to run: ``address`` (see :func:`check_address`), ``workers`` (None: one
    per GPU of the cluster, else one per two CPUs)."""

    address: str = "local"
    workers: int | None = None


def quiet_ray_logs() -> None:
    """Keep Ray's INFO lines and Ray Data's per-dataset notes off the console (the CLI has its own
    progress bar; Ray's log files keep everything)."""
    for name, level in (("ray", logging.WARNING), ("ray.data", logging.ERROR)):
        for handler in logging.getLogger(name).handlers:
            if not isinstance(handler, logging.FileHandler):
                handler.setLevel(max(handler.level, level))


class _Session:
    """A Ray connection for one run: reuses one already made (``ray.init`` by the caller), else
    connects (or, for "local", starts a Ray instance on this machine) and disconnects at the end."""

    def __init__(self, address: str):
        self.ray = require_ray()
        self.owned = False
        if self.ray.is_initialized():
            return
        extra = {}
        if address == "local":  # workers on this machine see the driver's modules (a source checkout too)
            extra["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}}
        try:
            self.ray.init(address=address, include_dashboard=False, log_to_driver=False,
                          logging_level=logging.WARNING, **extra)
        except Exception as e:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError... one line for the user
            raise UserError(f"cannot start or reach the Ray cluster at {address}: {_first_line(e)}") from e
        self.owned = True
        quiet_ray_logs()

    def close(self) -> None:
        if self.owned:
            self.ray.shutdown()
            self.owned = False


@dataclass
class WorkerSpec:
    """What a :class:`TileEncoder` needs, picklable: the model, the encoder (object or identity),
    the reader's options, and the CPU threads it may use."""

    model: Any  # DuchModel (its image head is used; heads stay on the CPU, as in a local run)
    image_encoder: Any  # an encoder object pickled to the workers, or None: load image_spec there
    image_spec: str
    bands: tuple | None
    stretch: str
    threads: int = 1
    max_bytes: float | None = MAX_DECODE_BYTES  # the decode budget of :mod:`budget` (no time limit on Ray)


class _Items:
    """The slice of :class:`reader.Work` that :class:`reader.TileReader` reads, for one batch."""

    def __init__(self, paths, windows: np.ndarray):
        self.paths = list(paths)
        self.total = len(self.paths)
        self.item_file = np.arange(self.total)
        self.item_win = windows

    def window(self, i: int):
        w = self.item_win[i]
        return None if w[0] < 0 else tuple(int(v) for v in w)


class TileEncoder:
    """Ray Data callable class (one instance per actor): decode a batch of items, encode, hash.

    In: ``i`` (item number), ``path`` (bytes), the window columns :data:`WINDOW`. Out: ``i``,
    ``code`` (n, bits/8 uint8; zeros where ``ok`` is False), ``ok``, ``meta`` (JSON text of a
    whole file's header), ``hash``, ``error`` (text), ``nodata``; "" stands for None in the texts.
    """

    def __init__(self, spec: WorkerSpec):
        import torch

        from ..model import runtime
        from ..model.defaults import check_encoder_dim, load_image_encoder_for
        from .queries import DEFAULT_INPUT_SIZE

        torch.set_num_threads(max(1, spec.threads))
        runtime.set_threads(spec.threads)
        self.spec, self.model = spec, spec.model
        encoder = spec.image_encoder
        if encoder is None:
            encoder = load_image_encoder_for(spec.image_spec)
            check_encoder_dim(encoder, self.model.image_dim, "image")
        self.encoder = encoder
        self.size = int(getattr(encoder, "input_size", DEFAULT_INPUT_SIZE))
        self.pool = ThreadPoolExecutor(spec.threads) if spec.threads > 1 else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["i"])
        windows = np.stack([np.asarray(batch[k], np.int64) for k in WINDOW], axis=1)
        reader = TileReader(_Items(batch["path"], windows), self.size,
                            self.spec.bands, self.spec.stretch, self.spec.max_bytes)
        items = list(self.pool.map(reader.__getitem__, range(n)) if self.pool else map(reader.__getitem__, range(n)))
        code = np.zeros((n, self.model.bits // 8), np.uint8)
        ok = np.zeros(n, bool)
        good = [j for j, it in enumerate(items) if it["pixels"] is not None]
        if good:
            try:
                code[good] = self._codes([items[j]["pixels"] for j in good])
                ok[good] = True
            except Exception:  # noqa: BLE001 - find out which tiles fail; see _encode_one_by_one
                self._encode_one_by_one(items, good, code, ok)
        return {"i": np.asarray(batch["i"], np.int64), "code": code, "ok": ok,
                "meta": _texts(json.dumps(it["meta"]) if it["meta"] is not None else None for it in items),
                "hash": _texts(it["hash"] for it in items), "error": _texts(it["error"] for it in items),
                "nodata": np.array([bool(it["nodata"]) for it in items], bool)}

    def _codes(self, pixels: list) -> np.ndarray:
        return self.model.image_codes(self.encoder.encode(np.stack(pixels)))

    def _encode_one_by_one(self, items: list, good: list, code: np.ndarray, ok: np.ndarray) -> None:
        """After a batch failed: record the tiles that fail alone; raise when all of them do."""
        failed = None
        for j in good:
            try:
                code[j] = self._codes([items[j]["pixels"]])[0]
                ok[j] = True
            except Exception as e:  # noqa: BLE001 - one tile the encoder cannot take is a recorded error
                failed = e
                items[j]["error"] = f"encoding failed: {type(e).__name__}: {e}"[:200]
        if not ok[good].any():
            raise failed  # the encoder, not the tiles: fail the run (resumable), don't mark tiles bad


def _texts(values) -> np.ndarray:
    """Text column; None as "" (a column of Nones only would get Arrow's null type, read back as NaN)."""
    return np.array(["" if v is None else str(v) for v in values], dtype=object)


def _first_line(e: BaseException) -> str:
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else type(e).__name__


def _builtin_encoder(encoder) -> bool:
    from ..model import encoders
    from ..model.onnx_encoders import OnnxImageEncoder

    return isinstance(encoder, (encoders.EfficientNetLiteEncoder, encoders.HFImageEncoder, OnnxImageEncoder))


def worker_spec(encoders, opts: dict, threads: int, max_bytes: float | None = MAX_DECODE_BYTES) -> WorkerSpec:
    """The :class:`WorkerSpec` of a run with ``encoders`` (:class:`defaults.Encoders`): built-in
    encoders are rebuilt on the workers from the model's identity; encoder objects given to the
    archive, or made by a registered factory (plug-ins), travel pickled."""
    from ..model.defaults import encoder_spec, has_encoder_factory

    spec = encoder_spec(encoders.model, "image")
    encoder = encoders.loaded_image
    if encoder is None and has_encoder_factory(spec):
        encoder = encoders.image  # a plug-in the workers' registry may not know
    if encoder is not None and _builtin_encoder(encoder):
        encoder = None
    bands = tuple(opts["bands"]) if opts["bands"] else None
    return WorkerSpec(encoders.model, encoder, spec, bands, opts["stretch"], threads, max_bytes)


def _plan_workers(ray, wanted: int | None) -> tuple[int, dict]:
    """``(workers, ray_remote_args)``: one actor per GPU by default (each with its share of the
    CPUs for decoding), else one per two CPUs; more workers than GPUs (or CPUs) share them."""
    res = ray.cluster_resources()
    gpus, cpus = int(res.get("GPU", 0)), max(1, int(res.get("CPU", 1)))
    n = wanted or (gpus or max(1, cpus // 2))
    args: dict = {"num_cpus": cpus // n if n <= cpus else cpus / n}  # all n actors must fit at once
    if gpus:
        args["num_gpus"] = 1 if n <= gpus else gpus / n
    return n, args


def ray_batches(encoders, work: Work, opts: dict, batch_size: int, options: RayOptions,
                max_bytes: float | None = MAX_DECODE_BYTES) -> Iterator[list[dict] | str]:
    """Items decoded and encoded on Ray, as batches of the local reader's item dicts plus ``code``.

    A generator: closing it stops the dataset (and a Ray instance it started). Its first value is
    a line saying where the work runs (the job reports it as a progress message).
    """
    session = _Session(options.address)
    try:
        ray = session.ray
        workers, remote_args = _plan_workers(ray, options.workers)
        total = work.total
        rows = int(min(MAX_BLOCK_ROWS, max(batch_size, -(-total // (workers * BLOCKS_PER_WORKER)))))
        spec = worker_spec(encoders, opts, max(1, int(remote_args["num_cpus"])), max_bytes)
        # The item table goes to the object store up front (~100 bytes an item), one block per task.
        # A custom datasource would stream it, but its read tasks need CPUs that the workers hold;
        # from_blocks, where this Ray has it, skips from_arrow's remote metadata tasks (seconds a run).
        tables = [_item_table(s, [work.paths[int(f)] for f in work.item_file[s:s + rows]], work.item_win[s:s + rows])
                  for s in range(0, total, rows)]
        source = getattr(ray.data, "from_blocks", None) or ray.data.from_arrow
        ds = source(tables).map_batches(
            TileEncoder, fn_constructor_args=(spec,), batch_size=batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers), **remote_args)
        ds.context.execution_options.preserve_order = True  # same row ids as a local run
        ds.context.enable_progress_bars = False
        gpus = remote_args.get("num_gpus", 0)
        cpus = remote_args["num_cpus"]
        yield (f"encoding {total} tiles with Ray at {options.address}: {workers} worker{'s' if workers > 1 else ''}, "
               f"{cpus:.3g} CPU{'s' if cpus > 1 else ''}" + (f" and {gpus:g} GPU" if gpus else "") + " each")
        batches = iter(ds.iter_batches(batch_size=max(batch_size, COMMIT_ROWS), batch_format="numpy"))
        try:
            for out in batches:
                yield _items(out)
        except ray.exceptions.RayError as e:
            raise UserError(f"the Ray job failed ({_root_cause(e)}); finished batches are kept: run again "
                            "to resume") from e
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
    finally:
        session.close()


def _item_table(start: int, paths: list, windows: np.ndarray):
    """One block of the run's items: ``i``, ``path`` and the window columns."""
    import pyarrow as pa

    return pa.table({"i": np.arange(start, start + len(paths), dtype=np.int64), "path": pa.array(paths, pa.binary()),
                     **{k: windows[:, c] for c, k in enumerate(WINDOW)}})


def _items(out: dict) -> list[dict]:
    """A result batch back as the local reader's item dicts (plus ``code``)."""
    items = []
    for j, i in enumerate(out["i"].tolist()):
        meta, digest, error = (out[k][j] or None for k in ("meta", "hash", "error"))
        items.append({"i": i, "code": out["code"][j] if out["ok"][j] else None,
                      "meta": json.loads(meta) if meta else None, "hash": digest, "error": error,
                      "nodata": bool(out["nodata"][j])})
    return items


_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)): (.+)$")


def _root_cause(e: BaseException) -> str:
    """The worker's own error inside Ray's wrappers (RayTaskError, UserCodeException...), one line."""
    chain, cur = [], e
    while isinstance(cur, BaseException) and cur not in chain:
        chain.append(cur)
        inner = getattr(cur, "cause", None)
        cur = inner if isinstance(inner, BaseException) else cur.__cause__
    for exc in reversed(chain):
        if not type(exc).__module__.startswith("ray"):
            return f"{type(exc).__name__}: {_first_line(exc)}"
    for exc in chain:  # the worker's traceback survives only as text: its last 'SomeError: message' line
        lines = [m for m in map(_ERROR_LINE.match, str(exc).splitlines()) if m and not m[1].startswith("ray.")]
        if lines:
            return f"{lines[-1][1].rsplit('.', 1)[-1]}: {lines[-1][2].strip()}"
    return f"{type(e).__name__}: {_first_line(e)}"
