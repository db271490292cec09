"""When does "the best result" mean "nothing matches"? Best-match Hamming distances of real and
nonsense queries against the UCM tiles, with the default model (or ``--model``).

The GUI marks a search as weak when even its best result is at least ``WEAK_FRACTION`` of the
bits away (``duch_desktop/gui/desktop.py``); this script measures where real queries stop and
nonsense starts. Three query sets, each query's distance to its nearest tile code:

* ``captions``: UCM captions (one per tile, ``--captions`` of them; the default model was trained
  on UCM, so these are the optimistic end),
* ``typed``: descriptions written here in the words an analyst would type (not UCM captions),
* ``nonsense``: random letter strings and sentences about things no aerial tile shows.

Tile codes come from the frozen image encoder's features of each tile's "orig" view (the
training feature cache under the user cache dir is used when it holds them, else they are
computed: minutes on a laptop CPU). Prints percentiles per set and, for each candidate
threshold t, the share of each set whose best match is at distance >= t (flagged as weak).

Run: ``python benchmarks/weak_match.py [--data ../shared/data/ucm] [--model DIR] [--per-class 100]``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TYPED = [
    "airplanes parked at an airport", "a runway with taxiways", "a baseball field", "a sandy beach by the sea",
    "tall buildings in a city centre", "dry shrubland on hills", "a dense residential neighbourhood",
    "a thick green forest", "a highway with cars", "a golf course with sand bunkers", "boats moored in a harbour",
    "a road intersection with crossings", "houses with gardens along streets", "rows of mobile homes",
    "a bridge over a road", "a car park full of cars", "a river winding through trees",
    "scattered houses with large lawns", "round white storage tanks", "tennis courts next to houses",
    "farmland with crop fields", "a parking lot next to a building", "a freeway interchange",
    "ships in a port", "green fields in rows", "waves on the shore", "an overpass crossing a freeway",
    "a playground and a sports field", "industrial buildings and tanks", "a lake surrounded by trees",
]
NONSENSE_SENTENCES = [
    "zzzz qqq", "a recipe for chocolate cake", "quantum chromodynamics lecture notes", "my cat is sleeping",
    "the stock market fell yesterday", "a violin concerto in d minor", "happy birthday to you",
    "please reset my password", "the meaning of life", "an email about the meeting",
    "purple elephants singing opera", "the capital of france is paris", "bitcoin price prediction",
    "how to tie a tie", "a poem about love", "grammar rules for german verbs",
]


def nonsense_queries(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = [" ".join("".join(rng.choice(letters, rng.integers(3, 9))) for _ in range(rng.integers(1, 5)))
             for _ in range(n)]
    return NONSENSE_SENTENCES + words


def tile_codes(model, paths, batch_size: int) -> np.ndarray:
    from duch_desktop.core.model.defaults import load_image_encoder_for
    from duch_desktop.core.training.features import extract_image_features

    encoder = load_image_encoder_for(model.meta.get("image_encoder_spec") or model.image_encoder)
    job = extract_image_features(paths, encoder, views=("orig",), batch_size=batch_size, num_workers=1)
    while True:
        try:
            event = next(job)
            if event.done == 0 or event.done == event.total:
                print(f"  image features: {event.message}", file=sys.stderr)
        except StopIteration as stop:
            return model.image_codes(stop.value[0])


def best_distances(model, text_encoder, queries: list[str], codes: np.ndarray) -> np.ndarray:
    q = model.text_codes(text_encoder.encode(queries))
    bits = np.unpackbits(codes, axis=1)
    qbits = np.unpackbits(q, axis=1)
    return (qbits[:, None, :] != bits[None, :, :]).sum(-1).min(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "ucm"))
    p.add_argument("--model", default=None, help="model bundle (default: the shipped one)")
    p.add_argument("--per-class", type=int, default=100, help="UCM tiles per class (100 = all 2100)")
    p.add_argument("--captions", type=int, default=400, help="UCM captions used as real queries")
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()

    from duch_desktop.core.model.defaults import load_text_encoder_for, resolve_model
    from duch_desktop.core.training.datasets import load_ucm

    model, model_dir = resolve_model(args.model)
    ucm = load_ucm(Path(args.data))
    keep = [i for i, label in enumerate(ucm.labels) if i % 100 < args.per_class]
    paths = [ucm.paths[i] for i in keep]
    print(f"model {model_dir or 'given'}: {model.bits} bits; {len(paths)} UCM tiles", file=sys.stderr)
    codes = tile_codes(model, paths, args.batch_size)
    text = load_text_encoder_for(model.meta.get("text_encoder_spec") or model.text_encoder)
    rng = np.random.default_rng(0)
    picks = rng.choice(len(ucm), size=min(args.captions, len(ucm)), replace=False)
    sets = {"captions": [ucm.captions[i][rng.integers(len(ucm.captions[i]))] for i in picks],
            "typed": TYPED, "nonsense": nonsense_queries(64)}
    best = {name: best_distances(model, text, queries, codes) for name, queries in sets.items()}
    print(f"\nbest-match Hamming distance over {len(paths)} tiles, {model.bits}-bit codes")
    print(f"{'set':10} {'n':>4} {'min':>4} {'p5':>4} {'p25':>4} {'p50':>4} {'p75':>4} {'p95':>4} {'max':>4}")
    for name, d in best.items():
        q = np.percentile(d, [5, 25, 50, 75, 95])
        print(f"{name:10} {len(d):4d} {d.min():4d} " + " ".join(f"{v:4.0f}" for v in q) + f" {d.max():4d}")
    print("\nshare of each set flagged weak (best distance >= t)")
    print(f"{'t':>4} {'t/bits':>6} " + " ".join(f"{name:>9}" for name in best))
    for t in range(int(min(d.min() for d in best.values())), int(max(d.max() for d in best.values())) + 2):
        print(f"{t:4d} {t / model.bits:6.3f} " + " ".join(f"{(d >= t).mean():9.2f}" for d in best.values()))


if __name__ == "__main__":
    main()
