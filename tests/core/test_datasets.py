"""UCM loading (real data when present) and user captions files."""
import json
from pathlib import Path

import numpy as np
import pytest

from duch_desktop.core.training.datasets import clean_caption, load_captions_file, load_ucm, match_captions
from duch_desktop.core.jobs import UserError

UCM = Path(__file__).resolve().parents[3] / "shared" / "data" / "ucm"
needs_ucm = pytest.mark.skipif(not (UCM / "captions.json").is_file(), reason="UCM data not present")


@needs_ucm
def test_load_ucm_real():
    d = load_ucm(UCM)
    assert len(d) == 2100 and len(d.class_names) == 21
    assert all(len(c) == 5 for c in d.captions)
    assert np.bincount(d.labels).tolist() == [100] * 21
    # README mapping examples: 1.tif, 100.tif, 101.tif, 2100.tif (imgid = N - 1)
    rel = lambda i: d.paths[i].relative_to(UCM).as_posix()  # noqa: E731
    assert rel(0) == "images/agricultural/agricultural00.jpg"
    assert rel(99) == "images/agricultural/agricultural99.jpg"
    assert rel(100) == "images/airplane/airplane00.jpg"
    assert rel(2099) == "images/tenniscourt/tenniscourt99.jpg"
    assert d.captions[100][0] == "Four airplanes are parked at the airport."  # 101.tif, " ." -> "."
    assert d.class_names[d.labels[1900]] == "storagetanks" and d.captions[1900][0].startswith("Three storage tanks")
    assert d.captions[2098][0] == "Four tennis courts on the lawn with a road beside."


def test_load_ucm_rejects_other_folders(tmp_path):
    with pytest.raises(UserError, match="not a captioned collection"):
        load_ucm(tmp_path)


def test_clean_caption():
    assert clean_caption("  There is a piece of farmland .  ") == "There is a piece of farmland."
    assert clean_caption("a  b , c .") == "a b, c."


def test_captions_csv_and_json(tmp_path):
    csv = tmp_path / "c.csv"
    csv.write_text("file,caption\na.tif,Many cars .\na.tif,A road.\nsub/b.jpg,Trees\n")
    assert load_captions_file(csv) == {"a.tif": ["Many cars.", "A road."], "sub/b.jpg": ["Trees"]}
    js = tmp_path / "c.json"
    js.write_text(json.dumps({"a.tif": ["x", "y"], "b.tif": "z"}))
    assert load_captions_file(js) == {"a.tif": ["x", "y"], "b.tif": ["z"]}
    karpathy = tmp_path / "k.json"
    karpathy.write_text(json.dumps({"images": [{"filename": "1.tif", "sentences": [{"raw": "A beach ."}]}]}))
    assert load_captions_file(karpathy) == {"1.tif": ["A beach."]}


@pytest.mark.parametrize("content,suffix,msg", [
    ("name,text\na,b\n", ".csv", "header"),
    ("file,caption\na.tif,\n", ".csv", "line 2"),
    ("{not json", ".json", "valid JSON"),
    ("[1, 2]", ".json", "expected"),
    ("{}", ".json", "no captions"),
])
def test_bad_captions_files(tmp_path, content, suffix, msg):
    p = tmp_path / f"bad{suffix}"
    p.write_text(content)
    with pytest.raises(UserError, match=msg):
        load_captions_file(p)
    with pytest.raises(UserError, match="not found"):
        load_captions_file(tmp_path / "missing.csv")


def test_match_captions(tmp_path):
    files = [tmp_path / "a.tif", tmp_path / "sub" / "b.jpg", tmp_path / "c.png"]
    got = match_captions(tmp_path, {"a.tif": ["x"], "b.jpg": ["y"], "c.tif": ["z"], "gone.tif": ["w"]}, files)
    assert got == ([files[0], files[2], files[1]], [["x"], ["z"], ["y"]])
    with pytest.raises(UserError, match="names a tile"):
        match_captions(tmp_path, {"gone.tif": ["w"]}, files)


RSICD = UCM.parent / "rsicd"


def _jpeg(path: Path, value: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, value, value)).save(path)


def _ucm_fixture(root: Path) -> None:
    """UCM's layout in miniature: numbered entries "N.tif", tiles at images/<class>/<class>NN.jpg."""
    images = []
    for n, cls in ((1, "farm"), (2, "farm"), (101, "port")):
        _jpeg(root / "images" / cls / f"{cls}{(n - 1) % 100:02d}.jpg", n)
        images.append({"filename": f"{n}.tif", "imgid": n - 1, "classname": cls, "split": "train",
                       "sentences": [{"raw": f"tile {n} ."}, {"raw": f"scene {n}"}]})
    images.reverse()  # file order is not tile order
    (root / "captions.json").write_text(json.dumps({"dataset": "UCM", "classes": {"0": "farm", "1": "port"},
                                                     "images": images}))


def _rsicd_fixture(root: Path) -> None:
    """RSICD's layout in miniature: filename = path under images/, class list, train/val split."""
    images = []
    for i, (cls, split) in enumerate((("bridge", "train"), ("pond", "val"), ("bridge", "val"))):
        name = f"{cls}/{cls}_{i + 1}.jpg"
        _jpeg(root / "images" / name, 10 * i)
        images.append({"filename": name, "classname": cls, "split": split, "imgid": i,
                       "sentences": [{"raw": f"a {cls} number {i} ."}]})
    (root / "captions.json").write_text(json.dumps({"dataset": "RSICD", "classes": ["bridge", "pond"],
                                                     "images": images[::-1]}))


def test_load_collection_ucm_numbering(tmp_path):
    from duch_desktop.core.training.datasets import load_collection

    _ucm_fixture(tmp_path)
    d = load_collection(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in d.paths] == \
        ["images/farm/farm00.jpg", "images/farm/farm01.jpg", "images/port/port00.jpg"]
    assert d.labels.tolist() == [0, 0, 1] and d.class_names == ["farm", "port"]
    assert d.captions[0] == ["tile 1.", "scene 1"]


def test_load_collection_rsicd_paths_and_splits(tmp_path):
    from duch_desktop.core.training.datasets import load_collection, merge_collections

    _rsicd_fixture(tmp_path / "r")
    _ucm_fixture(tmp_path / "u")
    d = load_collection(tmp_path / "r")
    assert [p.name for p in d.paths] == ["bridge_1.jpg", "pond_2.jpg", "bridge_3.jpg"]
    assert d.labels.tolist() == [0, 1, 0] and d.splits.tolist() == ["train", "val", "val"]
    assert d.subset([2]).splits.tolist() == ["val"]
    m = merge_collections([load_collection(tmp_path / "u"), d])
    assert m.class_names == ["farm", "port", "bridge", "pond"] and m.labels.tolist() == [0, 0, 1, 2, 3, 2]
    assert m.splits.tolist() == ["train"] * 3 + ["train", "val", "val"]


def test_load_collection_missing_tile(tmp_path):
    from duch_desktop.core.training.datasets import load_collection

    _rsicd_fixture(tmp_path)
    (tmp_path / "images" / "pond" / "pond_2.jpg").unlink()
    with pytest.raises(UserError, match="missing: .*pond_2.jpg"):
        load_collection(tmp_path)
    (tmp_path / "captions.json").write_text('{"images": [{"file": 1}]}')
    with pytest.raises(UserError, match="not a Karpathy-style captions file"):
        load_collection(tmp_path)


@pytest.mark.skipif(not (RSICD / "captions.json").is_file(), reason="RSICD data not present")
def test_load_rsicd_real():
    from duch_desktop.core.training.datasets import load_collection

    d = load_collection(RSICD)
    assert len(d) == 8672 and len(d.class_names) == 30
    assert (d.splits == "val").sum() == 987 and all(len(c) == 5 for c in d.captions)
    assert d.paths[0].relative_to(RSICD).as_posix() == "images/airport/airport_1.jpg"
    assert d.class_names[d.labels[0]] == "airport"
