"""The self-test of an installation (duch_desktop.selftest) and the packaged bundle's smoke test.

The fast tests drive the Qt-free self-test on the tiny model and fixtures. The ``packaging``
test runs ``packaging/dist/duch-desktop/duch-desktop --self-test`` offscreen when that bundle
exists, after building it first when ``DUCH_BUILD_BUNDLE=1`` (``packaging/build_linux.sh``), and
checks that its encoders run on onnxruntime from the graphs it ships (read-only, none exported).
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from duch_desktop.selftest import SelfTestFailed, run_self_test, self_test_main

from tests.conftest import snapshot

ROOT = Path(__file__).resolve().parents[1]
BUNDLE_DIR = ROOT / "packaging" / "dist" / "duch-desktop"
BUNDLE_EXE = BUNDLE_DIR / ("duch-desktop.exe" if sys.platform == "win32" else "duch-desktop")


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """The self-test's temporary index goes here (so the test can see it is removed)."""
    path = tmp_path / "tmp"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


def _tiny(tiny_model_dir, tiny_encoders, **kw) -> dict:
    return dict(model=tiny_model_dir, image_encoder=tiny_encoders.image, text_encoder=tiny_encoders.text,
                workers=0, **kw)


def test_self_test_indexes_a_temporary_copy_and_reports(tile_folder, tiny_model_dir, tiny_encoders, private_tmp):
    before = snapshot(tile_folder)
    out, err = io.StringIO(), io.StringIO()
    seen = {}

    def extra(archive, hits):
        seen["index_dir"] = archive.index_dir
        assert archive.index_dir.is_relative_to(private_tmp)
        return ["extra:   checked"]

    # k=12 (every tile): a random tiny model ranks classes arbitrarily, this checks the plumbing.
    rc = self_test_main(out=out, err=err, folder=tile_folder, query="a dense green forest", expect="forest", k=12,
                        extra_check=extra, **_tiny(tiny_model_dir, tiny_encoders))
    text = out.getvalue()
    assert rc == 0, err.getvalue()
    assert err.getvalue() == ""
    assert text.startswith("DUCH Desktop self-test OK\n")
    assert "indexed: 12 tiles (6 georeferenced)" in text
    assert "'a dense green forest'" in text and "first 'forest' tile at rank" in text
    assert f"model:   {tiny_model_dir} (16 bits; test-random:8 + test-bow:8)" in text
    assert text.rstrip().endswith("extra:   checked")
    assert snapshot(tile_folder) == before, "the self-test must not write into the indexed folder"
    assert not seen["index_dir"].exists() and list(private_tmp.iterdir()) == [], "temporary index left behind"


def test_self_test_result_fields(tile_folder, tiny_model_dir, tiny_encoders, private_tmp):
    res = run_self_test(folder=tile_folder, query="blue water of a lake", expect="water", k=12,
                        **_tiny(tiny_model_dir, tiny_encoders))
    assert res.tiles == 12 and res.georeferenced == 6 and res.bits == 16
    assert len(res.top) == 12 and res.top[res.expect_rank - 1].startswith("water/")
    assert res.query_ms > 0 and res.index_s > 0 and res.device.startswith("n/a")  # tiny encoders have no device


@pytest.mark.parametrize("case, message", [
    ("absent class", "no 'airport' tile in the top 5 for 'an airport with planes'"),
    ("unreadable file", "1 file(s) unreadable, e.g. field/broken.png"),
    ("no georeferencing", "no indexed tile has a footprint"),
    ("empty folder", "no tile indexed in"),
    ("missing folder", "folder not found"),
    ("extra check", "RuntimeError: Qt plugin missing"),
])
def test_self_test_fails_in_one_line(case, message, tile_folder, tiny_model_dir, tiny_encoders, private_tmp,
                                     tmp_path):
    kw = dict(folder=tile_folder, query="an airport with planes", expect="field", k=12)
    if case == "absent class":
        kw.update(expect="airport", k=5)
    elif case == "unreadable file":
        (tile_folder / "field" / "broken.png").write_bytes(b"not an image")
    elif case == "no georeferencing":
        for tif in tile_folder.rglob("*.tif"):
            tif.unlink()
    elif case == "empty folder":
        kw["folder"] = tmp_path / "empty"
        kw["folder"].mkdir()
    elif case == "missing folder":
        kw["folder"] = tmp_path / "nowhere"
    elif case == "extra check":
        def broken(archive, hits):
            raise RuntimeError("Qt plugin\nmissing")

        kw["extra_check"] = broken
    out, err = io.StringIO(), io.StringIO()
    assert self_test_main(out=out, err=err, **kw, **_tiny(tiny_model_dir, tiny_encoders)) == 1
    assert out.getvalue() == ""
    line = err.getvalue()
    assert line.startswith("DUCH Desktop self-test FAILED: ") and line.count("\n") == 1
    assert message in line
    assert list(private_tmp.iterdir()) == []


def test_self_test_raises_for_callers(tile_folder, tiny_model_dir, tiny_encoders, private_tmp):
    with pytest.raises(SelfTestFailed, match="no 'harbour' tile"):
        run_self_test(folder=tile_folder, query="a harbour", expect="harbour", **_tiny(tiny_model_dir, tiny_encoders))


def test_gui_self_test_takes_no_folder(capsys):
    pytest.importorskip("PySide6")
    from duch_desktop.gui.app import main

    assert main(["--self-test", "some/folder"]) == 2
    assert "--self-test runs on the bundled demo folder" in capsys.readouterr().err


# --------------------------------------------------------------------------- the packaged bundle

def _bundle_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


@pytest.mark.packaging
def test_bundle_self_test(tmp_path):
    """The one-folder bundle starts offscreen, runs its self-test on its own demo and model, exits 0."""
    if os.environ.get("DUCH_BUILD_BUNDLE") == "1":
        if not sys.platform.startswith("linux"):
            pytest.skip("packaging/build_linux.sh builds on Linux only")
        started = time.monotonic()
        build = subprocess.run(["bash", str(ROOT / "packaging" / "build_linux.sh")], cwd=ROOT, capture_output=True,
                               text=True, timeout=3600)
        assert build.returncode == 0, (build.stdout + build.stderr)[-6000:]
        print(f"bundle built in {time.monotonic() - started:.0f} s")
    elif not BUNDLE_EXE.is_file():
        pytest.skip(f"no bundle at {BUNDLE_DIR}: run packaging/build_linux.sh (or set DUCH_BUILD_BUNDLE=1)")
    assert BUNDLE_EXE.is_file(), f"the build made no {BUNDLE_EXE}"
    demo = BUNDLE_DIR / "_internal" / "resources" / "demo"
    graphs = BUNDLE_DIR / "_internal" / "resources" / "onnx"
    before, graphs_before = snapshot(demo), snapshot(graphs)
    assert sorted(p.suffix for p in graphs.iterdir()) == [".json", ".json", ".onnx", ".onnx"], graphs_before
    # onnxruntime is in, the exporter is not: the encoders can only run on onnx from the shipped graphs
    internal = BUNDLE_DIR / "_internal"
    assert (internal / "onnxruntime").is_dir() and not (internal / "onnxscript").exists()
    assert not (internal / "onnx").exists()
    # A bare environment: no repository sources, no user data, no display.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "DISPLAY",
                                                             "WAYLAND_DISPLAY")}
    env.update(QT_QPA_PLATFORM="offscreen", HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_CONFIG_HOME=str(tmp_path / "config"), TMPDIR=str(tmp_path))
    started = time.monotonic()
    run = subprocess.run([str(BUNDLE_EXE), "--self-test"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=1200)
    took = time.monotonic() - started
    print(run.stdout)
    print(f"bundle: {BUNDLE_DIR} {_bundle_size(BUNDLE_DIR) / 2**20:.0f} MiB; self-test ran {took:.0f} s")
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert "DUCH Desktop self-test OK" in run.stdout
    assert "device:  onnx (onnxruntime " in run.stdout, "the bundle's encoders do not run on onnxruntime"
    assert f"model:   {BUNDLE_DIR / '_internal' / 'resources' / 'models' / 'default'} (64 bits" in run.stdout
    assert "indexed: 94 tiles (1 georeferenced)" in run.stdout
    assert "first 'airplane' tile at rank" in run.stdout
    assert "native platform plugin" in run.stdout and "JPEG thumbnail and SVG icon load" in run.stdout
    assert snapshot(demo) == before, "the self-test wrote into the bundle's demo folder"
    assert snapshot(graphs) == graphs_before, "the self-test wrote into the bundle's ONNX graphs"
    assert not list(tmp_path.rglob("*.onnx")), "the bundle exported a graph instead of using its own"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("duch-selftest-")] == []
    cli = BUNDLE_DIR / "duch"
    if cli.exists():  # the CLI: the same executable started as `duch`
        help_run = subprocess.run([str(cli), "--help"], env=env, capture_output=True, text=True, timeout=300)
        assert help_run.returncode == 0 and "usage: duch" in help_run.stdout, help_run.stderr
