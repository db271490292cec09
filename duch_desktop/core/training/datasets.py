"""Captioned tile collections: the UCM-captions benchmark and a user's own captions file.

``load_ucm`` reads ``captions.json`` of a UCM folder (see ``shared/data/ucm/README.md``) and
maps each numeric entry ``N.tif`` to ``images/<class>/<class>{(N-1) % 100:02d}.jpg``.
``load_captions_file`` reads the captions a user supplies for a folder of tiles.
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..jobs import UserError

UCM_CAPTIONS = "captions.json"
UCM_PER_CLASS = 100


@dataclass
class CaptionedImages:
    """Tiles with their captions; ``labels`` index ``class_names`` (evaluation only, never training)."""

    paths: list[Path]
    labels: np.ndarray
    class_names: list[str]
    captions: list[list[str]]

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, idx) -> "CaptionedImages":
        idx = np.asarray(idx, dtype=np.int64)
        return CaptionedImages([self.paths[i] for i in idx], self.labels[idx], self.class_names,
                               [self.captions[i] for i in idx])


def clean_caption(text: str) -> str:
    """Strip surrounding whitespace and the space UCM puts before the final period ("a b ." -> "a b.")."""
    return re.sub(r"\s+([.,;!?])", r"\1", " ".join(str(text).split()))


def is_ucm_folder(root: Path) -> bool:
    return (Path(root) / UCM_CAPTIONS).is_file() and (Path(root) / "images").is_dir()


def ucm_image_path(root: Path, filename: str, classes: dict[str, str]) -> Path:
    """``"N.tif"`` -> ``root/images/<class>/<class>NN.jpg`` (README mapping)."""
    n = int(Path(filename).stem)
    c, k = divmod(n - 1, UCM_PER_CLASS)
    name = classes[str(c)]
    return Path(root) / "images" / name / f"{name}{k:02d}.jpg"


def load_ucm(root: Path) -> CaptionedImages:
    """Read a UCM folder: 2100 tiles in ``captions.json`` order (imgid order), 5 captions each."""
    root = Path(root)
    path = root / UCM_CAPTIONS
    if not path.is_file():
        raise UserError(f"{root} is not a UCM folder: {UCM_CAPTIONS} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        classes = {str(k): v for k, v in data["classes"].items()}
        entries = sorted(data["images"], key=lambda e: int(Path(e["filename"]).stem))
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not a UCM captions file ({e})") from e
    class_names = [classes[str(i)] for i in range(len(classes))]
    paths, labels, captions = [], [], []
    for e in entries:
        p = ucm_image_path(root, e["filename"], classes)
        if not p.is_file():
            raise UserError(f"UCM tile missing: {p}")
        paths.append(p)
        labels.append((int(Path(e["filename"]).stem) - 1) // UCM_PER_CLASS)
        captions.append([clean_caption(s["raw"]) for s in e["sentences"]])
    return CaptionedImages(paths, np.asarray(labels, dtype=np.int64), class_names, captions)


def load_captions_file(path: Path) -> dict[str, list[str]]:
    """A user's captions: file name (as written in the file) -> its captions, in file order.

    Accepted: CSV with a header ``file,caption`` (one row per caption); JSON
    ``{"file": ["caption", ...]}``; or Karpathy-style JSON (``{"images": [{"filename", "sentences":
    [{"raw"}]}]}``). Raises :class:`UserError` with one plain sentence for anything else.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"captions file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read captions file {path} ({e})") from e
    out: dict[str, list[str]] = {}
    if path.suffix.lower() == ".csv":
        rows = csv.DictReader(text.splitlines())
        if not rows.fieldnames or not {"file", "caption"} <= {f.strip().lower() for f in rows.fieldnames}:
            raise UserError(f"{path}: a captions CSV needs the header 'file,caption'")
        keys = {f.strip().lower(): f for f in rows.fieldnames}
        for line, row in enumerate(rows, start=2):
            f, c = (row.get(keys["file"]) or "").strip(), (row.get(keys["caption"]) or "").strip()
            if not f or not c:
                raise UserError(f"{path}, line {line}: both 'file' and 'caption' must be filled")
            out.setdefault(f, []).append(clean_caption(c))
    else:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise UserError(f"{path} is neither a CSV (file,caption) nor valid JSON ({e})") from e
        if isinstance(data, dict) and isinstance(data.get("images"), list):
            for e in data["images"]:
                try:
                    caps = [clean_caption(s["raw"] if isinstance(s, dict) else s) for s in e["sentences"]]
                    name = str(e["filename"])
                except (KeyError, TypeError) as err:
                    raise UserError(f"{path}: Karpathy-style entries need 'filename' and 'sentences' ({err})") from err
                out.setdefault(name, []).extend(c for c in caps if c)
        elif isinstance(data, dict) and all(isinstance(v, (list, str)) for v in data.values()):
            for name, caps in data.items():
                caps = [caps] if isinstance(caps, str) else caps
                if not all(isinstance(c, str) for c in caps):
                    raise UserError(f"{path}: captions of {name!r} must be strings")
                out[str(name)] = [clean_caption(c) for c in caps if c.strip()]
        else:
            raise UserError(f"{path}: expected {{\"file\": [\"caption\", ...]}} or Karpathy-style JSON")
    out = {k: v for k, v in out.items() if v}
    if not out:
        raise UserError(f"{path} holds no captions")
    return out


def match_captions(folder: Path, captions: dict[str, list[str]], files: list[Path]) -> tuple[list[Path], list[list[str]]]:
    """Pair caption entries with the tile ``files`` found under ``folder``.

    A key matches a path relative to ``folder`` (``sub/a.tif``), else a unique file name, else a
    unique stem (so ``"12.tif"`` captions can serve ``12.jpg``). Tiles without captions are left
    out; returns the matched paths (sorted) and their captions.
    """
    folder = Path(folder)
    by_rel: dict[str, Path] = {}
    by_name: dict[str, list[Path]] = {}
    by_stem: dict[str, list[Path]] = {}
    for p in files:
        by_rel[Path(p).relative_to(folder).as_posix()] = Path(p)
        by_name.setdefault(Path(p).name, []).append(Path(p))
        by_stem.setdefault(Path(p).stem, []).append(Path(p))
    found: dict[Path, list[str]] = {}
    missing = []
    for key, c in captions.items():
        k = key.replace("\\", "/").removeprefix("./")
        hit = by_rel.get(k)
        if hit is None and len(by_name.get(Path(k).name, [])) == 1:
            hit = by_name[Path(k).name][0]
        if hit is None and len(by_stem.get(Path(k).stem, [])) == 1:
            hit = by_stem[Path(k).stem][0]
        if hit is None:
            missing.append(key)
            continue
        found.setdefault(hit, []).extend(c)
    if not found:
        example = f" (e.g. {missing[0]!r})" if missing else ""
        raise UserError(f"no caption in the captions file names a tile under {folder}{example}")
    paths = sorted(found)
    return paths, [found[p] for p in paths]
