"""The ``duch`` CLI: outputs, exit codes, one-line errors, Ctrl-C, and a real subprocess run."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from duch_desktop.cli import main
from duch_desktop.core.archive.export import CSV_FIELDS
from tests.conftest import CLASSES, PER_CLASS

N = len(CLASSES) * PER_CLASS
REPO = Path(__file__).resolve().parents[1]


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def indexed(tmp_path, tile_folder, tiny_model_dir, user_captions, capsys) -> Path:
    index_dir = tmp_path / "index"
    code, out, err = _run(capsys, "index", tile_folder, "--index-dir", index_dir, "--model", tiny_model_dir,
                          "--workers", 0, "--captions", user_captions, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["added"] == N and report["errors"] == 0 and report["index_dir"] == str(index_dir)
    return index_dir


def test_search_outputs(indexed, capsys):
    code, out, _ = _run(capsys, "search", "green forest", "--index-dir", indexed, "-k", 5, "--json")
    hits = json.loads(out)
    assert code == 0 and [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert set(hits[0]) >= {"rank", "tile_id", "distance", "path", "rel", "footprint"}
    assert [h["distance"] for h in hits] == sorted(h["distance"] for h in hits)

    code, out, _ = _run(capsys, "search", "green forest", "--index-dir", indexed, "-k", 5, "--csv")
    rows = list(csv.reader(io.StringIO(out)))
    assert code == 0 and rows[0] == CSV_FIELDS and len(rows) == 6
    assert all(r[CSV_FIELDS.index("window")] == "" for r in rows[1:])  # whole files have no window

    code, out, _ = _run(capsys, "search", "green forest", "--index-dir", indexed, "-k", N, "--geojson")
    fc = json.loads(out)
    assert code == 0 and fc["type"] == "FeatureCollection" and len(fc["features"]) == N
    for f in fc["features"]:
        assert set(f["properties"]) >= {"rank", "path", "distance"}
        if f["properties"]["path"].endswith(".tif"):
            ring = f["geometry"]["coordinates"][0]
            assert f["geometry"]["type"] == "Polygon" and len(ring) == 5 and ring[0] == ring[-1]
        else:
            assert f["geometry"] is None

    code, out, _ = _run(capsys, "search", "green forest", "--index-dir", indexed, "-k", 3, "--radius", 16)
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["rank", "dist", "path"] and len(lines) == 4


def test_cli_and_gui_exports_agree(indexed, tmp_path, capsys):
    """``duch search --csv/--geojson`` and the app's File > Export write the same results the same way."""
    from duch_desktop.core.archive.archive import Archive
    from duch_desktop.gui import export as gui_export

    with Archive.open(indexed) as archive:
        hits = archive.search_text("green forest", k=N)
    assert any(h.footprint for h in hits) and not all(h.footprint for h in hits)
    _, cli_csv, _ = _run(capsys, "search", "green forest", "--index-dir", indexed, "-k", N, "--csv")
    _, cli_geojson, _ = _run(capsys, "search", "green forest", "--index-dir", indexed, "-k", N, "--geojson")
    gui_csv = gui_export.export_csv(hits, tmp_path / "r.csv", query="green forest").read_text(encoding="utf-8")
    gui_geojson = gui_export.export_geojson(hits, tmp_path / "r.geojson", query="green forest")
    assert list(csv.reader(io.StringIO(cli_csv))) == list(csv.reader(io.StringIO(gui_csv)))
    assert json.loads(cli_geojson) == json.loads(gui_geojson.read_text(encoding="utf-8"))
    rows = list(csv.DictReader(io.StringIO(cli_csv)))
    assert [int(r["tile_id"]) for r in rows] == [h.tile_id for h in hits]



def test_similar_captions_info(indexed, tile_folder, capsys):
    code, out, _ = _run(capsys, "similar", 1, "--index-dir", indexed, "-k", 3, "--json")
    assert code == 0 and len(json.loads(out)) == 3 and 1 not in [h["tile_id"] for h in json.loads(out)]
    code, out, _ = _run(capsys, "similar", tile_folder / "water" / "water_0.png", "--index-dir", indexed, "-k", 2)
    assert code == 0 and "water_0.png" in out.splitlines()[1]

    code, out, _ = _run(capsys, "captions", 1, "--index-dir", indexed, "-k", 3, "--json")
    caps = json.loads(out)
    assert code == 0 and len(caps) == 3 and set(caps[0]) == {"rank", "text", "distance", "source"}
    code, out, _ = _run(capsys, "captions", tile_folder / "field" / "field_0.png", "--index-dir", indexed)
    assert code == 0 and len(out.splitlines()) == 10

    code, out, _ = _run(capsys, "info", "--index-dir", indexed, "--json", "--errors")
    info = json.loads(out)
    assert code == 0 and info["tiles"] == N and info["error_files"] == [] and info["bits"] == 16
    code, out, _ = _run(capsys, "info", "--index-dir", indexed)
    assert code == 0 and "tiles: 12" in out


def test_chip_mode(tmp_path, scene_folder, tiny_model_dir, capsys):
    from tests.conftest import SCENE_CHIP

    index_dir = tmp_path / "index"
    code, out, err = _run(capsys, "index", scene_folder, "--index-dir", index_dir, "--model", tiny_model_dir,
                          "--workers", 0, "--chip", SCENE_CHIP["chip"], "--overlap", SCENE_CHIP["overlap"], "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["added"], report["chips"], report["nodata"], report["errors"]) == (N + 1, 28, 8, 0)
    code, out, _ = _run(capsys, "index", scene_folder, "--index-dir", index_dir, "--model", tiny_model_dir,
                        "--workers", 0)
    assert code == 0 and f"{N + 1} unchanged" in out  # chip options are remembered

    code, out, _ = _run(capsys, "search", "green forest", "--index-dir", index_dir, "-k", N + 20, "--geojson")
    features = json.loads(out)["features"]
    chips = [f for f in features if f["properties"]["window"] is not None]
    assert code == 0 and len(features) == N + 20 and len(chips) == 20
    from duch_desktop.core.archive.archive import Archive

    with Archive.open(index_dir) as archive:
        for f in chips:
            rec = archive.tile(f["properties"]["tile_id"])
            assert f["properties"]["window"] == list(rec.window) and f["properties"]["path"].endswith("scene.tif")
            assert f["geometry"]["coordinates"][0] == rec.footprint  # the window's polygon, not the scene's
        scene_ring = archive.tile(chips[0]["properties"]["tile_id"]).meta.footprint
    assert all(f["geometry"]["coordinates"][0] != [list(p) for p in scene_ring] for f in chips)

    code, out, _ = _run(capsys, "search", "green forest", "--index-dir", index_dir, "-k", N + 20, "--json")
    hits = json.loads(out)
    assert any(h["window"] and h["scene_size"] == [640, 384] for h in hits)
    code, out, _ = _run(capsys, "search", "green forest", "--index-dir", index_dir, "-k", N + 20)
    assert code == 0 and "scene.tif  [x " in out

    code, out, _ = _run(capsys, "info", "--index-dir", index_dir)
    assert code == 0 and "chip_options: 128 px, overlap 32 px" in out and "chips: 20" in out
    code, out, _ = _run(capsys, "info", "--index-dir", index_dir, "--json")
    info = json.loads(out)
    assert info["chip_options"] == {"chip": 128, "overlap": 32, "chip_m": None} and info["nodata"] == 8

    assert "overlap" in _one_line_error(capsys, "index", scene_folder, "--index-dir", index_dir, "--model",
                                        tiny_model_dir, "--chip", 64, "--overlap", 64)
    assert "at least 0" in _one_line_error(capsys, "index", scene_folder, "--chip-m", "-3")
    code, out, _ = _run(capsys, "index", scene_folder, "--index-dir", index_dir, "--model", tiny_model_dir,
                        "--workers", 0, "--chip", 0, "--json")
    assert code == 0 and json.loads(out)["updated"] == 1
    code, out, _ = _run(capsys, "info", "--index-dir", index_dir)
    assert "chip_options: off" in out


def test_default_index_location_is_outside_the_folder(tile_folder, tiny_model_dir, capsys, tmp_path):
    code, out, err = _run(capsys, "index", tile_folder, "--model", tiny_model_dir, "--workers", 0)
    assert code == 0, err
    index_dir = Path(out.strip().splitlines()[-1].removeprefix("index: "))
    assert index_dir.parent == Path(os.environ["XDG_DATA_HOME"]) / "duch-desktop" / "indexes"
    assert index_dir.name.startswith("tiles-") and (index_dir / "archive.sqlite").is_file()
    code, out, _ = _run(capsys, "search", "forest", "--folder", tile_folder, "--json", "-k", 2)
    assert code == 0 and len(json.loads(out)) == 2
    code, out, _ = _run(capsys, "search", "forest", "--json", "-k", 2)  # the most recent index
    assert code == 0 and len(json.loads(out)) == 2
    code, out, _ = _run(capsys, "info", "--folder", tmp_path, "--json")  # a folder never indexed
    assert code == 2


def _one_line_error(capsys, *argv, code=2) -> str:
    got, out, err = _run(capsys, *argv)
    assert got == code, (out, err)
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def test_user_errors_are_one_line_with_exit_2(tmp_path, tile_folder, tiny_model_dir, capsys):
    assert "folder not found" in _one_line_error(capsys, "index", tmp_path / "missing", "--model", tiny_model_dir)
    assert "no index" in _one_line_error(capsys, "search", "x", "--index-dir", tmp_path / "none")
    assert "no index yet" in _one_line_error(capsys, "search", "x")
    assert "bad band list" in _one_line_error(capsys, "index", tile_folder, "--bands", "4,x",
                                              "--model", tiny_model_dir)
    assert "no hashing model" in _one_line_error(capsys, "index", tile_folder, "--index-dir", tmp_path / "i",
                                                 "--model", tmp_path)
    bad = tmp_path / "bad-index"
    bad.mkdir()
    (bad / "archive.sqlite").write_bytes(b"garbage" * 200)
    assert "unreadable" in _one_line_error(capsys, "info", "--index-dir", bad)
    _one_line_error(capsys, "search", "-k", "0", "x")  # argparse errors too
    _one_line_error(capsys, "frobnicate")


def test_query_errors(indexed, capsys):
    assert "type a description" in _one_line_error(capsys, "search", "  ", "--index-dir", indexed)
    assert "no tile with id 999" in _one_line_error(capsys, "similar", 999, "--index-dir", indexed)
    assert "image not found" in _one_line_error(capsys, "captions", "nope.png", "--index-dir", indexed)


def test_unexpected_errors_exit_1_traceback_only_with_debug(indexed, capsys, monkeypatch):
    from duch_desktop.core.archive.archive import Archive

    def boom(self, *a, **k):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(Archive, "search_text", boom)
    err = _one_line_error(capsys, "search", "x", "--index-dir", indexed, code=1)
    assert "RuntimeError: boom" in err
    code, _, err = _run(capsys, "search", "x", "--index-dir", indexed, "--debug")
    assert code == 1 and "Traceback" in err


def test_ctrl_c_cancels_cleanly_and_resumes(tmp_path, tile_folder, tiny_model_dir, capsys, monkeypatch):
    import tqdm

    class InterruptingBar(tqdm.tqdm):
        events = 0

        def set_postfix_str(self, s="", *a, **k):  # called once per progress event; an indexing batch's says tiles/s
            InterruptingBar.events += "tiles/s" in s
            if InterruptingBar.events == 2:
                raise KeyboardInterrupt
            return super().set_postfix_str(s, *a, **k)

    monkeypatch.setattr(tqdm, "tqdm", InterruptingBar)
    index_dir = tmp_path / "index"
    code, _, err = _run(capsys, "index", tile_folder, "--index-dir", index_dir, "--model", tiny_model_dir,
                        "--workers", 0, "--batch-size", 1)
    assert code == 130 and "cancelled; 2 tiles indexed, run again to resume" in err
    monkeypatch.undo()
    code, out, _ = _run(capsys, "index", tile_folder, "--index-dir", index_dir, "--model", tiny_model_dir,
                        "--workers", 0, "--json")
    report = json.loads(out)
    assert code == 0 and (report["added"], report["unchanged"]) == (N - 2, 2)


def test_subprocess_with_real_hf_encoders(tmp_path, tile_folder, hf_model_dir):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    index_dir = tmp_path / "index"

    def duch(*argv):
        return subprocess.run([sys.executable, "-m", "duch_desktop.cli", *map(str, argv)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    res = duch("index", tile_folder, "--index-dir", index_dir, "--model", hf_model_dir, "--workers", 0, "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["added"] == N
    res = duch("search", "a dense green forest", "--index-dir", index_dir, "-k", 4, "--geojson")
    assert res.returncode == 0, res.stderr
    assert len(json.loads(res.stdout)["features"]) == 4
    res = duch("search", "", "--index-dir", index_dir)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_index_without_folder_or_demo_is_a_one_line_user_error(capsys):
    from duch_desktop.cli import main

    assert main(["index"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--demo" in err[0]


def test_research_encoders_follow_the_model_unless_told(monkeypatch):
    """`duch evaluate --external` scores a bundle with the text and image pooling it was trained with; the
    options override it, and without a model the default pooling is used."""
    import argparse

    from duch_desktop import cli_research
    from duch_desktop.core.model import encoders

    calls, image_calls = [], []
    monkeypatch.setattr(encoders, "load_image_encoder",
                        lambda spec, device=None, runtime=None, pooling=None: image_calls.append(pooling) or spec)
    monkeypatch.setattr(encoders, "load_text_encoder",
                        lambda spec, device=None, pooling=None, runtime=None: calls.append((spec, pooling)) or spec)
    args = argparse.Namespace(image_encoder=None, text_encoder=None, text_pooling=None, device=None)
    model = argparse.Namespace(text_encoder="all-MiniLM-L6-v2@0.1.0")  # an older bundle: the paper's pooling
    cli_research._encoders(args, model)
    model.text_encoder = "all-MiniLM-L6-v2@0.1.0;pool=last1"
    cli_research._encoders(args, model)
    cli_research._encoders(args)
    cli_research._encoders(argparse.Namespace(**{**vars(args), "text_pooling": "last4"}), model)
    assert calls == [("all-MiniLM-L6-v2", "last4"), ("all-MiniLM-L6-v2", "last1"),
                     (None, encoders.DEFAULT_TEXT_POOLING), ("all-MiniLM-L6-v2", "last4")]
    assert encoders.DEFAULT_TEXT_POOLING == "last1"
    # The image pooling follows the bundle the same way: a bundle from before the option pooled the head alone.
    image_calls.clear()
    for recorded in ("efficientnet-lite0@0.1.0", "efficientnet-lite0@0.1.0;pool=head+b14"):
        cli_research._encoders(args, argparse.Namespace(image_encoder=recorded))
    cli_research._encoders(args)
    cli_research._encoders(argparse.Namespace(**{**vars(args), "image_pooling": "head+b10"}),
                           argparse.Namespace(image_encoder="efficientnet-lite0@0.1.0"))
    assert image_calls == ["head", "head+b14", None, "head+b10"]
