"""Search speed: 64-bit Hamming k-NN (HammingTable) vs float32 brute force over 512-d vectors, 1M items.

Two code distributions, because the clustered (IVF) HammingTable prunes by structure:

* ``uniform``: i.i.d. random bits, the worst case (no structure to prune by);
* ``clustered``: ``--centres`` (50) random centre codes, every code a centre with each bit
  flipped with probability ``--flip`` (0.1, ~6 of 64 bits), like a trained hashing model
  whose codes gather by scene type. Queries are fresh codes from the same generator (a text
  query's code is not an archive member).
* ``model`` (opt-in, ``--dist ...,model``; encodes 2030 captions first, minutes on a busy
  CPU): the same with the real codes of the default model as centres, its text codes of the
  bundled UCM captions (715 distinct codes; their 20th nearest neighbour is 1 bit away), so
  the spread around real code clusters is ``--flip`` and the clusters are the model's.

The bit flips are on the pessimistic side: jittering the caption features with Gaussian noise
as large as their own per-dimension spread moves their codes by a median of 3 bits (p ~ 0.05).

Every method answers the same queries, timed one query at a time, one OpenMP thread,
interleaved in rounds so that load from other processes hits all methods alike; figures are
medians. ``flat`` is the HammingTable of before (``IndexBinaryIDMap2(IndexBinaryFlat)``), the
default HammingTable is exact (checked here against flat on every query), ``max_scan=f`` is the
approximate option (recall@k: share of the k results within the true k-th distance).

Also times an end-to-end text query (default text encoder -> hash -> search) when the
default encoder weights are installed. Run: ``python benchmarks/bench_search.py [--n 1000000]``.
"""
from __future__ import annotations

import argparse
import os
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


def make_codes(kind: str, n: int, nq: int, bits: int, centres: int, flip: float, seed: int = 0):
    """(database codes (n, bits/8), query codes (nq, bits/8)) of distribution ``kind``."""
    rng = np.random.default_rng(seed)
    nbytes = bits // 8
    if kind == "uniform":
        return (rng.integers(0, 256, (n, nbytes), dtype=np.uint8), rng.integers(0, 256, (nq, nbytes), dtype=np.uint8))
    centre = caption_codes(bits) if kind == "model" else rng.integers(0, 256, (centres, nbytes), dtype=np.uint8)
    centres = len(centre)

    def draw(m: int) -> np.ndarray:
        out = centre[rng.integers(0, centres, m)]
        for s in range(0, m, 131072):  # chunked: the bit mask of 1M x 64 would be 64 MB of bools
            e = min(m, s + 131072)
            out[s:e] ^= np.packbits(rng.random((e - s, bits)) < flip, axis=1)
        return out

    return draw(n), draw(nq)


def caption_codes(bits: int) -> np.ndarray:
    """The default model's text codes of its bundled captions (default text encoder)."""
    import json

    from duch_desktop.core.model import defaults
    from duch_desktop.core.model.encoders import load_text_encoder

    model, text = defaults.load_model(), load_text_encoder()
    if model.bits != bits:
        raise SystemExit(f"--dist model needs --bits {model.bits} (the default model's)")
    captions = json.loads((defaults.default_model_dir() / "captions.json").read_text())
    feats = np.concatenate([text.encode(captions[i:i + 256]) for i in range(0, len(captions), 256)])
    return model.text_codes(feats)


def float_brute_force(n: int, dim: int, k: int, chunk: int = 131072):
    """A query function doing exact inner-product top-k over n float32 vectors (a real-valued index)."""
    rng = np.random.default_rng(0)
    feats = np.empty((n, dim), np.float32)
    for s in range(0, n, chunk):  # chunked so generation never needs a float64 copy of 2 GB
        feats[s:s + chunk] = rng.standard_normal((min(chunk, n - s), dim), dtype=np.float32)
    queries = rng.standard_normal((64, dim), dtype=np.float32)

    def query(i: int):
        scores = feats @ queries[i % len(queries)]
        top = np.argpartition(-scores, k)[:k]
        return top[np.argsort(-scores[top])]

    return query


def interleaved(methods: dict, nq: int, rounds: int, per_round: dict | None = None) -> dict[str, float]:
    """Median ms/query of each ``methods[name](i)``, rounds interleaving the methods."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    per_round = per_round or {}
    for r in range(rounds):
        for name, fn in methods.items():
            m = per_round.get(name, nq // rounds)
            for i in range(r * m, (r + 1) * m):
                t = time.perf_counter()
                fn(i % nq)
                times[name].append((time.perf_counter() - t) * 1000)
    return {name: statistics.median(v) for name, v in times.items()}


def bench_distribution(kind: str, args, float_query) -> list[tuple]:
    """Rows (kind, method, ms/query, note) for one code distribution; numpy timed in the same rounds."""
    from duch_desktop.core.archive.hamming import HammingTable

    codes, queries = make_codes(kind, args.n, args.queries, args.bits, args.centres, args.flip)
    ids = np.arange(len(codes))
    flat = HammingTable(args.bits)
    flat.CLUSTER_MIN = args.n + 1  # the HammingTable of before: always flat
    flat.reset(ids, codes)
    t = time.perf_counter()
    default = HammingTable(args.bits)  # what the archive gets: clustered only where that prunes
    default.reset(ids, codes)
    build = time.perf_counter() - t
    if default.clustered:
        ours = default
    else:  # the clustered form anyway, for its exact cost here and for the approximate budgets
        ours = HammingTable(args.bits)
        ours.PAYOFF, ours.CLUSTER_MIN = 1.0, min(HammingTable.CLUSTER_MIN, args.n)
        ours.reset(ids, codes)

    k = args.k
    truth = [flat.search(q, k) for q in queries]
    exact = sum([d for _, d in ours.search(q, k)] == [d for _, d in t_] for q, t_ in zip(queries, truth))
    read = []
    for q in queries:
        ours.search(q, k)
        read.append(ours._index.last_read / args.n)
    print(f"{kind}: the default HammingTable {'clusters' if default.clustered else 'stays flat'} "
          f"(built in {build:.1f} s, {ours._index.nlist} lists; an exact search reads {100 * np.median(read):.1f}% "
          f"of the codes, median, max {100 * max(read):.0f}%; HammingTable.PAYOFF = {100 * HammingTable.PAYOFF:.0f}%)")
    notes = {"flat": "exact (reference)", "clustered": f"exact on {exact}/{len(queries)} queries"
             + ("" if default.clustered else "; not the default here")}

    def with_budget(f: float | None):
        def run(i: int):
            ours.max_scan = f  # one index, several budgets: set before every search
            return ours.search(queries[i], k)
        return run

    methods = {"flat": lambda i: flat.search(queries[i], k), "clustered": with_budget(None)}
    for f in [float(f) for f in args.max_scan.split(",") if f]:
        got = [with_budget(f)(i) for i in range(len(queries))]
        recall = np.mean([min(k, sum(d <= t_[-1][1] for _, d in g)) / k for g, t_ in zip(got, truth)])
        notes[f"max_scan={f:g}"] = f"approximate: recall@{k} {recall:.3f}"
        methods[f"max_scan={f:g}"] = with_budget(f)
    ours.max_scan = None
    if float_query is not None:
        methods["numpy"] = float_query
    ms = interleaved(methods, len(queries), args.rounds, {"numpy": max(1, args.float_queries // args.rounds)})
    names = {"flat": "flat IDMap2(IndexBinaryFlat)", "clustered": "clustered IVF, exact"}
    rows = [(kind, names.get(m, f"clustered IVF, {m}"), ms[m], ms["flat"] / ms[m],
             ms["numpy"] / ms[m] if "numpy" in ms else None, notes[m]) for m in methods if m != "numpy"]
    if "numpy" in ms:
        rows.append((kind, f"numpy float32 {args.dim}-d brute force", ms["numpy"], ms["flat"] / ms["numpy"], 1.0,
                     f"{args.n * args.dim * 4 / 2**30:.1f} GiB of vectors"))
    return rows


def bench_text_query(codes: np.ndarray, k: int, queries: int) -> tuple[float, float, str] | None:
    """(encode+hash ms, encode+hash+search ms, model used) with the default text encoder, if installed."""
    from duch_desktop.core.model import defaults
    from duch_desktop.core.model.encoders import load_text_encoder
    from duch_desktop.core.model.bundle import DuchModel
    from duch_desktop.core.jobs import UserError
    from duch_desktop.core.archive.hamming import HammingTable

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
    index = HammingTable(model.bits)
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
    ap.add_argument("--queries", type=int, default=200, help="queries per distribution (each method runs them all)")
    ap.add_argument("--float-queries", type=int, default=20, help="numpy brute-force queries (~0.1 s each)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--centres", type=int, default=50)
    ap.add_argument("--flip", type=float, default=0.1)
    ap.add_argument("--max-scan", default="0.05,0.25", help="approximate budgets to report (comma-separated fractions)")
    ap.add_argument("--dist", default="uniform,clustered")
    ap.add_argument("--no-float", action="store_true", help="skip the 2 GB numpy baseline")
    ap.add_argument("--no-text", action="store_true", help="skip the end-to-end text query")
    args = ap.parse_args()

    import faiss

    float_query = None if args.no_float else float_brute_force(args.n, args.dim, args.k)
    print(f"{args.n:,} x {args.bits}-bit codes, k={args.k}, one query at a time, 1 OpenMP thread; median ms/query "
          f"over {args.rounds} interleaved rounds ({args.queries} queries per method, {args.float_queries} for numpy); "
          f"clustered = {args.centres} centres, bit flip p={args.flip}; faiss {faiss.__version__}")
    for kind in args.dist.split(","):
        print(f"load average (1 min) {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        rows = bench_distribution(kind, args, float_query)
        print(f"{'codes':10} {'method':42} {'ms/query':>9} {'vs flat':>8} {'vs numpy':>9}  notes")
        for kind_, name, ms, vs_flat, vs_np, note in rows:
            print(f"{kind_:10} {name:42} {ms:9.3f} {vs_flat:7.2f}x "
                  f"{(f'{vs_np:.0f}x' if vs_np is not None else '-'):>9}  {note}")
    print(f"load average (1 min) {os.getloadavg()[0]:.1f}")
    if not args.no_text:
        codes = np.random.default_rng(0).integers(0, 256, (args.n, args.bits // 8), dtype=np.uint8)
        text = bench_text_query(codes, args.k, 20)
        if text:
            encode, total, which = text
            print(f"end-to-end text query ({which}): encode+hash {encode:.1f} ms, "
                  f"encode+hash+search over {args.n:,} uniform codes {total:.1f} ms")


if __name__ == "__main__":
    main()
