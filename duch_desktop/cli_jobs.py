"""The one job driver of every ``duch`` command: a progress bar per stage on stderr, Ctrl-C cancels.

A core job is a generator of :class:`Progress` (see :mod:`duch_desktop.core.jobs`). The first
Ctrl-C asks the job to stop at its next event (closing the generator runs its cleanup: an
indexing run keeps the batches it committed), a second one stops at once; either way
:class:`Cancelled` reaches :func:`cli.main`, which answers exit code 130.
"""
from __future__ import annotations

import signal
import sys
import threading

from .core.jobs import Cancelled, Job, Progress, drive

# What a stage's bar says (a stage not listed shows its own name).
STAGE_LABELS = {"scan": "scanning", "plan": "cutting scenes into chips", "index": "indexing",
                "captions": "encoding captions", "decode": "decoding a slow file"}


def run_job(job: Job):
    """Drive ``job`` to its result with a bar per stage (none when stderr is not a terminal)."""
    from tqdm import tqdm  # looked up now: tests swap tqdm.tqdm

    bars: dict[str, tqdm] = {}
    state = {"cancel": False}

    def on_sigint(signum, frame):
        if state["cancel"]:
            raise KeyboardInterrupt
        state["cancel"] = True
        print("\nstopping at the next step (Ctrl-C again to stop at once)...", file=sys.stderr)

    def on_progress(ev: Progress) -> None:
        bar = bars.get(ev.stage)
        if bar is None:
            for b in bars.values():
                b.close()
            bars.clear()
            bar = bars[ev.stage] = tqdm(total=ev.total or None, desc=STAGE_LABELS.get(ev.stage, ev.stage), unit="",
                                        dynamic_ncols=True, leave=False, file=sys.stderr, disable=None)
        if ev.message and not ev.done and not ev.total:  # a note of the job (a model change, where Ray runs)
            bar.write(ev.message, file=sys.stderr)
            return
        if ev.total and bar.total != ev.total:
            bar.total = ev.total
        if ev.done > bar.n:
            bar.update(ev.done - bar.n)
        bar.set_postfix_str(_postfix(ev), refresh=False)
        bar.refresh()

    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, on_sigint) if main_thread else None
    try:
        return drive(job, on_progress, lambda: state["cancel"])
    except KeyboardInterrupt:
        job.close()
        raise Cancelled("cancelled") from None
    finally:
        for b in bars.values():
            b.close()
        if old is not None:
            signal.signal(signal.SIGINT, old)


def _postfix(ev: Progress) -> str:
    if "rate" in ev.info:
        return f"{ev.info['rate']:.1f} tiles/s, {ev.info.get('errors', 0)} errors"
    return ev.message or ""
