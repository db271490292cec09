"""Local indexing vs indexing on Ray (local mode, N workers) on the UCM tiles; and a 10M-tile estimate.

Both runs index the same folder from scratch with the default encoders and the shipped model
bundle (else a random DuchModel of the right dimensions, which is as fast), in one process, one
after the other, and print tiles/s from the start of encoding to the last commit, encoder loading
included (the local run loads it in the driver, the Ray run in each worker: a fixed start-up cost
that a large archive amortises). The captions of the model bundle, encoded once per index by the
driver in both modes, are left out of the rate (``seconds_with_captions`` has them). Ray is started
before the Ray run is timed (a cluster is normally up already); its start time is printed apart.

Then the paper estimate for ``--tiles`` (default 10 million) tiles: code bytes, faiss and SQLite
bytes per tile measured on the index just built, and encoding time from a GPU throughput given
with ``--gpu-tiles-per-s`` (an assumption unless you measured it: see the README) and from the
CPU throughput measured here.

Run: ``python benchmarks/bench_ray.py [--folder ../shared/data/ucm/images] [--limit 400] [--ray-workers 2]``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_index import _subset  # noqa: E402  (same folder)

DEFAULT_GPU_RATE = 1000.0  # tiles/s per GPU, end to end: an assumption (see --help), not a measurement


def _model():
    from duch_desktop.core.model import defaults
    from duch_desktop.core.model.encoders import DEFAULT_IMAGE_ENCODER, DEFAULT_TEXT_ENCODER
    from duch_desktop.core.model.bundle import DuchModel
    from duch_desktop.core.jobs import UserError

    try:
        return str(defaults.default_model_dir()), "default model bundle"
    except UserError:
        return (DuchModel.new(1280, 384, 64, DEFAULT_IMAGE_ENCODER, DEFAULT_TEXT_ENCODER),
                "random DuchModel (1280->64 bits; no default bundle)")


def _run(index_dir: Path, folder: Path, model, batch_size: int, **kw) -> dict:
    """Index ``folder`` from scratch. Timed from the end of the steps before encoding (the model
    bundle's captions, encoded once per index by the driver, and the scan) to the last commit."""
    from duch_desktop.core.archive.archive import Archive

    archive = Archive.open(index_dir, model=model, create_root=folder)
    t0 = start = time.perf_counter()
    first = None  # (time, tiles) of the first commit: start-up (encoder loading, workers) is over
    for event in archive.index(batch_size=batch_size, **kw):
        now = time.perf_counter()
        if event.stage != "index":
            start = now
        elif event.done and first is None:
            first = (now, event.done)
    end = time.perf_counter()
    report, stats = archive.last_report, archive.stats()
    archive.close()
    n, seconds = report.added + report.errors, end - start
    steady = (n - first[1]) / (end - first[0]) if first and n > first[1] else None
    return {"tiles": n, "errors": report.errors, "seconds": round(seconds, 2), "tiles_per_s": round(n / seconds, 2),
            "first_commit_s": round(first[0] - start, 2) if first else None,
            "tiles_per_s_after_first_commit": round(steady, 2) if steady else None,
            "seconds_with_captions": round(end - t0, 2), "bits": stats.bits}


def _warm_up(folder: Path) -> None:
    """Load both encoders once and read the files, so that neither run pays the first imports alone."""
    from duch_desktop.core.imagery import reading as imagery
    from duch_desktop.core.model.encoders import load_image_encoder, load_text_encoder

    load_image_encoder(), load_text_encoder()
    for entry in imagery.scan(folder):
        Path(entry.path).read_bytes()


def _sizes(index_dir: Path, tiles: int) -> dict:
    """Bytes per tile of the tiles table (+ its indexes) in SQLite and of tiles.faiss."""
    conn = sqlite3.connect(index_dir / "archive.sqlite")
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'tiles'")]
        try:
            pages = conn.execute(f"SELECT SUM(pgsize) FROM dbstat WHERE name IN ({','.join('?' * len(names))})",
                                 names).fetchone()[0]
        except sqlite3.OperationalError:  # no dbstat in this SQLite: the whole file (captions included)
            pages = (index_dir / "archive.sqlite").stat().st_size
    finally:
        conn.close()
    return {"sqlite_bytes_per_tile": round(pages / tiles, 1),
            "faiss_bytes_per_tile": round((index_dir / "tiles.faiss").stat().st_size / tiles, 1)}


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, default=REPO.parent / "shared" / "data" / "ucm" / "images")
    ap.add_argument("--limit", type=int, default=0, help="index only the first N tiles (copied to a temp folder)")
    ap.add_argument("--ray-workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--tiles", type=float, default=10e6, help="archive size of the estimate (default 10 million)")
    ap.add_argument("--gpu-tiles-per-s", type=float, default=DEFAULT_GPU_RATE,
                    help=f"end-to-end tiles/s of one GPU worker for the estimate (default {DEFAULT_GPU_RATE:g}, an "
                         "assumption: EfficientNet-Lite0 at 224 px in fp16 runs several thousand images/s on one "
                         "laptop-class GPU, so decoding and file reads, not the GPU, set the pace)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import ray

    from duch_desktop.core.model.defaults import default_workers
    from duch_desktop.core.archive.distributed import quiet_ray_logs

    model, which = _model()
    work = Path(tempfile.mkdtemp(prefix="duch-bench-ray-"))
    try:
        folder = _subset(args.folder, args.limit, work / "tiles") if args.limit else args.folder
        _warm_up(folder)
        load = os.getloadavg()
        local = _run(work / "local", folder, model, args.batch_size, workers=default_workers())
        t = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, sys.path)])}})
        ray_start = time.perf_counter() - t
        import ray.data  # noqa: F401 - sets up its loggers, which quiet_ray_logs then quiets

        quiet_ray_logs()
        try:
            on_ray = _run(work / "ray", folder, model, args.batch_size, ray="local", ray_workers=args.ray_workers)
        finally:
            ray.shutdown()
        sizes = _sizes(work / "local", local["tiles"])
        same = _codes(work / "local") == _codes(work / "ray")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    n, bits = args.tiles, local["bits"]
    code_bytes = bits // 8
    cpu_rate = local["tiles_per_s"]
    estimate = {
        "tiles": int(n), "bits": bits, "code_bytes": code_bytes, "codes_mb": round(n * code_bytes / 1e6, 1),
        "faiss_mb": round(n * sizes["faiss_bytes_per_tile"] / 1e6, 1),
        "sqlite_mb": round(n * sizes["sqlite_bytes_per_tile"] / 1e6, 1),
        "gpu_tiles_per_s_assumed": args.gpu_tiles_per_s,
        "hours_1_gpu": round(n / args.gpu_tiles_per_s / 3600, 2),
        "hours_8_gpus": round(n / args.gpu_tiles_per_s / 8 / 3600, 2),
        f"hours_this_machine_{os.cpu_count()}_cpus": round(n / cpu_rate / 3600, 1),
    }
    after = os.getloadavg()
    result = {"machine": f"{os.cpu_count()} CPUs, 1-min load average {load[0]:.1f} at start, {after[0]:.1f} at end",
              "model": which, "folder": str(args.folder), "limit": args.limit or None,
              "local": {**local, "workers": default_workers()},
              "ray": {**on_ray, "workers": args.ray_workers, "ray_start_s": round(ray_start, 2)},
              "same_codes": same, **sizes, "estimate": estimate}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"machine: {result['machine']}; {which}; {local['tiles']} tiles of {args.folder}")
    for name, r in (("local", result["local"]), (f"ray local mode, {args.ray_workers} workers", result["ray"])):
        print(f"  {name:>28}: {r['tiles_per_s']:7.2f} tiles/s ({r['tiles']} tiles in {r['seconds']} s; first commit "
              f"after {r['first_commit_s']} s, then {r['tiles_per_s_after_first_commit']} tiles/s)")
    print(f"  Ray start (not in the Ray run's time): {ray_start:.1f} s; same codes per path: {same}")
    print(f"estimate for {n:,.0f} tiles at {bits} bits:")
    print(f"  codes {estimate['codes_mb']:,} MB ({code_bytes} B/tile); tiles.faiss {estimate['faiss_mb']:,} MB "
          f"({sizes['faiss_bytes_per_tile']} B/tile); SQLite tiles table {estimate['sqlite_mb']:,} MB "
          f"({sizes['sqlite_bytes_per_tile']} B/tile, measured)")
    print(f"  encoding at {args.gpu_tiles_per_s:g} tiles/s per GPU (assumed): {_hours(n / args.gpu_tiles_per_s)} on 1 GPU, "
          f"{_hours(n / args.gpu_tiles_per_s / 8)} on 8; at this machine's {cpu_rate} tiles/s (measured): "
          f"{_hours(n / cpu_rate)}")


def _codes(index_dir: Path) -> dict:
    conn = sqlite3.connect(index_dir / "archive.sqlite")
    try:
        return dict(conn.execute("SELECT rel_bytes, code FROM tiles").fetchall())
    finally:
        conn.close()


if __name__ == "__main__":
    main()
