"""Encoder runtimes: the choice (auto/onnx/torch), the ONNX graph cache (atomic, locked, damage and
staleness detected), tiny models exported and matched against torch, fallbacks; real weights (slow)
agree with torch within 1e-4 on UCM tiles and captions."""
import json
import logging
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from duch_desktop.core.files import file_sha256
from duch_desktop.core.jobs import UserError
from duch_desktop.core.model import encoders, runtime
from tests.core.test_encoders import tiny_bert, tiny_resnet  # noqa: F401 - fixtures

UCM = Path(__file__).resolve().parents[3] / "shared" / "data" / "ucm"


def test_auto_is_onnx_for_the_default_encoders_on_a_cpu_and_torch_otherwise(monkeypatch):
    monkeypatch.delenv("DUCH_RUNTIME", raising=False)
    assert runtime.choose(None, "cpu", exportable=True) == "onnx"
    assert runtime.choose("auto", "cpu", exportable=False) == "torch"
    assert runtime.choose("auto", "cuda", exportable=True) == "torch"
    assert runtime.choose("torch", "cpu", exportable=True) == "torch"
    assert runtime.choose("onnx", "cpu", exportable=False) == "onnx"
    monkeypatch.setattr(runtime, "cuda_available", lambda: True)
    assert runtime.choose("auto", None, exportable=True) == "torch"
    monkeypatch.setenv("DUCH_RUNTIME", "onnx")
    assert runtime.choose(None, None, exportable=False) == "onnx"
    with pytest.raises(UserError, match="CPU only"):
        runtime.choose("onnx", "cuda:0", exportable=True)
    with pytest.raises(UserError, match="unknown runtime"):
        runtime.choose("tensorrt", None, exportable=True)
    runtime.set_default_runtime("torch")
    try:
        assert runtime.choose(None, "cpu", exportable=True) == "torch"
    finally:
        runtime.set_default_runtime(None)


def test_cuda_check_agrees_with_torch():
    import torch

    assert runtime.cuda_available() == torch.cuda.is_available()


def _fake_export(calls: list, payload: bytes = b"graph", delay: float = 0.0):
    def export(dest: Path) -> None:
        calls.append(dest)
        time.sleep(delay)
        dest.write_bytes(payload)
    return export


def test_graph_is_exported_once_then_reused_and_rebuilt_when_damaged_or_stale(tmp_path, monkeypatch):
    calls = []
    path = runtime.cached_graph("enc@1", "image", _fake_export(calls), tmp_path)
    assert path.read_bytes() == b"graph" and len(calls) == 1
    assert runtime.cached_graph("enc@1", "image", _fake_export(calls), tmp_path) == path and len(calls) == 1
    assert json.loads(path.with_suffix(".json").read_text())["identity"] == "enc@1"

    path.write_bytes(b"grapH")  # damaged: same size, other bytes
    (tmp_path / f".{path.name}.killed.tmp").write_bytes(b"half")  # a process killed mid-export
    runtime.cached_graph("enc@1", "image", _fake_export(calls), tmp_path)
    assert len(calls) == 2 and path.read_bytes() == b"graph"

    path.with_suffix(".json").unlink()  # sidecar lost (e.g. a kill between the two renames)
    runtime.cached_graph("enc@1", "image", _fake_export(calls), tmp_path)
    assert len(calls) == 3

    runtime.cached_graph("enc@2", "image", _fake_export(calls), tmp_path)  # another identity, another file
    assert len(calls) == 4 and len(list(tmp_path.glob("*.onnx"))) == 2

    monkeypatch.setattr(runtime, "EXPORT_FORMAT", runtime.EXPORT_FORMAT + 1)  # a new exporter: new key
    new = runtime.cached_graph("enc@1", "image", _fake_export(calls), tmp_path)
    assert len(calls) == 5 and new != path
    assert not list(tmp_path.glob("*.tmp"))


def test_a_failed_export_leaves_nothing_behind(tmp_path):
    def broken(dest: Path) -> None:
        dest.write_bytes(b"half a gra")
        raise RuntimeError("exporter crashed")

    with pytest.raises(RuntimeError):
        runtime.cached_graph("enc@1", "text", broken, tmp_path)
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob("*.tmp"))


def test_exports_starting_together_make_one_complete_graph(tmp_path):
    calls, paths = [], []
    export = _fake_export(calls, payload=b"x" * 100_000, delay=0.3)
    threads = [threading.Thread(target=lambda: paths.append(runtime.cached_graph("enc@1", "image", export, tmp_path)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(paths)) == 1
    assert runtime.graph_is_valid(paths[0], "enc@1", "image")


@pytest.mark.slow
def test_exports_in_two_processes_at_once_make_one_complete_graph(tmp_path):
    import subprocess

    script = ("import sys, time; from pathlib import Path; from duch_desktop.core.model import runtime\n"
              "def export(dest):\n    Path(sys.argv[2] + '/calls').open('a').write('1')\n"
              "    time.sleep(1); dest.write_bytes(b'y' * 1_000_000)\n"
              "print(runtime.cached_graph('enc@1', 'image', export, sys.argv[1]))\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "cache"), str(tmp_path)],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert len(outs) == 1 and (tmp_path / "calls").read_text() == "1"
    assert runtime.graph_is_valid(Path(outs.pop()), "enc@1", "image")


def test_tiny_image_model_on_onnx_matches_torch(tiny_resnet, tmp_path):  # noqa: F811
    onnx = encoders.onnx_image_encoder(str(tiny_resnet), cache_dir=tmp_path)
    torch_enc = encoders.load_image_encoder(str(tiny_resnet), device="cpu", runtime="torch")
    assert (onnx.identity, onnx.dim, onnx.input_size) == (torch_enc.identity, torch_enc.dim, torch_enc.input_size)
    imgs = np.random.default_rng(0).integers(0, 256, (3, onnx.input_size, onnx.input_size, 3), dtype=np.uint8)
    a, b = onnx.encode(imgs), torch_enc.encode(imgs)
    assert a.shape == b.shape == (3, torch_enc.dim) and a.dtype == np.float32
    assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()
    assert onnx.encode(imgs[:1]).shape == (1, onnx.dim)  # the batch axis is dynamic
    assert onnx.runtime == "onnx" and torch_enc.runtime == "torch"
    spinning = onnx._session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    assert spinning == "0" and not runtime.INTRA_OP_SPINNING  # idle threads sleep (see runtime.INTRA_OP_SPINNING)


def test_tiny_text_model_on_onnx_matches_torch_for_both_poolings(tiny_bert, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(runtime, "default_graph_dir", lambda: tmp_path)
    texts = ["a dense residential area near a highway", "planes", "many storage tanks . " * 30]
    for pooling in ("last1", "last4"):
        onnx = encoders.load_text_encoder(str(tiny_bert), pooling=pooling, runtime="onnx")
        torch_enc = encoders.load_text_encoder(str(tiny_bert), device="cpu", pooling=pooling, runtime="torch")
        assert onnx.identity == torch_enc.identity and onnx.dim == torch_enc.dim
        a, b = onnx.encode(texts), torch_enc.encode(texts)
        assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()
        assert onnx.token_count(texts[2]) == torch_enc.token_count(texts[2]) > onnx.max_tokens
        assert onnx.kept_text(texts[2]) == torch_enc.kept_text(texts[2])
    assert len(list(tmp_path.glob("*.onnx"))) == 1  # one graph serves both poolings


def test_onnx_missing_is_an_error_when_asked_for_and_a_one_line_fallback_under_auto(tiny_bert, monkeypatch, caplog):  # noqa: F811
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(UserError, match="onnxruntime cannot be loaded"):
        encoders.load_text_encoder(str(tiny_bert), runtime="onnx")
    monkeypatch.setattr(runtime, "choose", lambda *a, **k: "onnx")  # auto picking onnx for this encoder
    with caplog.at_level(logging.INFO, logger="duch_desktop"):
        enc = encoders.load_text_encoder(str(tiny_bert), device="cpu", runtime="auto")
    assert enc.runtime == "torch"
    notes = [r.getMessage() for r in caplog.records if r.name == "duch_desktop"]
    assert len(notes) == 1 and "using torch" in notes[0] and "\n" not in notes[0]


def test_a_graph_onnxruntime_rejects_is_exported_again(tiny_resnet, tmp_path):  # noqa: F811
    first = encoders.onnx_image_encoder(str(tiny_resnet), cache_dir=tmp_path)
    graph = next(tmp_path.glob("*.onnx"))
    graph.write_bytes(b"not a protobuf")
    sidecar = graph.with_suffix(".json")  # a sidecar that vouches for the junk: only onnxruntime can tell
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "sha256": file_sha256(graph)}))
    again = encoders.onnx_image_encoder(str(tiny_resnet), cache_dir=tmp_path)
    imgs = np.zeros((1, first.input_size, first.input_size, 3), np.uint8)
    np.testing.assert_allclose(again.encode(imgs), first.encode(imgs), rtol=1e-5, atol=1e-6)
    assert runtime.graph_is_valid(graph, first.identity, "image")


def test_a_shipped_graph_is_used_as_it_is_and_one_that_does_not_verify_is_passed_over_untouched(
        tiny_resnet, tmp_path, monkeypatch, caplog):  # noqa: F811
    from duch_desktop.core.model import onnx_encoders
    from tests.conftest import snapshot

    shipped, cache = tmp_path / "shipped", tmp_path / "cache"
    monkeypatch.setattr(runtime, "shipped_graph_dir", lambda: shipped)
    torch_enc = encoders.load_image_encoder(str(tiny_resnet), device="cpu", runtime="torch")
    graph = runtime.ship_graph(torch_enc.identity, "image", lambda d: onnx_encoders.export_image(torch_enc, d), shipped)
    export = onnx_encoders.export_image
    # The installed app: other exporter versions (or no exporter) than the build machine's.
    monkeypatch.setattr(runtime, "exporter_version", lambda: "torch.onnx-dynamo;torch=?;onnxscript=?;format=1")

    def no_export(*_):
        raise AssertionError("exported although a valid graph is shipped")

    monkeypatch.setattr(onnx_encoders, "export_image", no_export)
    before = snapshot(shipped)
    enc = encoders.onnx_image_encoder(str(tiny_resnet), cache_dir=cache)
    imgs = np.random.default_rng(1).integers(0, 256, (2, enc.input_size, enc.input_size, 3), dtype=np.uint8)
    expected = torch_enc.encode(imgs)
    assert np.abs(enc.encode(imgs) - expected).max() <= 1e-4 * np.abs(expected).max()
    assert not list(cache.glob("*.onnx")) and snapshot(shipped) == before

    monkeypatch.setattr(onnx_encoders, "export_image", export)
    damaged = bytearray(graph.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    graph.write_bytes(bytes(damaged))
    before = snapshot(shipped)
    with caplog.at_level(logging.WARNING, logger="duch_desktop"):
        enc = encoders.onnx_image_encoder(str(tiny_resnet), cache_dir=cache)
    assert np.abs(enc.encode(imgs) - expected).max() <= 1e-4 * np.abs(expected).max()
    assert [p.name for p in cache.glob("*.onnx")] == [runtime.graph_path(enc.identity, "image", cache).name]
    assert any("does not verify" in r.getMessage() for r in caplog.records)
    assert snapshot(shipped) == before

    # Junk its sidecar vouches for: only onnxruntime can tell, and the user cache takes over again.
    graph.write_bytes(b"not a protobuf")
    meta = json.loads(runtime.sidecar(graph).read_text())
    runtime.sidecar(graph).write_text(json.dumps({**meta, "sha256": file_sha256(graph)}))
    assert runtime.shipped_graph(enc.identity, "image") == graph
    before = snapshot(shipped)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="duch_desktop"):
        enc = encoders.onnx_image_encoder(str(tiny_resnet), cache_dir=cache)
    assert np.abs(enc.encode(imgs) - expected).max() <= 1e-4 * np.abs(expected).max()
    assert any("cannot load the shipped graph" in r.getMessage() for r in caplog.records)
    assert snapshot(shipped) == before


def test_shipped_graphs_are_keyed_by_identity_kind_and_format_not_by_the_exporter(tmp_path, monkeypatch):
    path = runtime.ship_graph("enc@1", "text", _fake_export([]), tmp_path)
    assert runtime.shipped_graph("enc@1", "text", tmp_path) == path
    monkeypatch.setattr(runtime, "exporter_version", lambda: "an exporter of other versions")
    assert runtime.shipped_graph("enc@1", "text", tmp_path) == path
    assert not runtime.graph_is_valid(path, "enc@1", "text")  # as a cache entry it would be stale
    assert runtime.shipped_graph("enc@2", "text", tmp_path) is None
    assert runtime.shipped_graph("enc@1", "image", tmp_path) is None
    monkeypatch.setattr(runtime, "EXPORT_FORMAT", runtime.EXPORT_FORMAT + 1)  # the wrappers changed
    assert runtime.shipped_graph("enc@1", "text", tmp_path) is None


def test_no_exporter_is_one_line_and_auto_falls_back_to_torch(tiny_resnet, tmp_path, monkeypatch, caplog):  # noqa: F811
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import fails as if not installed
    monkeypatch.setattr(runtime, "default_graph_dir", lambda: tmp_path)
    with pytest.raises(UserError, match="ONNX exporter is not installed"):
        encoders.load_image_encoder(str(tiny_resnet), runtime="onnx")
    # auto picking onnx for this encoder (the torch twin made for the export stays torch)
    monkeypatch.setattr(runtime, "choose", lambda name, *a, **k: "torch" if name == "torch" else "onnx")
    with caplog.at_level(logging.WARNING, logger="duch_desktop"):
        assert encoders.load_image_encoder(str(tiny_resnet), device="cpu", runtime="auto").runtime == "torch"
    assert any("ONNX exporter is not installed" in r.getMessage() for r in caplog.records)
    assert not list(tmp_path.glob("*.onnx"))


# --------------------------------------------------------------------------- real weights

def _ucm_sample():
    from duch_desktop.core.training.datasets import load_ucm

    ucm = load_ucm(UCM)
    picked = range(0, len(ucm.paths), 150)  # 14 tiles over all 21 classes, 70 captions
    return [ucm.paths[i] for i in picked], [c for i in picked for c in ucm.captions[i]]


def _rel_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.slow
@pytest.mark.skipif(not (UCM / "captions.json").is_file(), reason="UCM data not available")
def test_default_encoders_agree_across_runtimes_on_ucm_tiles_and_captions():
    """The tolerance the README documents: max|onnx - torch| / max|torch| <= 1e-4 (measured ~1e-6);
    and the shipped model's codes of these tiles and captions are the same on both runtimes."""
    from duch_desktop.core.imagery.reading import read_tile
    from duch_desktop.core.model.defaults import load_model

    paths, texts = _ucm_sample()
    pixels = np.stack([read_tile(p, size=encoders.IMAGE_SIZE)[0] for p in paths])
    img = {r: encoders.load_image_encoder(device="cpu", runtime=r) for r in ("onnx", "torch")}
    assert img["onnx"].runtime == "onnx" and img["onnx"].identity == img["torch"].identity
    fi = {r: e.encode(pixels) for r, e in img.items()}
    assert _rel_error(fi["onnx"], fi["torch"]) <= 1e-4
    model = load_model()
    np.testing.assert_array_equal(model.image_codes(fi["onnx"]), model.image_codes(fi["torch"]))
    for pooling in ("last1", "last4"):
        txt = {r: encoders.load_text_encoder(device="cpu", pooling=pooling, runtime=r) for r in ("onnx", "torch")}
        assert txt["onnx"].identity == txt["torch"].identity
        ft = {r: e.encode(texts) for r, e in txt.items()}
        assert _rel_error(ft["onnx"], ft["torch"]) <= 1e-4
        if pooling == encoders.pooling_from_identity(model.text_encoder):
            np.testing.assert_array_equal(model.text_codes(ft["onnx"]), model.text_codes(ft["torch"]))


def test_cli_runtime_flag_errors_and_info_names_the_runtime(archive, tile_folder, tmp_path, capsys, monkeypatch):
    from duch_desktop.cli import main
    from duch_desktop.core.archive.archive import Archive

    monkeypatch.delenv("DUCH_RUNTIME", raising=False)
    assert main(["search", "a lake", "--index-dir", str(archive.index_dir), "--runtime", "tensorrt"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["train", str(tmp_path), "--out", str(tmp_path / "m"), "--runtime", "onnx", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "CPU only" in err and len(err.strip().splitlines()) == 1
    assert main(["info", "--index-dir", str(archive.index_dir), "--runtime", "torch"]) == 0
    assert "runtime: n/a (a plug-in encoder)" in capsys.readouterr().out  # the tests' encoders run themselves

    # The default model's encoders: what loading them would run them on, without loading them.
    Archive.open(tmp_path / "default", create_root=tile_folder).close()

    def info(*extra: str) -> str:
        assert main(["info", "--index-dir", str(tmp_path / "default"), "--json", *extra]) == 0
        return json.loads(capsys.readouterr().out)["runtime"]

    assert info("--runtime", "torch").startswith("torch (")
    cpu = not runtime.cuda_available()
    assert info().startswith("onnx (onnxruntime" if cpu else "torch")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    assert "onnxruntime cannot be loaded" in info("--runtime", "onnx")
    assert info().startswith("torch (") and (info().endswith("onnxruntime unavailable") or not cpu)


def test_encoders_describe_what_they_run_on_once_loaded_and_tell_watchers(monkeypatch):
    from types import SimpleNamespace

    from duch_desktop.core.model import defaults

    class Fallen:  # an encoder auto meant for onnx that loaded on torch
        runtime, device, dim, identity = "torch", "cpu", 4, "test-fallen"

    monkeypatch.setattr(runtime, "cuda_available", lambda: False)
    monkeypatch.setattr(defaults, "_ENCODER_FACTORIES", {"test-fallen": lambda _: Fallen()})
    model = SimpleNamespace(image_encoder="test-fallen", text_encoder=encoders.default_text_identity(), image_dim=4,
                            text_dim=384, meta={})
    encs, heard = defaults.Encoders(model, runtime="auto"), []
    encs.watch(lambda: heard.append(1))
    encs.watch(lambda: 1 / 0)  # a watcher gone wrong does not fail a load
    onnx = runtime.describe("auto")
    assert onnx.startswith("onnx (onnxruntime")
    assert encs.describe_runtime() == f"{defaults.PLUG_IN} for images; {onnx} for text"
    assert encs.image.runtime == "torch" and heard == [1]
    assert encs.describe_runtime() == f"{runtime.describe('torch')} for images; {onnx} for text"
    encs.use_runtime("torch")  # drops what was loaded: back to what loading would give
    assert heard == [1, 1]
    assert encs.describe_runtime() == f"{defaults.PLUG_IN} for images; {runtime.describe('torch')} for text"


def test_changing_the_runtime_does_not_wait_for_a_load_and_the_stale_encoder_is_not_kept(monkeypatch):
    """A window changes the runtime while an encoder loads (a first ONNX export takes a minute): the
    change returns at once, the load in flight still serves its caller, and the next use loads on
    the new runtime."""
    import threading
    from types import SimpleNamespace

    from duch_desktop.core.model import defaults

    started, release, runtimes = threading.Event(), threading.Event(), []

    def slow_load(spec, rt):
        runtimes.append(rt)
        if len(runtimes) == 1:
            started.set()
            assert release.wait(10)
        return SimpleNamespace(dim=4, identity=f"loaded on {rt}")

    monkeypatch.setattr(defaults, "load_text_encoder_for", slow_load)
    model = SimpleNamespace(image_encoder="i", text_encoder="t", image_dim=4, text_dim=4, meta={})
    encs, got = defaults.Encoders(model, runtime="onnx"), []
    loader = threading.Thread(target=lambda: got.append(encs.text))
    loader.start()
    assert started.wait(10)
    asked = []
    window = threading.Thread(target=lambda: (encs.use_runtime("torch"), asked.append(encs.loaded_image)))
    window.start()
    window.join(2)
    assert not window.is_alive(), "changing the runtime (or asking what is loaded) waited for the load in flight"
    assert asked == [None]
    release.set()
    loader.join(10)
    assert got[0].identity == "loaded on onnx"
    assert encs.text.identity == "loaded on torch" and runtimes == ["onnx", "torch"]
