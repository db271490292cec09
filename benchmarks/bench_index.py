"""Indexing throughput of the encoder runtimes (torch vs onnx) on the same tiles, alternated.

Each round runs in its own process (so peak RSS is that runtime's): it loads the image encoder
on one runtime, times the bare model forward on already-decoded tiles, then indexes the folder
from scratch (decode + encode + hash + commit). An untimed warm-up run comes first (files into the
OS cache, the ONNX graphs exported if none are cached; a model whose bundle lacks its caption codes
gets them into the user cache), so that no timed round pays for a one-off. Rounds alternate
over the same tiles, the order reversed every other round (torch, onnx, onnx, torch...) so that a
machine getting busier or quieter favours neither; the figures are medians per runtime (each
round's too), the ratio is onnx / torch from the same run, with the load average beside them (the
machine may be shared). ``--search N`` also times N whole ``duch search`` commands per
runtime (process start, imports, model load, query, output) against the last index.

``--spinning`` compares onnx with its intra-op threads spinning while they wait for work
(onnxruntime's default, ``onnx-spin``) and sleeping (``onnx-nospin``) instead of torch vs onnx, on
the same tiles, alternated the same way: while indexing, the decoding child process shares the
cores with the encoder's threads, which spinning keeps busy (``runtime.INTRA_OP_SPINNING``).

Uses the shipped model bundle. Run:
``python benchmarks/bench_index.py [--folder ../shared/data/ucm/images] [--limit 400] [--rounds 2] [--spinning]``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RUNTIMES = ("torch", "onnx")
SPINNING = ("onnx-spin", "onnx-nospin")  # --spinning: onnx with intra-op spinning on, off


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


def one_round(variant: str, folder: Path, index_dir: Path, batch_size: int, forward_tiles: int) -> dict:
    """One runtime (or onnx variant): bare forward rate on decoded tiles, then a whole indexing run of ``folder``."""
    import numpy as np

    from duch_desktop.core.archive.archive import Archive
    from duch_desktop.core.imagery import reading as imagery
    from duch_desktop.core.model import defaults, runtime as runtimes

    runtime = variant.split("-")[0]
    if variant in SPINNING:
        runtimes.INTRA_OP_SPINNING = variant == "onnx-spin"
    model = defaults.load_model()
    t = time.perf_counter()
    image = defaults.load_image_encoder_for(model.image_encoder, runtime)
    load_s = time.perf_counter() - t
    text = defaults.load_text_encoder_for(model.text_encoder, runtime)
    paths = [e.path for _, e in zip(range(forward_tiles), imagery.scan(folder))]
    pixels = np.stack([imagery.read_tile(p, size=image.input_size)[0] for p in paths])
    image.encode(pixels[:batch_size])  # warm-up: first-call allocations
    t = time.perf_counter()
    for s in range(0, len(pixels), batch_size):
        image.encode(pixels[s:s + batch_size])
    forward = len(pixels) / (time.perf_counter() - t)
    archive = Archive.open(index_dir, model=defaults.default_model_dir(), image_encoder=image, text_encoder=text,
                           create_root=folder)
    start, cpu = time.perf_counter(), _cpu_s()
    for _ in archive.index(batch_size=batch_size):
        pass
    seconds, cpu = time.perf_counter() - start, _cpu_s() - cpu
    stats = archive.stats()
    archive.close()
    n = stats.tiles + stats.errors
    if image.runtime != runtime:
        raise SystemExit(f"{variant}: the encoder runs on {image.runtime}")
    return {"variant": variant, "runtime": image.runtime, "tiles": n, "encoder_load_s": round(load_s, 2),
            "forward_tiles_per_s": round(forward, 2), "index_tiles_per_s": round(n / seconds, 2),
            "index_s": round(seconds, 2), "index_tiles_per_cpu_s": round(n / cpu, 2),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _cpu_s() -> float:
    """CPU seconds this process (all its threads) has used: on a shared machine, what a run would
    take on idle cores is bounded by it."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def _search_seconds(runtime: str, index_dir: Path, n: int) -> list[float]:
    cmd = [sys.executable, "-m", "duch_desktop.cli", "search", "airplanes parked next to a terminal", "-k", "10",
           "--index-dir", str(index_dir), "--runtime", runtime]
    out = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        out.append(time.perf_counter() - t)
    return out


def _child(args, runtime: str, folder: Path, index_dir: Path) -> dict:
    cmd = [sys.executable, __file__, "--one", runtime, "--folder", str(folder), "--index-dir", str(index_dir),
           "--batch-size", str(args.batch_size), "--forward-tiles", str(args.forward_tiles)]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, default=REPO.parent / "shared" / "data" / "ucm" / "images")
    ap.add_argument("--limit", type=int, default=400, help="index the first N tiles (copied to a temp folder; 0: all)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds per runtime, alternated")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--forward-tiles", type=int, default=128, help="decoded tiles timed through the bare model")
    ap.add_argument("--search", type=int, default=3, help="whole `duch search` commands timed per runtime")
    ap.add_argument("--spinning", action="store_true",
                    help=f"compare {' and '.join(SPINNING)} (onnxruntime's intra-op spinning), not torch and onnx")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--one", choices=RUNTIMES + SPINNING, help=argparse.SUPPRESS)
    ap.add_argument("--index-dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_round(args.one, args.folder, args.index_dir, args.batch_size, args.forward_tiles)))
        return

    variants = SPINNING if args.spinning else RUNTIMES
    work = Path(tempfile.mkdtemp(prefix="duch-bench-"))
    loads, rounds = [os.getloadavg()[0]], []
    try:
        folder = _subset(args.folder, args.limit, work / "tiles") if args.limit else args.folder
        _child(args, variants[-1], folder, work / "index-warm-up")
        loads.append(os.getloadavg()[0])
        for r in range(args.rounds):
            for variant in (variants if r % 2 == 0 else variants[::-1]):
                index_dir = work / f"index-{variant}-{r}"
                rounds.append(_child(args, variant, folder, index_dir))
                loads.append(os.getloadavg()[0])
                print(f"round {r + 1} {variant}: {rounds[-1]}", file=sys.stderr)
        # `duch search` cannot be told to stop spinning: whole commands are timed per runtime only.
        search = {rt: _search_seconds(rt, work / f"index-{rt}-{args.rounds - 1}", args.search)
                  for rt in variants if not args.spinning}
        loads.append(os.getloadavg()[0])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result: dict = {"tiles": rounds[0]["tiles"], "folder": str(args.folder), "rounds": args.rounds,
                    "cpus": os.cpu_count(), "load_average_1min": [round(x, 2) for x in loads]}
    for v in variants:
        mine = [r for r in rounds if r["variant"] == v]
        for key in ("forward_tiles_per_s", "index_tiles_per_s", "index_tiles_per_cpu_s", "encoder_load_s"):
            result[f"{v}_{key}"] = round(statistics.median(r[key] for r in mine), 2)
            result[f"{v}_{key}_each"] = [r[key] for r in mine]
        result[f"{v}_peak_rss_mib"] = max(r["peak_rss_mib"] for r in mine)
        if search.get(v):
            result[f"{v}_search_command_s"] = round(statistics.median(search[v]), 2)
    base, other = variants
    for key in ("forward_tiles_per_s", "index_tiles_per_s"):
        result[f"{other}_over_{base}_{key}"] = round(result[f"{other}_{key}"] / result[f"{base}_{key}"], 2)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:>38}: {value}")


if __name__ == "__main__":
    main()
