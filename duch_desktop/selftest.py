"""Self-check of an installation (``duch-desktop --self-test``): model, encoders, indexing, one query.

Proves that an installed or packaged app can do its job offline: load the hashing model and
both encoders, index a folder (by default the shipped demo) into a *temporary* index directory
(never into ``resources/`` nor the user's index location), run one typed query and check that
a plausible tile comes back (by default: an airplane tile of the demo in the top 5). Used by
the packaging smoke test (``packaging/``, ``tests/test_packaging.py``).

This module is Qt-free; the GUI adds its Qt checks through ``extra_check``
(see :mod:`duch_desktop.gui.app`).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

DEFAULT_QUERY = "airplanes parked at an airport"
DEFAULT_EXPECT = "airplane"  # a demo sub-folder: some tile of it must be in the top K
DEFAULT_K = 5


class SelfTestFailed(Exception):
    """A check of the self-test did not hold (the message says which, in one line)."""


@dataclass
class SelfTestResult:
    model: str  # bundle path (or "given")
    bits: int
    image_encoder: str
    text_encoder: str
    device: str  # what the encoders loaded for the test really run on (onnx, torch and its device)
    folder: str
    tiles: int
    georeferenced: int  # indexed tiles with a footprint (proves GDAL/PROJ data are there)
    index_s: float
    load_s: float  # loading both encoders
    query: str
    query_ms: float
    top: list[str]  # rels of the top K, best first
    top_distance: int
    expect: str
    expect_rank: int  # 1-based rank of the first tile matching ``expect``
    extra: list[str] = field(default_factory=list)  # lines added by extra_check

    def lines(self) -> list[str]:
        out = [
            f"model:   {self.model} ({self.bits} bits; {self.image_encoder} + {self.text_encoder})",
            f"device:  {self.device}",
            f"encoders loaded in {self.load_s:.1f} s",
            f"indexed: {self.tiles} tiles ({self.georeferenced} georeferenced) of {self.folder} "
            f"in {self.index_s:.1f} s",
            f"query:   {self.query!r} in {self.query_ms:.0f} ms",
            f"top hit: {self.top[0]} (distance {self.top_distance}); "
            f"first {self.expect!r} tile at rank {self.expect_rank} of {len(self.top)}",
        ]
        return out + self.extra


def _matches(rel: str, expect: str) -> bool:
    """A hit matches when its first path component (the demo's class folder) is ``expect``."""
    return rel.replace("\\", "/").split("/", 1)[0] == expect


def run_self_test(folder: str | os.PathLike | None = None, model=None, image_encoder=None, text_encoder=None,
                  query: str = DEFAULT_QUERY, expect: str = DEFAULT_EXPECT, k: int = DEFAULT_K,
                  require_georef: bool = True, workers: int | None = None,
                  extra_check: Callable[[object, list], list[str] | None] | None = None) -> SelfTestResult:
    """Index ``folder`` (default: the demo) into a temporary directory and query it; raise on failure.

    ``model``: a :class:`DuchModel` or bundle path (default: the shipped bundle); encoders are
    loaded from the model's identities unless given. Fails (:class:`SelfTestFailed`) when no tile
    is indexed, any file is unreadable, no tile has a footprint (``require_georef``), or no tile
    whose folder is ``expect`` is among the top ``k`` of ``query``. ``extra_check(archive, hits)``
    runs while the temporary index still exists; it may return report lines or raise.
    """
    from .core.model.defaults import default_model_dir, demo_dir
    from .core.archive.archive import Archive
    from .core.jobs import drive

    folder = Path(folder) if folder is not None else demo_dir()
    if not folder.is_dir():
        raise SelfTestFailed(f"folder not found: {folder}")
    model_label = "given model" if model is not None and not isinstance(model, (str, os.PathLike)) else \
        str(Path(model) if model is not None else default_model_dir())
    with tempfile.TemporaryDirectory(prefix="duch-selftest-") as tmp:
        archive = Archive.open(Path(tmp) / "index", model=model, image_encoder=image_encoder,
                               text_encoder=text_encoder, create_root=folder)
        try:
            t0 = time.perf_counter()
            image_enc, text_enc = archive.image_encoder, archive.text_encoder
            load_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            report = drive(archive.index(workers=workers))
            index_s = time.perf_counter() - t0
            tiles = archive.stats().tiles
            if tiles == 0:
                raise SelfTestFailed(f"no tile indexed in {folder}")
            if report.errors:
                rel, reason = (archive.errors() or [("?", "?")])[0]
                raise SelfTestFailed(f"{report.errors} file(s) unreadable, e.g. {rel}: {reason}")
            everything = archive.search_text(query, k=tiles)
            georef = sum(1 for h in everything if h.footprint)
            if require_georef and not georef:
                raise SelfTestFailed("no indexed tile has a footprint (GeoTIFF georeferencing not read)")
            t0 = time.perf_counter()
            hits = archive.search_text(query, k=k)
            query_ms = (time.perf_counter() - t0) * 1000
            if not hits:
                raise SelfTestFailed(f"query {query!r} returned nothing")
            rank = next((i for i, h in enumerate(hits, 1) if _matches(h.rel, expect)), 0)
            if not rank:
                raise SelfTestFailed(f"no {expect!r} tile in the top {k} for {query!r}: "
                                     + ", ".join(h.rel for h in hits))
            extra = (extra_check(archive, hits) or []) if extra_check is not None else []
            return SelfTestResult(
                model=model_label, bits=int(archive.model.bits), image_encoder=str(image_enc.identity),
                text_encoder=str(text_enc.identity), device=archive.describe_runtime(), folder=str(folder),
                tiles=tiles, georeferenced=georef, index_s=index_s, load_s=load_s, query=query, query_ms=query_ms,
                top=[h.rel for h in hits], top_distance=int(hits[0].distance), expect=expect, expect_rank=rank,
                extra=list(extra))
        finally:
            archive.close()


def self_test_main(out: TextIO | None = None, err: TextIO | None = None, **kwargs) -> int:
    """Run :func:`run_self_test`; print the report and return 0, or one line of failure and return 1."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        result = run_self_test(**kwargs)
    except Exception as e:  # noqa: BLE001 - any failure is a failed self-test, reported in one line
        what = str(e) if isinstance(e, SelfTestFailed) else f"{type(e).__name__}: {e}"
        print("DUCH Desktop self-test FAILED: " + " ".join(what.split()), file=err, flush=True)
        return 1
    print("DUCH Desktop self-test OK", file=out)
    for line in result.lines():
        print("  " + line, file=out)
    out.flush()
    return 0
