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
    with pytest.raises(UserError, match="not a UCM folder"):
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
