"""Hostile use of the ``duch`` CLI on copies of a clean index: nothing hangs, nothing is lost.

Every case copies a clean index (and its folder), does something a hostile or unlucky user
would do, runs the CLI in-process under a time limit and then checks that the answer was the
promised one (an exit code, one plain line on stderr, never a traceback) and that the index is
consistent: SQLite's integrity check passes, no path is listed twice, every listed path is a
file on disk, the faiss ids are exactly the 'ok' tiles, and — unless the case adds files — the
codes and the model meta are byte-identical to the clean index.
"""
from __future__ import annotations

import json
import shutil
import signal
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from duch_desktop.cli import main
from duch_desktop.core.model import defaults
from tests.conftest import IMAGE_ID, TEXT_ID, TinyImageEncoder, make_tile_folder, make_tiny_model

CASE_TIMEOUT_S = 60  # far above any case's time: reaching it means a hang
MODEL_META = ("model_fingerprint", "bits", "image_encoder", "text_encoder", "options", "model_dir", "chips")


@contextmanager
def _deadline(seconds: int):
    def hang(*_):
        raise TimeoutError(f"hang: the command ran over {seconds} s")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    with _deadline(CASE_TIMEOUT_S):
        code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "unexpected error" not in err, err
    return code, out, err


def expect_user_error(capsys, *argv) -> str:
    """Exit 2 and one plain line on stderr that gives no advice to delete anything."""
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (code, out, err)
    assert len(err.strip().splitlines()) == 1, err
    assert "delete" not in err.lower(), err
    return err


def codes_and_meta(index_dir: Path) -> tuple[dict, dict]:
    conn = sqlite3.connect(index_dir / "archive.sqlite")
    try:
        codes = {bytes(r): (s, None if c is None else bytes(c))
                 for r, s, c in conn.execute("SELECT rel_bytes, status, code FROM tiles")}
        captions = {t: None if c is None else bytes(c) for t, c in conn.execute("SELECT text, code FROM captions")}
        meta = {k: v for k, v in conn.execute("SELECT key, value FROM meta") if k in MODEL_META}
    finally:
        conn.close()
    return {"tiles": codes, "captions": captions}, meta


def assert_consistent(index_dir: Path, folder: Path) -> None:
    """SQLite integrity, no duplicate paths, paths = files on disk, faiss ids = the 'ok' tiles."""
    import faiss

    conn = sqlite3.connect(index_dir / "archive.sqlite")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT id, rel_bytes, status FROM tiles WHERE win_col IS NULL").fetchall()
        ok = {i for (i,) in conn.execute("SELECT id FROM tiles WHERE status = 'ok' AND code IS NOT NULL")}
        gens = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('tiles_gen', 'tiles_faiss_gen')"))
    finally:
        conn.close()
    rels = [bytes(r) for _, r, _ in rows]
    assert len(rels) == len(set(rels))
    assert all((folder / r.decode("utf-8", "surrogateescape")).is_file() for r in rels)
    index = faiss.read_index_binary(str(index_dir / "tiles.faiss"))
    if gens.get("tiles_faiss_gen") == gens.get("tiles_gen"):  # else it is marked stale: rebuilt on the next open
        ids = set(faiss.rev_swig_ptr(index.id_map.data(), index.id_map.size()).tolist()) if index.ntotal else set()
        assert ids == ok


@pytest.fixture(scope="module")
def clean(tmp_path_factory, tiny_model_dir):
    """A clean index of the 12-tile folder, made by the CLI; copied by every case."""
    base = tmp_path_factory.mktemp("clean")
    make_tile_folder(base / "tiles")
    code = main(["index", str(base / "tiles"), "--index-dir", str(base / "index"), "--model", str(tiny_model_dir),
                 "--workers", "0"])
    assert code == 0
    return base


@pytest.fixture
def case(clean, tmp_path, tiny_model_dir):
    """A private copy of the clean index and its folder (the copy's meta names the copied folder)."""
    folder, index_dir = tmp_path / "tiles", tmp_path / "index"
    shutil.copytree(clean / "tiles", folder)
    shutil.copytree(clean / "index", index_dir)
    conn = sqlite3.connect(index_dir / "archive.sqlite")
    conn.execute("UPDATE meta SET value = ? WHERE key = 'root'", (bytes(folder),))
    conn.commit()
    conn.close()
    before = codes_and_meta(index_dir)

    def unchanged() -> None:
        assert_consistent(ns.index, folder)
        assert codes_and_meta(ns.index) == before

    ns = SimpleNamespace(folder=folder, index=index_dir, model=tiny_model_dir, tmp=tmp_path,
                         before=before, unchanged=unchanged)
    return ns


# --------------------------------------------------------------------------- bad models

class CrashingEncoder(TinyImageEncoder):
    def encode(self, images):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


class NanEncoder(TinyImageEncoder):
    def encode(self, images):
        return np.full((len(images), self.dim), np.nan, np.float32)


class WideEncoder(TinyImageEncoder):
    def encode(self, images):
        return np.zeros((len(images), self.dim + 1), np.float32)


defaults.register_encoder_factory("hostile-crash", CrashingEncoder)
defaults.register_encoder_factory("hostile-nan", NanEncoder)
defaults.register_encoder_factory("hostile-wide", WideEncoder)


def _bundle(path: Path, image_dim=8, text_dim=8, image_encoder=IMAGE_ID, text_encoder=TEXT_ID) -> Path:
    from duch_desktop.core.model.bundle import DuchModel

    import torch

    torch.manual_seed(7)
    DuchModel.new(image_dim, text_dim, 16, image_encoder, text_encoder, hidden=32).save(path)
    return path


def _edit_json(path: Path, **changes) -> Path:
    meta = json.loads((path / "model.json").read_text())
    meta.update(changes)
    (path / "model.json").write_text(json.dumps(meta))
    return path


def _bad_model(kind: str, path: Path) -> Path:
    if kind == "image feature size":
        return _bundle(path, image_dim=16)
    if kind == "text feature size":
        return _bundle(path, text_dim=12)
    if kind == "unknown image encoder":
        return _bundle(path, image_encoder="no-such-encoder@1.0")
    if kind == "unknown text encoder":
        return _bundle(path, text_encoder="/nowhere/bert")
    if kind == "encoder crashes":
        return _bundle(path, image_encoder="hostile-crash:8")
    if kind == "encoder gives NaN":
        return _bundle(path, image_encoder="hostile-nan:8")
    if kind == "encoder gives wrong shape":
        return _bundle(path, image_encoder="hostile-wide:8")
    if kind.startswith("bits "):
        return _edit_json(_bundle(path), bits=json.loads(kind.split(" ", 1)[1]))
    if kind == "hidden mismatch":
        return _edit_json(_bundle(path), hidden=64, weights_sha256=None)
    if kind == "weights missing":
        (_bundle(path) / "model.safetensors").unlink()
        return path
    if kind == "model.json missing":
        (_bundle(path) / "model.json").unlink()
        return path
    if kind == "model.json garbage":
        (_bundle(path) / "model.json").write_bytes(b"\xff\xfe{not json")
        return path
    if kind == "weights truncated":
        w = _bundle(path) / "model.safetensors"
        w.write_bytes(w.read_bytes()[:100])
        return path
    if kind == "no such folder":
        return path / "nowhere"
    raise AssertionError(kind)


BAD_MODELS = ["image feature size", "text feature size", "unknown image encoder", "unknown text encoder",
              "encoder crashes", "encoder gives NaN", "encoder gives wrong shape", "bits -64", "bits 8e8",
              "bits 12", 'bits "64"', "hidden mismatch", "weights missing", "model.json missing",
              "model.json garbage", "weights truncated", "no such folder"]


@pytest.mark.parametrize("kind", BAD_MODELS)
def test_a_bad_model_changes_nothing(case, capsys, kind):
    bad = _bad_model(kind, case.tmp / "bad-model")
    expect_user_error(capsys, "index", case.folder, "--index-dir", case.index, "--model", bad, "--workers", 0)
    case.unchanged()
    # ...and the index still answers with its own model.
    code, out, _ = run_cli(capsys, "search", "green forest", "--index-dir", case.index, "--json")
    assert code == 0 and len(json.loads(out)) == 12


# --------------------------------------------------------------------------- decompression bombs

def _errors(capsys, index_dir) -> dict[str, str]:
    code, out, _ = run_cli(capsys, "info", "--index-dir", index_dir, "--errors", "--json")
    assert code == 0
    return {rel: reason for rel, reason in json.loads(out)["error_files"]}


def _index(capsys, case, *extra) -> dict:
    code, out, err = run_cli(capsys, "index", case.folder, "--index-dir", case.index, "--workers", 0, "--json", *extra)
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("kind, reason", [
    ("tiff", "decodes to 4.9 GB, over the 2 GB limit"),
    ("png", "decodes to 4.8 GB, over the 2 GB limit"),
    ("png-plain", "decodes to 4.8 GB, over the 2 GB limit"),
    ("jpeg", ""),
])
def test_a_bomb_is_refused_from_its_header_and_the_run_goes_on(case, capsys, kind, reason):
    from tests.hostile import write_jpeg_bomb, write_png_bomb, write_tiff_bomb

    name = {"tiff": "bomb.tif", "png": "bomb.png", "png-plain": "plain.png", "jpeg": "bomb.jpg"}[kind]
    path = case.folder / name
    {"tiff": write_tiff_bomb, "png": write_png_bomb, "jpeg": write_jpeg_bomb,
     "png-plain": lambda p: write_png_bomb(p, interlaced=False)}[kind](path)
    report = _index(capsys, case)
    assert (report["added"], report["errors"], report["unchanged"]) == (0, 1, 12)
    assert reason in _errors(capsys, case.index)[name]
    assert_consistent(case.index, case.folder)
    assert codes_and_meta(case.index)[0]["tiles"].items() >= case.before[0]["tiles"].items()


def test_the_decode_limits_can_be_raised(case, capsys):
    from tests.hostile import write_png_bomb

    write_png_bomb(case.folder / "bomb.png", size=30000)  # 2.7 GB decoded
    _index(capsys, case, "--max-decode-gb", 3)  # allowed now: fails later, on its (fake) pixel data
    assert "over the" not in _errors(capsys, case.index)["bomb.png"]


def test_a_decode_past_the_time_limit_is_stopped(case, capsys):
    from tests.hostile import write_tiff_bomb

    write_tiff_bomb(case.folder / "bomb.tif")
    report = _index(capsys, case, "--max-decode-gb", 0, "--decode-timeout", 0.5)
    assert (report["errors"], report["unchanged"]) == (1, 12)
    assert _errors(capsys, case.index)["bomb.tif"] == "still decoding after 0.5 s, the time limit: stopped"
    assert_consistent(case.index, case.folder)


CTRL_C_SCRIPT = """
import sys
sys.path.insert(0, {repo!r})
import tests.conftest
from duch_desktop.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _decoder(pid: int) -> bool:
    """Whether ``pid`` has a decoding process: a forked Python child that stays one for a moment (a
    subprocess a library starts, e.g. ldconfig, is a Python fork too until it execs)."""
    import os
    import time

    def pythons() -> set[int]:
        out = set()
        for c in _children(pid):
            try:
                if os.readlink(f"/proc/{c}/exe") == os.readlink(f"/proc/{pid}/exe"):
                    out.add(c)
            except OSError:
                pass
        return out

    first = pythons()
    if not first:
        return False
    time.sleep(0.3)
    return bool(first & pythons())


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to see the decoding process")
def test_ctrl_c_acts_during_a_long_decode(case):
    import os
    import subprocess
    import sys
    import time

    from tests.hostile import write_tiff_bomb

    # Large blocks: the tiny encoder reads a 32 px decimation, which samples at most 32 x 32 blocks,
    # so only the cost of each block makes the decode long (~13 s here; 512 px blocks took < 1 s).
    write_tiff_bomb(case.folder / "bomb.tif", size=65536, block=2048)
    repo = str(Path(__file__).resolve().parents[1])
    proc = subprocess.Popen([sys.executable, "-c", CTRL_C_SCRIPT.format(repo=repo), "index", str(case.folder),
                             "--index-dir", str(case.index), "--workers", "0", "--max-decode-gb", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + CASE_TIMEOUT_S
        while not _decoder(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # well inside the bomb's decode
        os.kill(proc.pid, signal.SIGINT)
        sent = time.monotonic()
        _, err = proc.communicate(timeout=CASE_TIMEOUT_S)
        waited = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err
    print(f"Ctrl-C acted in {waited:.2f} s")
    assert waited < 10, waited  # a hang check; measured well under 2 s
    case.unchanged()


# --------------------------------------------------------------------------- full disk, read-only index

def _mount(*args) -> bool:
    import subprocess

    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@contextmanager
def _small_disk(path: Path, size: str):
    """A tmpfs of ``size`` at ``path`` (root only), unmounted afterwards."""
    import os

    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)):
        pytest.skip("needs root to mount a small tmpfs (disk-full cases)")
    try:
        yield path
    finally:
        import subprocess

        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _move_index(case, disk: Path) -> None:
    """Put the case's index on ``disk``."""
    moved = disk / "index"
    shutil.copytree(case.index, moved)
    shutil.rmtree(case.index)
    case.index = moved


def _fill(disk: Path) -> None:
    try:
        with open(disk / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 65536)
    except OSError:
        pass


def test_disk_full_mid_run_says_so_and_resumes(case, capsys):
    from tests.conftest import write_tile

    for i in range(150):
        write_tile(case.folder / "more" / f"m{i:03d}.png", "forest", seed=100 + i, geo=False)
    with _small_disk(case.tmp / "disk", "1m") as disk:
        _move_index(case, disk)
        _fill(disk)
        (disk / "filler").write_bytes(b"\0" * max(0, (disk / "filler").stat().st_size - 160_000))  # room for a few batches
        err = expect_user_error(capsys, "index", case.folder, "--index-dir", case.index, "--workers", 0,
                                "--batch-size", 4)
        assert "disk is full" in err and "intact" in err
        assert_consistent(case.index, case.folder)
        tiles = codes_and_meta(case.index)[0]["tiles"]
        assert {k: tiles[k] for k in case.before[0]["tiles"]} == case.before[0]["tiles"]
        assert all(len(f.read_bytes()) > 0 for f in case.index.glob("*.faiss"))
        (disk / "filler").unlink()  # space again: the run resumes and finishes
        report = _index(capsys, case)
        assert report["added"] + report["unchanged"] == 162 and report["errors"] == 0
        assert_consistent(case.index, case.folder)


@pytest.mark.parametrize("command", ["info", "search", "index"])
def test_a_full_disk_is_not_called_damage(case, capsys, command):
    with _small_disk(case.tmp / "disk", "2m") as disk:
        _move_index(case, disk)
        _fill(disk)
        argv = {"info": ["info"], "search": ["search", "green forest"],
                "index": ["index", case.folder, "--workers", 0]}[command]
        code, out, err = run_cli(capsys, *argv, "--index-dir", case.index)
        assert code in (0, 2) and "delete" not in err.lower() and len(err.strip().splitlines()) <= 1, err
        (disk / "filler").unlink()
        case.unchanged()


def test_a_read_only_index_answers_queries_and_refuses_indexing_plainly(case, capsys):
    import os
    import subprocess

    if os.geteuid() != 0 or not _mount("--bind", str(case.index), str(case.index)):
        pytest.skip("needs root for a read-only bind mount")
    try:
        assert _mount("-o", "remount,ro,bind", str(case.index))
        err = expect_user_error(capsys, "index", case.folder, "--index-dir", case.index, "--workers", 0)
        assert "read-only" in err
        code, out, err = run_cli(capsys, "search", "green forest", "--index-dir", case.index, "--json")
        assert code == 0 and len(json.loads(out)) == 12, err
        code, out, err = run_cli(capsys, "info", "--index-dir", case.index)
        assert code == 0, err
    finally:
        subprocess.run(["umount", "-l", str(case.index)], capture_output=True)
    case.unchanged()


def test_a_short_faiss_write_never_replaces_a_good_file(case, monkeypatch):
    import faiss

    from duch_desktop.core.archive.hamming import HammingTable

    path = case.index / "tiles.faiss"
    good = path.read_bytes()
    index = HammingTable.load(path, 16)
    assert index is not None and index.ntotal == 12
    # What faiss does on a full disk: "close error" on stderr, no exception, a short file.
    monkeypatch.setattr(faiss, "write_index_binary", lambda _, name: Path(name).write_bytes(good[:40]))
    with pytest.raises(OSError, match="disk full"):
        index.save(path)
    assert path.read_bytes() == good and not list(case.index.glob(".tiles.faiss.*"))


def test_permission_denied_on_the_index_is_plain(case, capsys, monkeypatch):
    import builtins

    from duch_desktop.core.archive import indexing

    def no_access(path, *a, **k):
        if str(path).endswith("indexing.lock"):
            raise PermissionError(13, "Permission denied", str(path))
        return builtins.open(path, *a, **k)

    monkeypatch.setattr(indexing, "open", no_access, raising=False)
    err = expect_user_error(capsys, "index", case.folder, "--index-dir", case.index, "--workers", 0)
    assert "permission denied" in err
    case.unchanged()


# --------------------------------------------------------------------------- skipped paths

def _deep_file(root: Path, depth: int = 19) -> str:
    """A tile under a path longer than PATH_MAX (made level by level through directory descriptors)."""
    import os

    from tests.hostile import _photo

    fd, rel = os.open(root, os.O_RDONLY), []
    try:
        for k in range(depth):
            name = f"{k:02d}" + "d" * 240
            os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nfd
            rel.append(name)
        out = os.open("deep.png", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, _photo("PNG"))
        os.close(out)
    finally:
        os.close(fd)
    return "/".join(rel)


def test_skipped_paths_are_listed_with_their_reason(case, capsys, monkeypatch):
    import os

    from duch_desktop.core.imagery import reading

    deep = _deep_file(case.folder)
    outside = case.tmp / "elsewhere.png"
    shutil.copy(case.folder / "forest" / "forest_0.png", outside)
    os.symlink(outside, case.folder / "link_out.png")
    os.symlink(case.tmp / "nothing.png", case.folder / "broken.png")
    (case.folder / "locked").mkdir()
    real_scandir = os.scandir

    def scandir(path):  # root reads every folder, so a locked one is made at the OS boundary
        if str(path).endswith("/locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(reading.os, "scandir", scandir)
    code, out, err = run_cli(capsys, "index", case.folder, "--index-dir", case.index, "--workers", 0)
    assert code == 0, err
    expected = {"link_out.png": "link points outside the folder", "broken.png": "broken link",
                "locked": "permission denied"}
    for rel, reason in expected.items():
        assert any(line.startswith(f"skipped {rel}: ") and reason in line for line in out.splitlines()), out
    assert "4 skipped" in out and any("path too long" in line for line in out.splitlines()), out
    code, out, _ = run_cli(capsys, "info", "--index-dir", case.index, "--errors")
    assert code == 0 and all(f"{rel}: skipped" in out for rel in expected), out
    listed = dict(map(tuple, json.loads(run_cli(capsys, "info", "--index-dir", case.index, "--errors",
                                                "--json")[1])["skipped_paths"]))
    assert len(listed) == 4 and any(rel.startswith(deep[:200]) for rel in listed)
    case.unchanged()


# --------------------------------------------------------------------------- odd input, odd caches

@pytest.mark.parametrize("query", ["green forest \udce9\udcff", "forest \ud800 lake", "\udcff"])
def test_queries_with_bad_bytes_are_read_not_crashed_on(case, capsys, query):
    code, out, err = run_cli(capsys, "search", query, "--index-dir", case.index, "--json")
    assert code == 0 and len(json.loads(out)) == 12, err
    case.unchanged()


def test_thumbs_as_a_plain_file_breaks_nothing(case, capsys):
    shutil.rmtree(case.index / "thumbs")
    (case.index / "thumbs").write_bytes(b"not a folder")
    for argv in (["info"], ["search", "green forest"], ["index", case.folder, "--workers", 0]):
        code, _, err = run_cli(capsys, *argv, "--index-dir", case.index)
        assert code == 0, err
    from duch_desktop.core.archive.archive import Archive
    from duch_desktop.core.jobs import UserError

    with Archive.open(case.index) as archive, pytest.raises(UserError, match="cannot keep thumbnails"):
        archive.thumbnail(1)
    case.unchanged()


@pytest.mark.parametrize("damage", [b"", b"\xff\xd8\xff\xe0 cut off", b"<html>not a jpeg</html>"])
def test_a_damaged_cached_thumbnail_is_made_again(case, damage):
    from PIL import Image

    from duch_desktop.core.archive.archive import Archive

    with Archive.open(case.index) as archive:
        path = archive.thumbnail(1)
        good = path.read_bytes()
        path.write_bytes(damage)
        assert archive.thumbnail(1).read_bytes() == good
        with Image.open(path) as im:
            im.load()
        preview, _ = archive.scene_preview(1)
        preview.write_bytes(damage)
        with Image.open(archive.scene_preview(1)[0]) as im:
            im.load()
    case.unchanged()


def test_broken_georeferencing_gives_no_footprint_with_the_reason(case, capsys):
    from affine import Affine

    from tests.hostile import _rgb, write_geotiff

    write_geotiff(case.folder / "far.tif", _rgb(), crs="EPSG:4326", transform=Affine(1e10, 0, 1e12, 0, -1e10, 1e12))
    write_geotiff(case.folder / "utm_far.tif", _rgb(), crs="EPSG:32633", transform=Affine(1e9, 0, 1e13, 0, -1e9, 1e13))
    report = _index(capsys, case)
    assert report["added"] == 2 and report["errors"] == 0
    conn = sqlite3.connect(case.index / "archive.sqlite")
    rows = conn.execute("SELECT footprint, meta FROM tiles WHERE rel IN ('far.tif', 'utm_far.tif')").fetchall()
    conn.close()
    for footprint, meta in rows:
        assert footprint is None and "no footprint" in json.loads(meta)["footprint_note"]
    code, out, _ = run_cli(capsys, "search", "forest", "-k", 14, "--index-dir", case.index, "--geojson")
    for feature in json.loads(out)["features"]:
        for lon, lat in (feature["geometry"] or {"coordinates": [[]]})["coordinates"][0]:
            assert -180 <= lon <= 180 and -90 <= lat <= 90
    assert_consistent(case.index, case.folder)


def test_a_complex_raster_leaks_no_numpy_warning(case, capfd):
    import warnings

    from duch_desktop.core.imagery import reading
    from tests.hostile import write_geotiff

    data = (np.arange(64 * 64).reshape(1, 64, 64) * (1 + 2j)).astype(np.complex64)
    path = write_geotiff(case.folder / "sar.tif", data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning that reaches the caller fails the read
        pixels, _ = reading.read_tile(path, size=32)
    assert pixels.any()
    code, out, err = run_cli(capfd, "index", case.folder, "--index-dir", case.index, "--workers", 0, "--json")
    assert code == 0 and json.loads(out)["added"] == 1 and json.loads(out)["errors"] == 0
    assert "Warning" not in err, err  # the decoding process writes to the same stderr


def test_a_cancel_between_events_acts_during_a_long_decode(case):
    """The GUI can only cancel between two events: a long decode must still yield some."""
    import time

    from duch_desktop.core.archive.archive import Archive
    from tests.hostile import write_tiff_bomb

    write_tiff_bomb(case.folder / "bomb.tif")
    with Archive.open(case.index) as archive:
        job = archive.index(workers=0, max_decode_bytes=None)
        with _deadline(CASE_TIMEOUT_S):
            event = next(e for e in job if e.stage == "decode")
            start = time.monotonic()
            job.close()
            waited = time.monotonic() - start
        assert "bomb.tif" in event.message and archive.last_report.cancelled
    assert waited < 10, waited  # a hang check: closing kills the decoding process at once
    case.unchanged()
