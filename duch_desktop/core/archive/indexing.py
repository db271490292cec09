"""The indexing run: scan the folder, diff it against the archive, plan chips, encode, commit.

:class:`Indexing` is a mixin of :class:`index.Archive` (state lives there: ``self._codes``,
``self._gens``, ``self.model``...). A run is a :data:`jobs.Job`: scan -> diff (moves, removals,
per file) -> plan (scenes cut into chips, see :mod:`chips`) -> decode + encode batch by batch,
each batch committing rows and codes together, so that a cancel or a kill -9 at any moment
leaves an index that opens and resumes without duplicates or losses. A scene's chip rows are
written as 'pending' before its first chip is encoded, so a scene interrupted half-way resumes
with its missing chips only. One run per index directory at a time (:class:`_RunLock`).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..imagery import chips
from ..imagery import reading as imagery
from ..model.defaults import default_workers
from ..files import display_path
from ..jobs import Job, Progress, RateMeter, UserError
from .reader import FileTodo, TileReader, Work, as_list
from .hamming import CodeIndex
from .queries import DEFAULT_INPUT_SIZE
from .database import FAISS_FILES, RUN_LOCK, TILE_KEY, bump, connect, get_meta, now, set_meta

STRETCHES = ("auto", "percentile", "none")
SAVE_EVERY_S = 30.0  # rewrite tiles.faiss this often during a long run (bounds the rebuild after a crash)


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
    warnings: int = 0  # folders/links the scan had to skip (unreadable, outside the folder)
    chips: int = 0  # chip windows read (and encoded unless nodata/error) by this run
    nodata: int = 0  # chips without any valid pixel, recorded as skipped


ROWS_SQL = "SELECT id, rel_bytes, size, mtime_ns, content_hash, status, win_col, win_row, win_w, win_h FROM tiles"


class Indexing(chips.ChipPlanning):
    """Write side of :class:`index.Archive`: bringing the index up to date with the folder."""

    def index(self, bands=None, follow_symlinks: bool = False, batch_size: int = 32, workers: int | None = None,
              captions_file=None, stretch: str | None = None, chip: int | None = None,
              overlap: float | None = None, chip_m: float | None = None, ray: str | None = None,
              ray_workers: int | None = None) -> Job[IndexReport]:
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
        """
        bands = _parse_bands(bands)
        if stretch is not None and stretch not in STRETCHES:
            raise UserError(f'unknown stretch "{stretch}": use one of {", ".join(STRETCHES)}')
        if batch_size < 1:
            raise UserError("the batch size must be at least 1")
        cut = chips.resolve_options(self.chip_options, chip, overlap, chip_m)
        user_captions = read_caption_texts(Path(captions_file)) if captions_file is not None else []
        workers = default_workers() if workers is None else max(0, int(workers))
        cluster = None
        if ray is not None:
            from . import distributed

            distributed.require_ray()
            if ray_workers is not None and int(ray_workers) < 1:
                raise UserError("the number of Ray workers must be at least 1")
            cluster = distributed.RayOptions(distributed.check_address(ray), ray_workers)
        return self._index_job(bands, stretch, cut, follow_symlinks, batch_size, workers, user_captions, cluster)

    def _index_job(self, bands, stretch, cut, follow_symlinks, batch_size, workers,
                   user_captions, cluster=None) -> Job[IndexReport]:
        rep = IndexReport()
        self.last_report = rep
        start = time.perf_counter()
        lock = _RunLock(self.index_dir)
        for name in FAISS_FILES.values():  # temp files of a run that was killed while saving
            for tmp in self.index_dir.glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)
        conn = connect(self.db_path)
        try:
            opts = self._options(conn, bands, stretch)
            yield from self._start_run(conn, opts, cut)
            yield from self._fill_captions(conn, user_captions)
            entries = yield from self._scan(follow_symlinks, rep)
            todo = self._apply_diff(conn, entries, rep)
            work = yield from self._plan(conn, todo, cut, rep)
            yield from self._encode(conn, work, opts, batch_size, workers, rep, cluster)
        except (GeneratorExit, KeyboardInterrupt):
            rep.cancelled = True
            raise
        finally:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                for which in FAISS_FILES:
                    self._sync_codes(conn, which)
                set_meta(conn, "last_indexed", now())
            finally:
                conn.close()
                lock.release()
                rep.seconds = time.perf_counter() - start
        return rep

    def _options(self, conn, bands, stretch) -> dict:
        """Band/stretch options of this run: the given ones, else those the index was built with."""
        stored = json.loads(get_meta(conn, "options") or "{}")
        return {"bands": list(bands) if bands is not None else stored.get("bands"),
                "stretch": stretch or stored.get("stretch") or "auto"}

    def _start_run(self, conn, opts: dict, cut: chips.ChipOptions | None) -> Job[None]:
        """Record model and options; mark for re-encoding what a change of model or options affects."""
        fp = self.model.fingerprint
        stored_fp, stored_opts = get_meta(conn, "model_fingerprint"), get_meta(conn, "options")
        new_opts = json.dumps(opts, sort_keys=True)
        new_cut = cut.to_json() if cut else None
        reason = ("the hashing model changed" if stored_fp not in (None, fp) else
                  "the band/stretch options changed" if stored_opts not in (None, new_opts) else None)
        conn.execute("BEGIN IMMEDIATE")
        n, rechip = 0, []
        if reason:
            n = conn.execute("UPDATE tiles SET status = 'pending', code = NULL").rowcount
            tiles_gen = bump(conn, "tiles")
            if stored_fp != fp:
                conn.execute("UPDATE captions SET code = NULL")
                captions_gen = bump(conn, "captions")
        elif get_meta(conn, "chips") != new_cut:
            rechip = chips.rows_to_rechip(conn, cut)
            conn.executemany("UPDATE tiles SET status = 'pending', code = NULL WHERE id = ?", [(i,) for i in rechip])
            tiles_gen = bump(conn, "tiles") if rechip else None
        for key, value in (("model_fingerprint", fp), ("options", new_opts), ("bits", self.model.bits),
                           ("image_encoder", self.model.image_encoder), ("text_encoder", self.model.text_encoder),
                           ("model_dir", str(self.model_dir) if self.model_dir else None), ("chips", new_cut)):
            set_meta(conn, key, value)
        conn.execute("COMMIT")
        if reason:
            self.bits = self.model.bits
            self._codes["tiles"], self._gens["tiles"] = CodeIndex(self.bits), tiles_gen
            if stored_fp != fp:
                self._codes["captions"], self._gens["captions"] = CodeIndex(self.bits), captions_gen
            yield Progress("index", 0, 0, f"{reason}: re-encoding all {n} tiles", {"reencode": n})
        elif rechip:
            self._codes["tiles"].update(remove=rechip)
            self._gens["tiles"] = tiles_gen
            yield Progress("index", 0, 0, f"the chip options changed: re-chipping {len(rechip)} tiles",
                           {"reencode": len(rechip)})

    def _fill_captions(self, conn, user_captions: list[str]) -> Job[None]:
        """Encode the model bundle's captions (once per model, see :func:`caption_bank_codes`) and the
        user's captions into the caption archive."""
        fp = self.model.fingerprint
        texts: list[tuple[str, str]] = []
        bank: dict[str, np.ndarray] = {}
        if get_meta(conn, "captions_fingerprint") != fp and self.model_dir is not None:
            bundle = self.model_dir / "captions.json"
            if bundle.is_file():
                texts += [(t, "model") for t in read_caption_texts(bundle)]
                bank_texts = [t for t, _ in texts]
                bank = dict(zip(bank_texts, (yield from caption_bank_codes(self.model, self.text_encoder, bank_texts))))
        texts += [(t, "user") for t in user_captions]
        known = {t for (t,) in conn.execute("SELECT text FROM captions")}
        work = [(cid, t, None) for cid, t in conn.execute("SELECT id, text FROM captions WHERE code IS NULL")]
        for text, source in texts:
            if text not in known:
                known.add(text)
                work.append((None, text, source))
        todo = [t for _, t, _ in work if t not in bank]
        encoded = yield from _encode_captions(self.model, self.text_encoder, todo)
        bank.update(zip(todo, encoded))
        conn.execute("BEGIN IMMEDIATE")
        for (cid, text, source), code in ((w, bank[w[1]]) for w in work):
            if cid is None:
                conn.execute("INSERT INTO captions(text, source, code) VALUES(?, ?, ?)", (text, source, code.tobytes()))
            else:
                conn.execute("UPDATE captions SET code = ? WHERE id = ?", (code.tobytes(), cid))
        if work:
            bump(conn, "captions")
        set_meta(conn, "captions_fingerprint", fp)
        conn.execute("COMMIT")
        if work:
            self._sync_codes(conn, "captions")

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
        rep.warnings = len(problems)
        return entries

    def _apply_diff(self, conn, entries: list, rep: IndexReport) -> list[FileTodo]:
        """Commit moves and removals (of whole files: all of a scene's chips); return the files to work on."""
        by_rel: dict[bytes, list] = {}
        for r in conn.execute(ROWS_SQL):
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
        conn.execute("BEGIN IMMEDIATE")
        for rows, e in moves:
            conn.execute("UPDATE tiles SET rel = ?, rel_bytes = ?, size = ?, mtime_ns = ? WHERE rel_bytes = ?",
                         (display_path(e.rel), os.fsencode(e.rel), e.size, e.mtime_ns, rows[0][1]))
            if any(r[5] == "pending" for r in rows):
                todo.append(FileTodo(e, [(*r[:2], e.size, e.mtime_ns, *r[4:]) for r in rows]))
        conn.executemany("DELETE FROM tiles WHERE id = ?", [(i,) for i in removed])
        gen = bump(conn, "tiles") if removed else None
        conn.execute("COMMIT")
        if removed:
            self._codes["tiles"].update(remove=removed)
            self._gens["tiles"] = gen
            self._drop_thumbs(removed)
        rep.moved, rep.removed = len(moves), len(removed)
        return todo + [FileTodo(e, []) for e in fresh]

    def _encode(self, conn, work: Work, opts: dict, batch_size: int, workers: int, rep: IndexReport,
                cluster=None) -> Job[None]:
        """Decode and encode (here, or on Ray with ``cluster``), commit batch by batch, yielding after each commit."""
        total = work.total
        if not total:
            return
        if cluster is None:
            batches = self._local_batches(work, opts, batch_size, workers)
        else:
            from .distributed import ray_batches

            batches = ray_batches(self, work, opts, batch_size, cluster)
        meter, done, saved = RateMeter(), 0, time.monotonic()
        try:
            for batch in batches:
                if isinstance(batch, str):  # a message of the batch source (where Ray runs the work)
                    yield Progress("index", 0, 0, batch)
                    continue
                known, ids, codes = [], [], []
                conn.execute("BEGIN IMMEDIATE")
                for b in batch:
                    tid = self._commit_item(conn, work, b, b["code"], known, rep)
                    if b["code"] is not None:
                        ids.append(tid)
                        codes.append(b["code"])
                codes = np.stack(codes) if codes else np.zeros((0, self.bits // 8), np.uint8)
                gen = bump(conn, "tiles")
                conn.execute("COMMIT")
                self._codes["tiles"].update(remove=known, ids=ids, codes=codes)
                self._gens["tiles"] = gen
                self._drop_thumbs(known)
                done += len(batch)
                if time.monotonic() - saved > SAVE_EVERY_S:
                    self._save_codes(conn, "tiles", self._codes["tiles"], gen)
                    saved = time.monotonic()
                yield Progress("index", done, total, work.label(batch[-1]["i"]),
                               {"rate": meter.rate(done), "eta": meter.eta(done, total), "errors": rep.errors,
                                "skipped": rep.unchanged, "nodata": rep.nodata})
        finally:
            batches.close()  # stops the decoding workers (or the Ray dataset) now, also on cancel

    def _local_batches(self, work: Work, opts: dict, batch_size: int, workers: int) -> Iterator[list[dict]]:
        """Items decoded by DataLoader workers and encoded here: :class:`TileReader` dicts plus
        ``code`` (packed, or None for an unreadable or nodata item), batch by batch."""
        encoder = self.image_encoder
        reader = TileReader(work, int(getattr(encoder, "input_size", DEFAULT_INPUT_SIZE)), opts["bands"],
                            opts["stretch"])
        from torch.utils.data import DataLoader

        # Worker processes only pay off when there is more than one batch to overlap with encoding.
        loader = DataLoader(reader, batch_size=batch_size, shuffle=False, collate_fn=as_list,
                            num_workers=workers if work.total > batch_size else 0)
        batches = iter(loader)
        try:
            for batch in batches:
                good = [b for b in batch if b["pixels"] is not None]
                codes = (self.model.image_codes(encoder.encode(np.stack([b["pixels"] for b in good])))
                         if good else ())
                for b in batch:
                    b["code"] = None
                for b, c in zip(good, codes):
                    b["code"] = c
                yield batch
        finally:
            del batches  # shuts the decoding workers down now, also on cancel

    def _commit_item(self, conn, work: Work, item: dict, code: np.ndarray | None, known: list,
                     rep: IndexReport) -> int:
        """Write one decoded item (inside the batch's transaction); count it; return its row id."""
        i = item["i"]
        f, tid = int(work.item_file[i]), int(work.item_id[i])
        status = "ok" if code is not None else "nodata" if item["nodata"] else "error"
        blob = code.tobytes() if code is not None else None
        if tid < 0:  # a whole file: insert, or update its row in place
            entry = work.entries[f]
            tid = conn.execute(UPSERT_TILE, _tile_row(entry, item, status, blob)).fetchone()[0]
            if work.known[f]:
                known.append(tid)
        else:  # a chip: its row was written by the plan
            conn.execute("UPDATE tiles SET status = ?, error = ?, code = ? WHERE id = ?",
                         (status, item["error"], blob, tid))
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

UPSERT_TILE = f"""
INSERT INTO tiles(rel, rel_bytes, size, mtime_ns, content_hash, width, height, bands, dtype, crs,
                  footprint, meta, status, error, code)
VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT({TILE_KEY}) DO UPDATE SET
    rel = excluded.rel, size = excluded.size, mtime_ns = excluded.mtime_ns, content_hash = excluded.content_hash,
    width = excluded.width, height = excluded.height, bands = excluded.bands, dtype = excluded.dtype,
    crs = excluded.crs, footprint = excluded.footprint, meta = excluded.meta, status = excluded.status,
    error = excluded.error, code = excluded.code
RETURNING id
"""
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


def caption_bank_dir() -> Path:
    """Where the codes of model bundles' caption banks are cached (the user cache dir)."""
    from platformdirs import user_cache_dir

    from ..model.defaults import APP_NAME

    return Path(user_cache_dir(APP_NAME)) / "captions"


def caption_bank_codes(model, text_encoder, texts: list[str]) -> Job[np.ndarray]:
    """Packed codes of a model's caption bank, encoded once per model and cached, not once per index.

    Keyed by the model's fingerprint, its text encoder's identity and the texts; the runtime that
    encoded them does not matter (its features agree to 1e-4, see :mod:`runtime`).
    """
    key = hashlib.sha256(json.dumps([model.fingerprint, model.text_encoder, texts]).encode()).hexdigest()[:32]
    path = caption_bank_dir() / f"{key}.npy"
    try:
        codes = np.load(path, allow_pickle=False)
        if codes.shape == (len(texts), model.bits // 8) and codes.dtype == np.uint8:
            return codes
    except (OSError, ValueError, EOFError):
        pass  # not cached yet, or damaged: encode again
    codes = yield from _encode_captions(model, text_encoder, texts)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.save(f, codes, allow_pickle=False)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs the encoding next time
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return codes


def _encode_captions(model, text_encoder, texts: list[str]) -> Job[np.ndarray]:
    codes = [np.zeros((0, model.bits // 8), np.uint8)]
    for start in range(0, len(texts), 256):
        codes.append(model.text_codes(text_encoder.encode(texts[start:start + 256])))
        yield Progress("captions", min(len(texts), start + 256), len(texts), "encoding captions")
    return np.concatenate(codes)


def read_caption_texts(path: Path) -> list[str]:
    """Distinct caption texts of a captions file, in file order.

    Accepted: a JSON list of strings, or anything :func:`datasets.load_captions_file` reads
    (CSV ``file,caption``, JSON ``{file: [captions]}``, Karpathy-style JSON).
    """
    from ..training.datasets import clean_caption, load_captions_file

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig")) if path.suffix.lower() == ".json" else None
    except (OSError, ValueError):
        data = None  # let load_captions_file produce the plain-sentence error
    if isinstance(data, list) and all(isinstance(t, str) for t in data):
        texts = [clean_caption(t) for t in data]
    else:
        texts = [c for caps in load_captions_file(path).values() for c in caps]
    return list(dict.fromkeys(t for t in texts if t))


class _RunLock:
    """One indexing run per index directory, across threads and processes (released on kill -9)."""

    def __init__(self, index_dir: Path):
        self.file = open(index_dir / RUN_LOCK, "a+b")
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
