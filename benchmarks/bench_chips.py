"""Chip mode on one huge scene: peak memory and chips/s while a 20 000 x 20 000 px scene is cut and indexed.

Generates (in a child process, so its memory is not counted) a tiled, JPEG-compressed, sparse
GeoTIFF in UTM at 0.3 m/px: most blocks are never written (nodata), a fraction ``--fill`` of
1024 px squares hold UCM tiles (``../shared/data/ucm/images``) or, without them, a synthetic
texture. Then indexes it with ``--chip``/``--overlap`` using the default image encoder and
the shipped model bundle (else a random DuchModel of the right size: the codes are then
meaningless, speed and memory are not), or ``--tiny`` encoders (no weights: the reading and
bookkeeping cost alone). Prints peak RSS (this process; child processes: the generator and any decoding workers),
the RSS sampled during indexing, chips read / encoded / nodata, chips/s and the time of one
scene preview. Run: ``python benchmarks/bench_chips.py [--size 20000] [--tiny] [--json]``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
UCM = REPO.parent / "shared" / "data" / "ucm" / "images"

GENERATE = r"""
import sys, numpy as np, rasterio
from pathlib import Path
from rasterio.transform import from_origin
from rasterio.windows import Window
path, size, fill, ucm = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4])
tiles = sorted(ucm.glob("*/*.jpg"))[::7] if ucm.is_dir() else []
rng = np.random.default_rng(0)

def region(k):
    out = np.empty((3, 1024, 1024), np.uint8)
    for j in range(16):
        if tiles:
            from PIL import Image
            with Image.open(tiles[(k * 16 + j) % len(tiles)]) as im:
                t = np.asarray(im.convert("RGB").resize((256, 256))).transpose(2, 0, 1)
        else:
            t = (rng.normal(120, 40, (3, 32, 32)).clip(0, 255).astype(np.uint8).repeat(8, 1).repeat(8, 2))
        out[:, (j // 4) * 256:(j // 4 + 1) * 256, (j % 4) * 256:(j % 4 + 1) * 256] = t
    return np.maximum(out, 16)  # 0 is nodata; JPEG must not round valid pixels to it

n = (size + 1023) // 1024
every = max(1, round(1 / fill)) if fill > 0 else 0
with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32633",
                   transform=from_origin(500000.0, 5810000.0, 0.3, 0.3), nodata=0, tiled=True, blockxsize=512,
                   blockysize=512, compress="jpeg", jpeg_quality=85, photometric="ycbcr", sparse_ok=True) as ds:
    k = 0
    for by in range(n):
        for bx in range(n):
            if every and (bx * 3 + by * 5) % every == 0:
                w, h = min(1024, size - bx * 1024), min(1024, size - by * 1024)
                ds.write(region(k)[:, :h, :w], window=Window(bx * 1024, by * 1024, w, h))
                k += 1
print(k)
"""


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=20000, help="scene side in pixels (default 20000)")
    ap.add_argument("--chip", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--fill", type=float, default=0.1, help="fraction of 1024 px squares holding imagery")
    ap.add_argument("--tiny", action="store_true", help="tiny test encoders instead of the default weights")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from duch_desktop.core.model import defaults
    from duch_desktop.core.model.defaults import default_workers
    from duch_desktop.core.model.bundle import DuchModel
    from duch_desktop.core.archive.archive import Archive
    from duch_desktop.core.jobs import UserError

    work = Path(tempfile.mkdtemp(prefix="duch-bench-chips-"))
    try:
        (work / "scenes").mkdir()
        scene = work / "scenes" / "scene.tif"
        t = time.perf_counter()
        regions = subprocess.run([sys.executable, "-c", GENERATE, str(scene), str(args.size), str(args.fill), str(UCM)],
                                 check=True, capture_output=True, text=True).stdout.strip()
        gen_s = time.perf_counter() - t
        gen_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

        if args.tiny:
            from tests.conftest import TinyImageEncoder, make_tiny_model

            image, model, which = TinyImageEncoder(input_size=224), make_tiny_model(bits=64), "tiny test encoders"
        else:
            from duch_desktop.core.model.encoders import DEFAULT_TEXT_ENCODER, load_image_encoder

            image = load_image_encoder()
            try:
                model, which = defaults.load_model(), "default model bundle"
            except UserError:
                model = DuchModel.new(image.dim, 384, 64, image.identity, DEFAULT_TEXT_ENCODER)
                which = f"random DuchModel ({image.dim}->64 bits; no default bundle)"
        archive = Archive.open(work / "index", model=model, image_encoder=image, create_root=work / "scenes")
        rss_before = _rss_mib()
        rss_during, plan_s, start = rss_before, 0.0, time.perf_counter()
        for event in archive.index(workers=args.workers, batch_size=args.batch_size, chip=args.chip,
                                   overlap=args.overlap):
            rss_during = max(rss_during, _rss_mib())
            if event.stage == "plan":
                plan_s = time.perf_counter() - start
        index_s = time.perf_counter() - start
        report = archive.last_report
        hit = archive.db.connection().execute("SELECT id FROM tiles WHERE status = 'ok' LIMIT 1").fetchone()
        t = time.perf_counter()
        if hit:
            archive.scene_preview(hit[0], size=512)
        preview_s = time.perf_counter() - t
        stats = archive.stats()
        archive.close()
        result = {
            "encoders": which, "scene_px": f"{args.size} x {args.size}", "scene_file_mib": round(scene.stat().st_size / 2**20, 1),
            "filled_1024px_squares": int(regions), "generate_s": round(gen_s, 1),
            "chip": args.chip, "overlap": args.overlap,
            "workers": args.workers if args.workers is not None else default_workers(),
            "chips": report.chips, "chips_encoded": stats.chips, "chips_nodata": report.nodata,
            "errors": report.errors, "plan_s": round(plan_s, 2), "index_s": round(index_s, 1),
            "chips_per_s": round(report.chips / index_s, 1),
            "encoded_chips_per_s": round(stats.chips / index_s, 1),
            "scene_preview_512_s": round(preview_s, 2),
            "rss_before_index_mib": round(rss_before, 1), "rss_max_during_index_mib": round(rss_during, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_rss_generator_mib": round(gen_rss, 1),
            "peak_rss_children_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
            "index_bytes_per_chip": round(stats.index_bytes / max(report.chips, 1), 1),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:>26}: {value}")


if __name__ == "__main__":
    main()
