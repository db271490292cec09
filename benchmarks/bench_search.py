"""Search speed: 64-bit Hamming k-NN (faiss) vs float32 brute force over 512-d vectors, 1M items.

Also times an end-to-end text query (default text encoder -> hash -> search) when the
default encoder weights are installed. Run: ``python benchmarks/bench_search.py [--n 1000000]``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _ms(fn, repeat: int) -> float:
    """Median wall time of ``fn()`` in milliseconds (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def bench_hamming(codes: np.ndarray, k: int, queries: int) -> tuple[float, float]:
    """(ms/query of the archive's CodeIndex, ms/query of a bare faiss IndexBinaryFlat at default threads)."""
    import faiss

    from duch_desktop.core.search import CodeIndex

    index = CodeIndex(codes.shape[1] * 8)
    index.update(ids=np.arange(len(codes)), codes=codes)
    bare = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    bare.add(codes)
    picks = codes[np.random.default_rng(1).integers(0, len(codes), 2 * queries + 2)]
    qs = iter(picks)
    ours = _ms(lambda: index.search(next(qs), k), queries)
    raw = _ms(lambda: bare.search(next(qs)[None], k), queries)
    return ours, raw


def bench_float(n: int, dim: int, k: int, queries: int, chunk: int = 131072) -> float:
    """Exact inner-product top-k over n float32 vectors (what a real-valued index would do)."""
    rng = np.random.default_rng(0)
    feats = np.empty((n, dim), np.float32)
    for s in range(0, n, chunk):  # chunked so generation never needs a float64 copy of 2 GB
        feats[s:s + chunk] = rng.standard_normal((min(chunk, n - s), dim), dtype=np.float32)
    qs = iter(rng.standard_normal((queries + 1, dim), dtype=np.float32))

    def query():
        scores = feats @ next(qs)
        top = np.argpartition(-scores, k)[:k]
        return top[np.argsort(-scores[top])]

    return _ms(query, queries)


def bench_text_query(codes: np.ndarray, k: int, queries: int) -> tuple[float, float, str] | None:
    """(encode+hash ms, encode+hash+search ms, model used) with the default text encoder, if installed."""
    from duch_desktop.core import defaults
    from duch_desktop.core.encoders import load_text_encoder
    from duch_desktop.core.hashing import DuchModel
    from duch_desktop.core.jobs import UserError
    from duch_desktop.core.search import CodeIndex

    try:
        text = load_text_encoder()
    except UserError as e:
        print(f"end-to-end text query skipped: {e}")
        return None
    try:
        model, which = defaults.load_model(), "default bundle"
    except UserError:
        model = DuchModel.new(1280, text.dim, codes.shape[1] * 8, "efficientnet-lite0", text.identity)
        which = "random DuchModel (no default bundle)"
    index = CodeIndex(model.bits)
    index.update(ids=np.arange(len(codes)), codes=codes if model.bits == codes.shape[1] * 8 else
                 np.random.default_rng(0).integers(0, 256, (len(codes), model.bits // 8), dtype=np.uint8))
    words = "dense residential area with many buildings near a highway and green trees".split()
    rng = np.random.default_rng(2)
    sentence = lambda: " ".join(rng.choice(words, size=8))  # noqa: E731
    encode = _ms(lambda: model.text_codes(text.encode([sentence()])), queries)
    total = _ms(lambda: index.search(model.text_codes(text.encode([sentence()]))[0], k), queries)
    return encode, total, which


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("-k", type=int, default=20)
    ap.add_argument("--queries", type=int, default=50)
    args = ap.parse_args()

    codes = np.random.default_rng(0).integers(0, 256, (args.n, args.bits // 8), dtype=np.uint8)
    ham, raw = bench_hamming(codes, args.k, args.queries)
    print(f"Hamming k-NN, {args.n:,} x {args.bits}-bit codes ({codes.nbytes / 2**20:.0f} MiB), k={args.k}: "
          f"{ham:.2f} ms/query (archive CodeIndex: IDMap2 + flat, 1 OpenMP thread); "
          f"bare IndexBinaryFlat at {__import__('faiss').omp_get_max_threads()} threads: {raw:.2f} ms/query")
    flt = bench_float(args.n, args.dim, args.k, max(5, args.queries // 5))
    print(f"numpy float32 brute force, {args.n:,} x {args.dim}-d ({args.n * args.dim * 4 / 2**30:.1f} GiB), "
          f"k={args.k}: {flt:.1f} ms/query")
    print(f"speed-up of Hamming search: {flt / ham:.0f}x; memory: {args.n * args.dim * 4 / codes.nbytes:.0f}x smaller")
    text = bench_text_query(codes, args.k, max(10, args.queries // 2))
    if text:
        encode, total, which = text
        print(f"end-to-end text query ({which}): encode+hash {encode:.1f} ms, "
              f"encode+hash+search over {args.n:,} codes {total:.1f} ms")


if __name__ == "__main__":
    main()
