"""Generalisation check on a labelled folder never trained on: metrics, tie handling, the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from duch_desktop import cli_research
from duch_desktop.cli import main
from duch_desktop.core.research.external import (GeneralisationSet, load_labelled_folder, load_queries,
                                                 precision_hits, score_generalisation)
from duch_desktop.core.research.report import kept_section, with_section
from duch_desktop.core.model.bundle import pack_codes
from duch_desktop.core.jobs import UserError
from tests.conftest import CLASSES, TinyImageEncoder, TinyTextEncoder, make_tiny_model


def labelled_folder(root: Path, per_class: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for name, (rgb, _) in CLASSES.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            px = np.clip(np.array(rgb) + rng.normal(0, 12, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(root / name / f"{name}_{i}.png")
    (root / "forest" / "notes.txt").write_text("not an image")
    return root


def queries_file(path: Path, queries: dict) -> Path:
    path.write_text(json.dumps({"_about": "comment key, ignored", **queries}))
    return path


QUERIES = {"field": ["brown farmland", "ploughed land"], "water": ["a blue lake"]}


def test_folder_and_queries_are_read_and_checked(tmp_path):
    data = load_labelled_folder(labelled_folder(tmp_path / "arch"))
    assert data.class_names == ["field", "forest", "water"] and len(data.paths) == 18
    assert np.bincount(data.labels).tolist() == [6, 6, 6]
    assert load_queries(queries_file(tmp_path / "q.json", QUERIES), data.class_names) == QUERIES
    with pytest.raises(UserError, match="no folder in the archive: desert"):
        load_queries(queries_file(tmp_path / "q2.json", {"desert": ["sand"]}), data.class_names)
    with pytest.raises(UserError, match="non-empty list"):
        load_queries(queries_file(tmp_path / "q3.json", {"field": []}), data.class_names)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_queries(tmp_path / "bad.json", data.class_names)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(UserError, match="no class sub-folders"):
        load_labelled_folder(tmp_path / "empty_dir")
    with pytest.raises(UserError, match="folder not found"):
        load_labelled_folder(tmp_path / "missing")


def test_precision_and_hits_from_a_ranking():
    rel = np.array([[1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1],
                    [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]], bool)
    p, hit = precision_hits(rel, k=10, hit_k=5)
    assert p.tolist() == [0.3, 0.5] and hit.tolist() == [True, False]


def _set(tmp_path, per_class=6) -> GeneralisationSet:
    data = load_labelled_folder(labelled_folder(tmp_path / "arch", per_class))
    img = TinyImageEncoder().encode(np.stack([np.asarray(Image.open(p).resize((16, 16))) for p in data.paths]))
    texts = [q for c in QUERIES for q in QUERIES[c]]
    return GeneralisationSet(data, QUERIES, img, TinyTextEncoder().encode(texts), "arch", "q.json")


def test_hamming_ties_are_not_broken_in_favour_of_the_first_class(tmp_path):
    # every tile gets the same code: a fair score is the class share (1/3), whereas ranking the
    # class-ordered folder with a stable sort would give the "field" queries P@10 = 1
    gs = _set(tmp_path, per_class=10)
    model = make_tiny_model()
    with torch.no_grad():
        last = model.image_head.net[3]  # Linear(hidden, bits), before the tanh
        last.weight.zero_()
        last.bias.copy_(torch.linspace(-1, 1, last.bias.numel()))
    assert len({bytes(c) for c in model.image_codes(gs.image_feats)}) == 1
    r = score_generalisation(model, gs, seed=3)
    field = [q["p_at_10"] for q in r.per_query if q["class"] == "field"]
    assert max(field) < 0.8 and abs(r.random_p_at_10 - 1 / 3) < 1e-9
    assert r.image_p_at_10 < 0.6  # image->image with identical codes is near the class share too


def test_report_fields_match_a_direct_computation(tmp_path):
    gs = _set(tmp_path)
    model = make_tiny_model()
    r = score_generalisation(model, gs, seed=0)
    perm = np.random.default_rng(0).permutation(len(gs.data.paths))
    codes, labels = model.image_codes(gs.image_feats[perm]), gs.data.labels[perm]
    q = model.text_codes(gs.query_feats)
    d = np.bitwise_count(q[:, None, :] ^ codes[None]).sum(-1)
    top = np.argsort(d, axis=1, kind="stable")[:, :10]
    want = (labels[top] == gs.query_labels[:, None]).mean(1)
    assert [x["p_at_10"] for x in r.per_query] == pytest.approx(want.tolist())
    assert r.mean_p_at_10 == pytest.approx(want.mean())
    assert r.per_class["field"]["n_queries"] == 2 and "forest" not in r.per_class
    assert r.n_tiles == 18 and r.n_queries == 3 and 0 <= r.raw_image_p_at_10 <= 1


def test_results_section_is_replaced_not_duplicated(tmp_path):
    text = with_section("# UCM results\n\n| a | b |\n", "## Generalisation\nfirst\n")
    text = with_section(text, "## Generalisation\nsecond\n")
    assert text.count("## Generalisation") == 1 and "second" in text and text.startswith("# UCM results")
    (tmp_path / "results.md").write_text(text)
    assert "second" in kept_section(tmp_path / "results.md") and kept_section(tmp_path / "none.md") == ""


def test_cli_evaluate_external(tmp_path, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setattr(cli_research, "_encoders", lambda args, model=None: (TinyImageEncoder(), TinyTextEncoder()))
    arch = labelled_folder(tmp_path / "arch")
    q = queries_file(tmp_path / "q.json", QUERIES)
    out = tmp_path / "docs"
    out.mkdir()
    (out / "results.md").write_text("# DUCH on UCM-captions\n\nkept table\n")
    argv = ["evaluate", "--external", arch, "--queries", q, "--model", tiny_model_dir, "--out", out,
            "--cache-dir", tmp_path / "cache", "--workers", 0]
    assert main([str(a) for a in argv]) == 0
    printed = capsys.readouterr().out
    assert "Mean P@10 (text → image)" in printed and "| field | 2 |" in printed
    assert main([str(a) for a in argv]) == 0
    md = (out / "results.md").read_text()
    assert md.startswith("# DUCH on UCM-captions") and "kept table" in md and md.count("Mean P@10") == 1
    saved = json.loads((out / "external.json").read_text())
    assert saved["n_tiles"] == 18 and len(saved["per_query"]) == 3
    # a query for a class the archive lacks: one plain line, exit 2, nothing loaded
    bad = queries_file(tmp_path / "bad.json", {"desert": ["sand dunes"]})
    argv[argv.index(q)] = bad
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("duch: queries for classes with no folder") and err.count("\n") == 1


UCM = Path(__file__).resolve().parents[3] / "shared" / "data" / "ucm"
QUERY_SETS = [Path(__file__).resolve().parents[1] / "data" / n
              for n in ("external_queries.json", "external_queries_b.json")]


def _phrase(text: str) -> str:
    return " ".join(text.lower().replace(".", " ").split())


@pytest.mark.skipif(not (UCM / "captions.json").is_file(), reason="needs ../shared/data/ucm")
def test_the_two_query_sets_are_distinct_and_copy_no_ucm_caption():
    from duch_desktop.core.training.datasets import load_ucm

    ucm = load_ucm(UCM)
    captions = {_phrase(c) for cs in ucm.captions for c in cs}
    sets = [load_queries(p, ucm.class_names) for p in QUERY_SETS]
    assert sets[0].keys() == sets[1].keys() and len(sets[0]) == 12
    phrases = [{_phrase(q) for qs in s.values() for q in qs} for s in sets]
    assert all(len(p) == 48 for p in phrases)  # 4 per class, no repeats
    assert not phrases[0] & phrases[1]
    assert not (phrases[0] | phrases[1]) & captions
