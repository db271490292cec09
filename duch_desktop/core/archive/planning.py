"""The planning step of an indexing run: the files to work on cut into items (whole files, or
the chips of scenes still to encode), with a scene's chip rows reconciled with its plan.

A chip's row id is stable while its file and window are: kept windows keep their ids, rows of
windows no longer planned are deleted, new windows get 'pending' rows (written before the
first chip is encoded, so a scene interrupted half-way resumes with its missing chips only).
The chip geometry itself is :mod:`imagery.chips`.
"""
from __future__ import annotations

import json
import os
import time
from typing import Callable, Sequence

import numpy as np

from ..files import display_path
from ..imagery.chips import ChipOptions, Header, read_headers, window_footprints
from ..jobs import Job, Progress
from .database import Database
from .reader import FileTodo, Work


class ChipPlanner:
    """Plans one run's items on the run's ``db``; ``dropped(gen, ids)`` is told of rows whose codes went."""

    def __init__(self, db: Database, dropped: Callable[[int, Sequence[int]], None]):
        self.db, self.dropped = db, dropped

    def plan(self, todo: list[FileTodo], cut: ChipOptions | None, rep) -> Job[Work]:
        """Cut the files to work on into items: whole files, or the chips of scenes still to encode.

        Without chip options every file is one item (no header read, no event). With them, each file's
        header decides; a scene's chip rows are reconciled with the plan in one transaction:
        rows of windows no longer planned are deleted, new windows get 'pending' rows, and kept
        windows keep their ids (re-encoded only when the file changed or they are pending).
        """
        work = Work()
        headers = read_headers([f.entry.path for f in todo], cut)
        last = time.monotonic()
        for n, (f, head) in enumerate(zip(todo, headers), 1):
            by_key = {(r[6], r[7], r[8], r[9]) if r[6] is not None else None: r for r in f.rows}
            if head is None:  # one tile: any chip rows of an earlier plan go
                drop = [r[0] for k, r in by_key.items() if k is not None]
                self._commit(drop, [])
                work.add_file(f.entry, known=bool(f.rows))
            else:
                ids, windows = self._plan_scene(f, by_key, head)
                work.add_file(f.entry, known=bool(f.rows), ids=ids, windows=windows)
                if not len(ids):
                    rep.updated += 1
            if cut is not None and (time.monotonic() - last > 0.5 or n == len(todo)):
                last = time.monotonic()
                yield Progress("plan", n, len(todo), display_path(f.entry.rel), {"items": work.total})
        return work.finish()

    def _plan_scene(self, f: FileTodo, by_key: dict, head: Header) -> tuple[np.ndarray, np.ndarray]:
        """Write the chip rows of one scene; return ids and windows of the chips to encode."""
        e, meta = f.entry, head.meta
        rel_bytes = os.fsencode(e.rel)
        changed = any(r[2] != e.size or r[3] != e.mtime_ns for r in f.rows)
        footprints = window_footprints(head.transform, meta.crs, head.windows)
        meta_json = json.dumps(meta.to_dict())
        common = (e.size, e.mtime_ns, head.content_hash, meta.width, meta.height, meta.bands, meta.dtype, meta.crs)
        ids, rows, inserts, updates = [], [], [], []
        for i, win in enumerate(head.windows.tolist()):
            row = by_key.pop(tuple(win), None)
            fp = json.dumps(footprints[i]) if footprints[i] else None
            if row is None:
                inserts.append((i, (display_path(rel_bytes), rel_bytes, *common, fp, meta_json, *win)))
            elif changed or row[5] == "pending":
                updates.append((*common, fp, meta_json, row[0]))
                ids.append(row[0])
                rows.append(i)
        drop = [r[0] for r in by_key.values()]
        ids += self._commit(drop, updates, inserts)
        rows += [i for i, _ in inserts]
        order = np.argsort(np.asarray(rows, np.int64), kind="stable")
        return np.asarray(ids, np.int64)[order], head.windows[np.asarray(rows, np.int64)[order]]

    def _commit(self, drop: list[int], updates: list, inserts: list = ()) -> list[int]:
        """Delete ``drop``, reset ``updates`` to pending, insert ``inserts``; one transaction."""
        if not (drop or updates or inserts):
            return []
        stale = drop + [u[-1] for u in updates]
        with self.db.transaction():
            self.db.delete_tiles(drop)
            self.db.reset_chips(updates)
            new_ids = [self.db.insert_chip(row) for _, row in inserts]
            gen = self.db.bump("tiles") if stale else None
        if stale:
            self.dropped(gen, stale)
        return new_ids
