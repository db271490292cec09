"""The indexing run: scan the folder, diff it against the archive, plan chips, encode, commit.

:class:`Indexer` works on the parts :class:`archive.Archive` gives it (the database, the Hamming
tables, the thumbnail cache, the model and its encoders). A run is a :data:`jobs.Job`: scan ->
diff (moves, removals, per file) -> plan (scenes cut into chips, see :mod:`planning`) -> decode
(:mod:`reader`) + encode batch by batch,
each batch committing rows and codes together, so that a cancel or a kill -9 at any moment
leaves an index that opens and resumes without duplicates or losses. A scene's chip rows are
written as 'pending' before its first chip is encoded, so a scene interrupted half-way resumes
with its missing chips only. One run per index directory at a time (:class:`_RunLock`).
"""
from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..files import display_path
from ..imagery import chips
from ..imagery import reading as imagery
from ..imagery.budget import DECODE_SECONDS, MAX_DECODE_BYTES
from ..jobs import Job, Progress, RateMeter, UserError
from ..model.checks import check_model
from ..model.defaults import Encoders, default_workers
from ..model.caption_bank import encode_texts
from .captions import caption_bank_codes, read_caption_texts
from .database import FAISS_FILES, RUN_LOCK, Database, now, storage_error
from .decoding import decoded, prefetched
from .planning import ChipPlanner
from .queries import DEFAULT_INPUT_SIZE
from .reader import FileTodo, TileReader, Work
from .tables import HammingTables
from .thumbs import Thumbnails

STRETCHES = ("auto", "percentile", "none")
SAVE_EVERY_S = 30.0  # rewrite tiles.faiss this often during a long run (bounds the rebuild after a crash)
SKIPPED_KEY = "skipped"  # meta: JSON [[rel, reason], ...] of what the last scan had to skip
MAX_SKIPPED_KEPT = 10_000


@dataclass
class DecodeOptions:
    """How a local run decodes: ``workers`` processes (0 counts as 1), the limits of :mod:`budget`."""

    workers: int
    max_bytes: float | None = MAX_DECODE_BYTES
    seconds: float | None = DECODE_SECONDS


@dataclass
class IndexReport:
    """What one indexing run did: counts of files, plus the chips read from scenes.

    ``errors`` counts unreadable files and chips, ``nodata`` the chips skipped because they
    hold no valid pixel (outside a scene's valid area); ``cancelled`` when stopped early.
    """

    added: int = 0
    updated: int = 0
    moved: int = 0
    removed: int = 0
    unchanged: int = 0
    errors: int = 0
    seconds: float = 0.0
    cancelled: bool = False
    warnings: int = 0  # folders/links the scan had to skip (unreadable, outside the folder, path too long)
    skipped: list = field(default_factory=list)  # [rel, reason] of each of them
    chips: int = 0  # chip windows read (and encoded unless nodata/error) by this run
    nodata: int = 0  # chips without any valid pixel, recorded as skipped


class Indexer:
    """Write side of an archive: bringing the index up to date with the folder."""

    def __init__(self, db: Database, tables: HammingTables, thumbs: Thumbnails, encoders: Encoders,
                 root: Path, index_dir: Path, model_dir: Path | None):
        self.db, self.tables, self.thumbs, self.encoders = db, tables, thumbs, encoders
        self.model, self.root, self.index_dir, self.model_dir = encoders.model, root, index_dir, model_dir
        self.last_report: IndexReport | None = None

    def index(self, bands=None, follow_symlinks: bool = False, batch_size: int = 32, workers: int | None = None,
              captions_file=None, stretch: str | None = None, chip: int | None = None,
              overlap: float | None = None, chip_m: float | None = None, ray: str | None = None,
              ray_workers: int | None = None, max_decode_bytes: float | None = MAX_DECODE_BYTES,
              decode_seconds: float | None = DECODE_SECONDS) -> Job[IndexReport]:
        """Bring the index up to date with the folder; a generator of Progress, returns IndexReport.

        ``bands`` ("4,3,2" or (4, 3, 2)) and ``stretch`` default to what the index was built
        with (else the first three bands, "auto"); changing either re-encodes every tile.
        ``chip`` (pixels), ``chip_m`` (metres, where the pixel size is known) and ``overlap``
        (in the chip's unit) cut rasters larger than the chip into windows indexed as tiles of
        their own (see :mod:`chips`); they too default to what the index was built with,
        ``chip=0`` turns chipping off, and changing them re-chips the files they affect.
        Closing the generator cancels: finished batches stay committed, the index stays
        consistent and the next run resumes. Arguments are checked here, before any work.

        ``ray`` (an address: "local", "auto", ``ray://host:port`` or ``host:port``) decodes and
        encodes on a Ray cluster, ``ray_workers`` wide (see :mod:`distributed`); everything else
        (diff, commits, progress, cancel) is this local path. Ray is imported only then.

        Locally, files are decoded in ``workers`` child processes (at least one), each file within
        ``decode_seconds`` and refused before decoding when it would decode to more than
        ``max_decode_bytes`` (see :mod:`budget`; None: no limit); such files are recorded as
        unreadable with the reason and the run goes on. A model that may mark codes for
        re-encoding is checked first (:func:`checks.check_model`), before the index changes.
        """
        bands = _parse_bands(bands)
        if stretch is not None and stretch not in STRETCHES:
            raise UserError(f'unknown stretch "{stretch}": use one of {", ".join(STRETCHES)}')
        if batch_size < 1:
            raise UserError("the batch size must be at least 1")
        cut = chips.resolve_options(self.db.chip_options(), chip, overlap, chip_m)
        user_captions = read_caption_texts(Path(captions_file)) if captions_file is not None else []
        workers = default_workers() if workers is None else max(0, int(workers))
        for value, what in ((max_decode_bytes, "decode size limit"), (decode_seconds, "decode time limit")):
            if value is not None and not value > 0:
                raise UserError(f"the {what} must be more than 0")
        decoding = DecodeOptions(workers, max_decode_bytes, decode_seconds)
        cluster = None
        if ray is not None:
            from . import distributed

            distributed.require_ray()
            if ray_workers is not None and int(ray_workers) < 1:
                raise UserError("the number of Ray workers must be at least 1")
            cluster = distributed.RayOptions(distributed.check_address(ray), ray_workers)
        self._check_model_before_run(any(v is not None for v in (bands, stretch, chip, overlap, chip_m)))
        return self._index_job(bands, stretch, cut, follow_symlinks, batch_size, decoding, user_captions, cluster)

    def _check_model_before_run(self, new_options: bool) -> None:
        """Load the encoders and run the model once when this run may mark codes for re-encoding
        (another model, or options given), so that a model that cannot work fails here, before
        the index changes. An unchanged model on an unchanged index loads nothing."""
        if getattr(self, "_model_checked", False):
            return
        if not new_options and self.db.get_meta("model_fingerprint") == self.model.fingerprint:
            return
        name = f"the hashing model {self.model_dir}" if self.model_dir else "the hashing model"
        for kind in ("image", "text"):
            try:
                getattr(self.encoders, kind)
            except UserError:
                raise
            except Exception as e:  # noqa: BLE001 - a broken encoder install is the user's to fix
                raise UserError(f"the {kind} encoder {getattr(self.model, f'{kind}_encoder')} of {name} cannot be "
                                f"loaded ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})") from e
        check_model(self.model, self.encoders.image, self.encoders.text, name)
        self._model_checked = True

    def _index_job(self, bands, stretch, cut, follow_symlinks, batch_size, decoding,
                   user_captions, cluster=None) -> Job[IndexReport]:
        rep = IndexReport()
        self.last_report = rep
        start = time.perf_counter()
        lock = self._run_lock = _RunLock(self.index_dir)
        for name in FAISS_FILES.values():  # temp files of a run that was killed while saving
            for tmp in self.index_dir.glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)
        db = self.db.dedicated()
        try:
            opts = self._options(db, bands, stretch)
            yield from self._start_run(db, opts, cut)
            yield from self._fill_captions(db, user_captions)
            entries = yield from self._scan(follow_symlinks, rep)
            todo = self._apply_diff(db, entries, rep)
            work = yield from ChipPlanner(db, self._dropped).plan(todo, cut, rep)
            yield from self._encode(db, work, opts, batch_size, decoding, rep, cluster)
        except (GeneratorExit, KeyboardInterrupt):
            rep.cancelled = True
            raise
        except (sqlite3.OperationalError, OSError) as e:  # the disk filled up, the index went read-only...
            raise storage_error(e, self.index_dir) or e
        finally:
            try:
                self._end_run(db)
            finally:
                db.close()
                lock.release()
                rep.seconds = time.perf_counter() - start
        return rep

    def _end_run(self, db: Database) -> None:
        """Roll back a batch left half-way, bring the faiss files in step, stamp the run. When the run
        is failing already (a full disk), a failure here must not hide why, nor turn it into another."""
        failing = sys.exc_info()[1] is not None
        try:
            db.rollback_open_transaction()
            for which in FAISS_FILES:
                self.tables.sync(db, which)
            db.set_meta("last_indexed", now())
        except (sqlite3.Error, OSError) as e:
            if not failing:
                raise storage_error(e, self.index_dir) or e

    def _options(self, db: Database, bands, stretch) -> dict:
        """Band/stretch options of this run: the given ones, else those the index was built with."""
        stored = db.options()
        return {"bands": list(bands) if bands is not None else stored["bands"], "stretch": stretch or stored["stretch"]}

    def _dropped(self, gen: int, ids) -> None:
        """Rows committed in generation ``gen`` lost their codes (changed, moved away, removed)."""
        self.tables.update("tiles", gen, remove=ids)
        self.thumbs.drop(ids)

    def _start_run(self, db: Database, opts: dict, cut: chips.ChipOptions | None) -> Job[None]:
        """Record model and options; mark for re-encoding what a change of model or options affects."""
        fp = self.model.fingerprint
        stored_fp, stored_opts = db.get_meta("model_fingerprint"), db.get_meta("options")
        new_opts = json.dumps(opts, sort_keys=True)
        new_cut = cut.to_json() if cut else None
        reason = ("the hashing model changed" if stored_fp not in (None, fp) else
                  "the band/stretch options changed" if stored_opts not in (None, new_opts) else None)
        n, rechip = 0, []
        with db.transaction():
            if reason:
                n = db.mark_all_pending(captions_too=stored_fp != fp)
                tiles_gen = db.bump("tiles")
                captions_gen = db.bump("captions") if stored_fp != fp else None
            elif db.get_meta("chips") != new_cut:
                rechip = db.rows_to_rechip(cut)
                db.mark_pending(rechip)
                tiles_gen = db.bump("tiles") if rechip else None
            for key, value in (("model_fingerprint", fp), ("options", new_opts), ("bits", self.model.bits),
                               ("image_encoder", self.model.image_encoder), ("text_encoder", self.model.text_encoder),
                               ("model_dir", str(self.model_dir) if self.model_dir else None), ("chips", new_cut)):
                db.set_meta(key, value)
        if reason:
            self.tables.clear("tiles", tiles_gen, self.model.bits)
            if captions_gen is not None:
                self.tables.clear("captions", captions_gen, self.model.bits)
            yield Progress("index", 0, 0, f"{reason}: re-encoding all {n} tiles", {"reencode": n})
        elif rechip:
            self.tables.update("tiles", tiles_gen, remove=rechip)
            yield Progress("index", 0, 0, f"the chip options changed: re-chipping {len(rechip)} tiles",
                           {"reencode": len(rechip)})

    def _fill_captions(self, db: Database, user_captions: list[str]) -> Job[None]:
        """Encode the model bundle's captions (once per model, see :func:`captions.caption_bank_codes`)
        and the user's captions into the caption archive."""
        fp = self.model.fingerprint
        texts: list[tuple[str, str]] = []
        bank: dict[str, np.ndarray] = {}
        if db.get_meta("captions_fingerprint") != fp and self.model_dir is not None:
            bundle = self.model_dir / "captions.json"
            if bundle.is_file():
                texts += [(t, "model") for t in read_caption_texts(bundle)]
                bank_texts = [t for t, _ in texts]
                bank = dict(zip(bank_texts, (yield from caption_bank_codes(self.model, self.encoders.text, bank_texts,
                                                                            self.model_dir))))
        texts += [(t, "user") for t in user_captions]
        known, uncoded = db.caption_texts()
        work = [(cid, t, None) for cid, t in uncoded]
        for text, source in texts:
            if text not in known:
                known.add(text)
                work.append((None, text, source))
        todo = [t for _, t, _ in work if t not in bank]
        encoded = yield from encode_texts(self.model, self.encoders.text, todo)
        bank.update(zip(todo, encoded))
        with db.transaction():
            db.put_captions([(cid, text, source, bank[text].tobytes()) for cid, text, source in work])
            if work:
                db.bump("captions")
            db.set_meta("captions_fingerprint", fp)
        if work:
            self.tables.sync(db, "captions")

    def _scan(self, follow_symlinks: bool, rep: IndexReport) -> Job[list]:
        """Every candidate file under the root (minus the index itself if it sits inside)."""
        problems: list = []
        entries = []
        inside = os.path.relpath(self.index_dir, self.root)
        skip = None if inside == os.pardir or inside.startswith(os.pardir + os.sep) else inside.replace(os.sep, "/") + "/"
        for entry in imagery.scan(self.root, follow_symlinks=follow_symlinks, errors=problems):
            if skip and entry.rel.startswith(skip):
                continue
            entries.append(entry)
            if len(entries) % 2000 == 0:
                yield Progress("scan", len(entries), 0, display_path(entry.rel))
        rep.skipped = [[display_path(rel), reason] for rel, reason in problems]
        rep.warnings = len(problems)
        return entries

    def _apply_diff(self, db: Database, entries: list, rep: IndexReport) -> list[FileTodo]:
        """Commit moves and removals (of whole files: all of a scene's chips); return the files to work on."""
        by_rel: dict[bytes, list] = {}
        for r in db.file_rows():
            by_rel.setdefault(bytes(r[1]), []).append(r)
        todo, new = [], []
        for e in entries:
            rows = by_rel.pop(os.fsencode(e.rel), None)
            if rows is None:
                new.append(e)
            elif all(r[5] != "pending" and r[2] == e.size and r[3] == e.mtime_ns for r in rows):
                rep.unchanged += 1
            else:
                todo.append(FileTodo(e, rows))
        # What vanished and what appeared with the same size and content hash was moved/renamed.
        candidates: dict[tuple, list] = {}
        for rel, rows in by_rel.items():
            digest = next((r[4] for r in rows if r[4]), None)
            if digest:
                candidates.setdefault((rows[0][2], digest), []).append(rel)
        sizes = {size for size, _ in candidates}
        moves, fresh = [], []
        for e in new:
            match = None
            if e.size in sizes:
                try:
                    match = candidates.get((e.size, imagery.quick_hash(e.path)))
                except imagery.ImageryError:
                    match = None
            if match:
                moves.append((by_rel.pop(match.pop()), e))
            else:
                fresh.append(e)
        removed = [r[0] for rows in by_rel.values() for r in rows]
        with db.transaction():
            for rows, e in moves:
                db.move_file(rows[0][1], display_path(e.rel), os.fsencode(e.rel), e.size, e.mtime_ns)
                if any(r[5] == "pending" for r in rows):
                    todo.append(FileTodo(e, [(*r[:2], e.size, e.mtime_ns, *r[4:]) for r in rows]))
            db.delete_tiles(removed)
            gen = db.bump("tiles") if removed else None
            db.set_meta(SKIPPED_KEY, json.dumps(rep.skipped[:MAX_SKIPPED_KEPT]) if rep.skipped else None)
        if removed:
            self._dropped(gen, removed)
        rep.moved, rep.removed = len(moves), len(removed)
        return interleaved(todo + [FileTodo(e, []) for e in fresh], entries)

    def _encode(self, db: Database, work: Work, opts: dict, batch_size: int, decoding: DecodeOptions, rep: IndexReport,
                cluster=None) -> Job[None]:
        """Decode and encode (here, or on Ray with ``cluster``), commit batch by batch, yielding after each commit."""
        total = work.total
        if not total:
            return
        if cluster is None:
            batches = self._local_batches(work, opts, batch_size, decoding)
        else:
            from .distributed import ray_batches

            batches = ray_batches(self.encoders, work, opts, batch_size, cluster, decoding.max_bytes)
        meter, done, saved = RateMeter(), 0, time.monotonic()
        try:
            for batch in batches:
                if isinstance(batch, str):  # a message of the batch source (where Ray runs the work)
                    yield Progress("index", 0, 0, batch)
                    continue
                if isinstance(batch, int):  # still decoding item ``batch``
                    yield Progress("decode", done, total, f"decoding {work.label(batch)}",
                                   {"rate": meter.rate(done), "errors": rep.errors, "skipped": rep.unchanged})
                    continue
                known, ids, codes = [], [], []
                with db.transaction():
                    for b in batch:
                        tid = self._commit_item(db, work, b, b["code"], known, rep)
                        if b["code"] is not None:
                            ids.append(tid)
                            codes.append(b["code"])
                    gen = db.bump("tiles")
                codes = np.stack(codes) if codes else np.zeros((0, self.tables.bits // 8), np.uint8)
                self.tables.update("tiles", gen, remove=known, ids=ids, codes=codes)
                self.thumbs.drop(known)
                done += len(batch)
                if time.monotonic() - saved > SAVE_EVERY_S:
                    self.tables.save(db, "tiles")
                    saved = time.monotonic()
                yield Progress("index", done, total, work.label(batch[-1]["i"]),
                               {"rate": meter.rate(done), "eta": meter.eta(done, total), "errors": rep.errors,
                                "skipped": rep.unchanged, "nodata": rep.nodata})
        finally:
            batches.close()  # stops the decoding workers (or the Ray dataset) now, also on cancel

    def _local_batches(self, work: Work, opts: dict, batch_size: int, decoding: DecodeOptions) -> Iterator[list[dict]]:
        """Items decoded by child processes (:mod:`decoding`) and encoded here: :class:`TileReader`
        dicts plus ``code`` (packed, or None for an unreadable or nodata item), batch by batch;
        while a decode is slow, the number of the item (an int) now and then."""
        encoder = self.encoders.image
        reader = TileReader(work, int(getattr(encoder, "input_size", DEFAULT_INPUT_SIZE)), opts["bands"],
                            opts["stretch"], decoding.max_bytes)
        # More than one process only pays off when there is more than one batch to overlap with encoding.
        processes = decoding.workers if work.total > batch_size else 1
        items = prefetched(decoded(reader, range(work.total), processes, decoding.seconds,
                                   inherited=[self._run_lock.file]), 2 * batch_size)
        try:
            batch = []
            for item in items:
                if isinstance(item, int):  # a long decode: let the caller see progress (and cancel)
                    yield item
                    continue
                batch.append(item)
                if len(batch) == batch_size or item["i"] == work.total - 1:
                    yield self._encoded(encoder, batch)
                    batch = []
        finally:
            items.close()  # stops the decoding processes now, also on cancel

    def _encoded(self, encoder, batch: list[dict]) -> list[dict]:
        """``batch`` with ``code`` set: packed, or None for an unreadable or nodata item."""
        good = [b for b in batch if b["pixels"] is not None]
        codes = self.model.image_codes(encoder.encode(np.stack([b["pixels"] for b in good]))) if good else ()
        for b in batch:
            b["code"] = None
        for b, c in zip(good, codes):
            b["code"] = c
        return batch

    def _commit_item(self, db: Database, work: Work, item: dict, code: np.ndarray | None, known: list,
                     rep: IndexReport) -> int:
        """Write one decoded item (inside the batch's transaction); count it; return its row id."""
        i = item["i"]
        f, tid = int(work.item_file[i]), int(work.item_id[i])
        status = "ok" if code is not None else "nodata" if item["nodata"] else "error"
        blob = code.tobytes() if code is not None else None
        if tid < 0:  # a whole file: insert, or update its row in place
            entry = work.entries[f]
            tid = db.upsert_tile(_tile_row(entry, item, status, blob))
            if work.known[f]:
                known.append(tid)
        else:  # a chip: its row was written by the plan
            db.set_tile_result(tid, status, item["error"], blob)
            rep.chips += 1
        rep.errors += status == "error"
        rep.nodata += status == "nodata"
        work.fine[f] |= status != "error"
        work.remaining[f] -= 1
        if work.remaining[f] == 0 and work.fine[f]:
            if work.known[f]:
                rep.updated += 1
            else:
                rep.added += 1
        return tid


# --------------------------------------------------------------------------- helpers

def interleaved(todo: list[FileTodo], entries: list) -> list[FileTodo]:
    """``todo`` taken in turn from each folder (a/1, b/1, c/1, a/2, ...), so that a search during a
    long first run sees every part of the archive, not only its alphabetically first folders.

    The turns are those of all scanned ``entries``, of which ``todo`` keeps the order: a resumed
    run continues the interrupted one's order, and gives its tiles the ids an uninterrupted run would.
    """
    folders: dict[str, int] = {}
    turn: dict[str, int] = {}
    count: dict[str, int] = {}
    for e in entries:
        folder = os.path.dirname(e.rel)
        folders.setdefault(folder, len(folders))
        turn[e.rel] = count[folder] = count.get(folder, -1) + 1
    return sorted(todo, key=lambda f: (turn.get(f.entry.rel, 0), folders.get(os.path.dirname(f.entry.rel), 0)))


def _tile_row(entry, item: dict, status: str, blob: bytes | None) -> tuple:
    rel_bytes = os.fsencode(entry.rel)
    m = item["meta"] or {}
    return (display_path(rel_bytes), rel_bytes, entry.size, entry.mtime_ns, item["hash"],
            m.get("width"), m.get("height"), m.get("bands"), m.get("dtype"), m.get("crs"),
            json.dumps(m["footprint"]) if m.get("footprint") else None, json.dumps(m) if m else None,
            status, item["error"], blob)


def _parse_bands(bands) -> tuple[int, ...] | None:
    if bands is None:
        return None
    text = bands if isinstance(bands, str) else ",".join(str(b) for b in bands)
    try:
        return imagery.parse_bands(text)
    except ValueError as e:
        raise UserError(str(e)) from e


class _RunLock:
    """One indexing run per index directory, across threads and processes (released on kill -9)."""

    def __init__(self, index_dir: Path):
        try:
            self.file = open(index_dir / RUN_LOCK, "a+b")
        except OSError as e:
            raise storage_error(e, index_dir) or UserError(f"cannot write to the index at {index_dir}: "
                                                           f"{e.strerror or e}") from e
        try:
            import fcntl
        except ImportError:  # Windows: fall back to no cross-process lock
            return
        try:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            self.file.close()
            raise UserError("this folder is already being indexed (by another window or process)") from e

    def release(self) -> None:
        self.file.close()
