"""Indexing on Ray (``--ray``): the same index as a local run; dead workers, cancel, resume, bad files, incremental.

One local Ray instance (2 CPUs) serves the whole module: starting Ray and its worker processes
costs seconds, so there are only two Ray runs, which check several things each.
"""
from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest

from duch_desktop.cli import main
from duch_desktop.core.archive import distributed
from duch_desktop.core.archive.archive import ARCHIVE_DB, Archive
from duch_desktop.core.jobs import UserError
from tests.conftest import (CLASSES, PER_CLASS, SCENE_CHIP, TinyImageEncoder, TinyTextEncoder, make_tile_folder,
                            run_job, write_scene)

ray = pytest.importorskip("ray", reason="Ray is optional: pip install 'duch-desktop[ray]'")

REPO = Path(__file__).resolve().parents[2]
N = len(CLASSES) * PER_CLASS
COLUMNS = "id, rel, status, error, code, meta, footprint, content_hash, win_col, win_row, win_w, win_h"


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    """A local Ray instance whose workers import this checkout (and the tests' encoders)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, sys.path)])}})
    yield
    ray.shutdown()


class DyingImageEncoder(TinyImageEncoder):
    """The tiny encoder, whose worker process dies once: on the first batch any Ray worker gets
    (not in the driver, where the model's probe runs before the index changes)."""

    def __init__(self, marker: Path):
        super().__init__()
        self.marker, self.driver = marker, os.getpid()

    def encode(self, images):
        if not self.marker.exists() and os.getpid() != self.driver:
            self.marker.write_text(str(os.getpid()))
            os._exit(1)  # a killed worker, as an OOM killer or a lost node would do
        return super().encode(images)


def _json(out: str) -> dict:
    """The CLI's JSON report (Ray's own notes from a background thread may follow it on stdout)."""
    return json.JSONDecoder().raw_decode(out[out.index("{"):])[0]


def _hits(archive: Archive) -> list[tuple]:
    """Every tile's (distance, id) for a query; sorted, as faiss orders ties by insertion (commit) order."""
    return sorted((h.distance, h.tile_id) for h in archive.search_text("green forest", k=100))


def _rows(index_dir: Path) -> list[tuple]:
    conn = sqlite3.connect(index_dir / ARCHIVE_DB)
    try:
        return conn.execute(f"SELECT {COLUMNS} FROM tiles ORDER BY id").fetchall()
    finally:
        conn.close()


@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    """12 tiles, a scene cut into 28 chips (8 nodata), and a file that is not an image."""
    root = tmp_path / "tiles"
    make_tile_folder(root)
    write_scene(root / "scenes" / "scene.tif")
    (root / "broken.png").write_bytes(b"not a png at all")
    return root


def test_ray_index_equals_local_index_through_kill_cancel_and_resume(tmp_path, mixed_folder, tiny_model_dir,
                                                                    monkeypatch, capsys):
    local = Archive.open(tmp_path / "local", model=tiny_model_dir, image_encoder=TinyImageEncoder(),
                         text_encoder=TinyTextEncoder(), create_root=mixed_folder)
    expected, _ = run_job(local.index(workers=0, batch_size=4, **SCENE_CHIP))
    assert expected.added == N + 1 and expected.errors == 1 and expected.chips == 28 and expected.nodata == 8
    expected_hits = _hits(local)
    local.close()

    # From Python: the worker holding the first batch dies (Ray restarts it and retries the block),
    # then the run is cancelled after its first commit of 4 items.
    monkeypatch.setattr(distributed, "COMMIT_ROWS", 4)
    marker = tmp_path / "died"
    archive = Archive.open(tmp_path / "ray", model=tiny_model_dir, image_encoder=DyingImageEncoder(marker),
                           text_encoder=TinyTextEncoder(), create_root=mixed_folder)
    job = archive.index(batch_size=4, ray="local", ray_workers=2, **SCENE_CHIP)
    messages = []
    for event in job:
        messages.append(event.message)
        if event.stage == "index" and event.done:
            break
    job.close()
    assert marker.exists()  # a worker did die
    assert any("with Ray at local: 2 workers" in m for m in messages)
    assert archive.last_report.cancelled and 0 < len(_rows(tmp_path / "ray")) < len(_rows(tmp_path / "local"))
    archive.close()

    # From the CLI: the run resumes (encoders from the bundle's identities, pickled to the workers)
    # and the index is the local one: same ids, codes, metadata, errors; same search results.
    args = ["index", str(mixed_folder), "--index-dir", str(tmp_path / "ray"), "--ray", "local", "--ray-workers", "2",
            "--json"]
    assert main(args) == 0, capsys.readouterr().err
    report = _json(capsys.readouterr().out)
    assert report["added"] > 0 and not report["cancelled"]
    assert _rows(tmp_path / "ray") == _rows(tmp_path / "local")
    with Archive.open(tmp_path / "ray") as archive:
        assert _hits(archive) == expected_hits
        assert dict(archive.errors())["broken.png"]

    # Nothing changed: nothing to encode, and Ray is not even started.
    assert main(args) == 0
    out = capsys.readouterr()
    again = _json(out.out)
    assert (again["unchanged"], again["added"], again["updated"], again["errors"]) == (N + 2, 0, 0, 0)
    assert "Ray" not in out.err


def test_cli_without_ray_installed_says_how_to_get_it(tmp_path, tile_folder, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    rc = main(["index", str(tile_folder), "--index-dir", str(tmp_path / "idx"), "--ray", "local"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip().splitlines() == ["duch: Ray is not installed: pip install 'duch-desktop[ray]' (or 'ray[data]') "
                                        "to index with --ray"]
    assert not (tmp_path / "idx").exists()  # checked before anything is written


def test_bad_ray_arguments_fail_before_any_work(tmp_path, tile_folder, tiny_model, capsys):
    archive = Archive.open(tmp_path / "idx", model=tiny_model, image_encoder=TinyImageEncoder(),
                           text_encoder=TinyTextEncoder(), create_root=tile_folder)
    with pytest.raises(UserError, match="unknown Ray address"):
        archive.index(ray="nowhere")
    with pytest.raises(UserError, match="at least 1"):
        archive.index(ray="local", ray_workers=0)
    archive.close()
    assert main(["index", str(tile_folder), "--index-dir", str(tmp_path / "other"), "--ray", "no-port:"]) == 2
    assert "unknown Ray address" in capsys.readouterr().err
