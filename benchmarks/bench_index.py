"""Indexing throughput on the UCM tiles with the default encoders.

Uses the shipped model bundle when there is one, else a randomly initialised DuchModel of the
right dimensions (the codes are then meaningless, the speed is not) and says which. Prints
tiles/s, peak RSS of this process and of the decoding workers, and index size per tile.
Run: ``python benchmarks/bench_index.py [--folder ../shared/data/ucm/images] [--limit N]``.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _subset(folder: Path, limit: int, dest: Path) -> Path:
    """Copy the first ``limit`` images (scan order) into ``dest``."""
    from duch_desktop.core.imagery import reading as imagery

    for n, entry in enumerate(imagery.scan(folder)):
        if n >= limit:
            break
        target = dest / entry.rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(entry.path, target)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, default=REPO.parent / "shared" / "data" / "ucm" / "images")
    ap.add_argument("--limit", type=int, default=0, help="index only the first N tiles (copied to a temp folder)")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from duch_desktop.core.model import defaults
    from duch_desktop.core.model.encoders import DEFAULT_TEXT_ENCODER, load_image_encoder
    from duch_desktop.core.model.bundle import DuchModel
    from duch_desktop.core.model.defaults import default_workers
    from duch_desktop.core.archive.archive import Archive
    from duch_desktop.core.jobs import UserError

    work = Path(tempfile.mkdtemp(prefix="duch-bench-"))
    try:
        folder = _subset(args.folder, args.limit, work / "tiles") if args.limit else args.folder
        t = time.perf_counter()
        image = load_image_encoder()
        load_s = time.perf_counter() - t
        try:
            model, which = defaults.load_model(), "default model bundle"
        except UserError:
            model = DuchModel.new(image.dim, 384, 64, image.identity, DEFAULT_TEXT_ENCODER)
            which = f"random DuchModel ({image.dim}->64 bits; no default bundle)"
        archive = Archive.open(work / "index", model=model, image_encoder=image, create_root=folder)
        start = time.perf_counter()
        for _ in archive.index(workers=args.workers, batch_size=args.batch_size):
            pass
        seconds = time.perf_counter() - start
        stats = archive.stats()
        report = archive.last_report
        archive.close()
        n = stats.tiles + stats.errors
        faiss_bytes = (work / "index" / "tiles.faiss").stat().st_size
        result = {
            "model": which, "image_encoder": image.identity,
            "folder": str(folder), "tiles": n, "errors": report.errors,
            "workers": args.workers if args.workers is not None else default_workers(),
            "batch_size": args.batch_size, "encoder_load_s": round(load_s, 2), "index_s": round(seconds, 2),
            "tiles_per_s": round(n / seconds, 2),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_rss_worker_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
            "index_bytes_per_tile": round(stats.index_bytes / max(n, 1), 1),
            "faiss_bytes_per_tile": round(faiss_bytes / max(n, 1), 1),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:>22}: {value}")


if __name__ == "__main__":
    main()
