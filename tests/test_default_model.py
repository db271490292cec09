"""The shipped default model on the shipped demo folder: useful out of the box, offline."""
import json

import pytest

from duch_desktop.core.model.defaults import default_model_dir, demo_dir
from duch_desktop.core.model.bundle import DuchModel
from duch_desktop.core.archive.archive import Archive
from duch_desktop.core.jobs import UserError, drive

# One plain query per UCM class, phrased the way the issue asks (class names, not captions).
CLASS_QUERIES = {
    "agricultural": "agricultural fields", "airplane": "many airplanes at an airport",
    "baseballdiamond": "a baseball field", "beach": "a beach", "buildings": "buildings",
    "chaparral": "chaparral", "denseresidential": "a dense residential area", "forest": "a forest",
    "freeway": "a freeway", "golfcourse": "a golf course", "harbor": "a harbor", "intersection": "an intersection",
    "mediumresidential": "a medium residential area", "mobilehomepark": "a mobile home park",
    "overpass": "an overpass", "parkinglot": "a parking lot", "river": "a river", "runway": "a runway",
    "sparseresidential": "a sparse residential area", "storagetanks": "storage tanks",
    "tenniscourt": "a tennis court",
}
# The demo's RSICD (AID) tiles of ten scene types UCM does not have: the type's name as the query.
TYPE_QUERIES = {
    "stadium": "a stadium", "bridge": "a bridge", "church": "a church", "desert": "a desert", "pond": "a pond",
    "port": "a port", "viaduct": "a viaduct", "playground": "a playground", "mountain": "a mountain",
    "industrial": "an industrial area",
}


def test_shipped_bundle_is_complete_and_small():
    bundle = default_model_dir()
    model = DuchModel.load(bundle)  # verifies the SHA-256 recorded in model.json
    assert model.bits == 64 and model.image_dim == 1904 and model.text_dim == 384
    assert model.image_encoder.endswith(";pool=head+b15+b14+b10")  # served with the pooling it was trained on
    size = sum(f.stat().st_size for f in bundle.iterdir())
    assert size < 40 * 2**20
    captions = json.loads((bundle / "captions.json").read_text())
    assert len(captions) > 1000 and all(isinstance(c, str) for c in captions)


@pytest.mark.slow
def test_demo_class_queries_hit_top5(tmp_path):
    archive = Archive.open(tmp_path / "index", create_root=demo_dir())
    report = drive(archive.index())
    assert report.errors == 0 and report.added >= 63 + 30
    hits = 0
    for cls, query in CLASS_QUERIES.items():
        top = [h.rel.split("/")[0] for h in archive.search_text(query, k=5)]
        hits += cls in top
    print(f"demo class queries with a tile of the class in the top 5: {hits}/21")
    assert hits >= 18
    missed = [t for t, query in TYPE_QUERIES.items()
              if t not in [h.rel.split("/")[0] for h in archive.search_text(query, k=5)]]
    assert not missed, f"scene types beyond UCM without a tile of theirs in the top 5: {missed}"
    geo = [h for h in archive.search_text("storage tanks", k=10) if h.rel.startswith("geotiff/")]
    assert geo and geo[0].footprint, "the georeferenced demo GeoTIFF should be found with its footprint"

    # odd queries: nonsense still ranks, an empty one is a plain message, a long one says it was cut
    nonsense, everything = (archive.search_text("purple elephants dancing on the moon", k=k) for k in (5, 1000))
    assert [(h.tile_id, h.distance) for h in nonsense] == [(h.tile_id, h.distance) for h in everything[:5]]
    assert [h.rank for h in nonsense] == [1, 2, 3, 4, 5] and len(everything) == report.added
    with pytest.raises(UserError, match="type a description"):
        archive.search_text("   ", k=5)
    assert archive.query_note("a river") is None
    long_query = ("a dense residential area next to a highway with many cars and some trees " * 30)[:2000]
    top = archive.search_text(long_query, k=5)
    read = archive.search_text(archive.text_encoder.kept_text(" ".join(long_query.split())), k=5)
    assert [(h.tile_id, h.distance) for h in top] == [(h.tile_id, h.distance) for h in read]  # the first 64 tokens
    assert {"denseresidential", "mediumresidential"} & {h.rel.split("/")[0] for h in top}
    note = archive.query_note(long_query)
    assert note and "first 64" in note and "a dense residential area" in note
    archive.close()
