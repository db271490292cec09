"""Captioned tile collections (UCM-captions, RSICD, ...) and a user's own captions file.

``load_collection`` reads a folder with a Karpathy-style ``captions.json`` beside ``images/``
(``shared/data/ucm``, ``shared/data/rsicd``; RSITMD and Sydney-captions ship the same format).
UCM's numeric entries ``N.tif`` map to ``images/<class>/<class>{(N-1) % 100:02d}.jpg``.
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
    splits: np.ndarray | None = None  # the collection's own split name per tile ("train", "val", ...)

    def split_names(self) -> np.ndarray:
        return self.splits if self.splits is not None else np.full(len(self.paths), "")

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, idx) -> "CaptionedImages":
        idx = np.asarray(idx, dtype=np.int64)
        return CaptionedImages([self.paths[i] for i in idx], self.labels[idx], self.class_names,
                               [self.captions[i] for i in idx], None if self.splits is None else self.splits[idx])


def clean_caption(text: str) -> str:
    """Strip surrounding whitespace and the space UCM puts before the final period ("a b ." -> "a b.")."""
    return re.sub(r"\s+([.,;!?])", r"\1", " ".join(str(text).split()))


def distinct_captions(texts) -> list[str]:
    """``texts`` cleaned (:func:`clean_caption`), without empty ones and repeats, in first-seen order:
    a caption bank as ``duch train`` writes it and an index reads it back."""
    return list(dict.fromkeys(c for c in map(clean_caption, texts) if c))


def is_ucm_folder(root: Path) -> bool:
    """A captioned collection: ``captions.json`` (Karpathy-style) beside an ``images/`` folder."""
    return (Path(root) / UCM_CAPTIONS).is_file() and (Path(root) / "images").is_dir()


is_collection = is_ucm_folder


def ucm_image_path(root: Path, filename: str, classes: dict[str, str]) -> Path:
    """``"N.tif"`` -> ``root/images/<class>/<class>NN.jpg`` (README mapping)."""
    n = int(Path(filename).stem)
    c, k = divmod(n - 1, UCM_PER_CLASS)
    name = classes[str(c)]
    return Path(root) / "images" / name / f"{name}{k:02d}.jpg"


def _class_names(data: dict) -> list[str]:
    """``classes`` as a list (UCM: {"0": name, ...}; RSICD: [name, ...]), else the entries' classnames."""
    classes = data.get("classes")
    if isinstance(classes, dict):
        return [str(classes[k]) for k in sorted(classes, key=int)]
    if isinstance(classes, list):
        return [str(c) for c in classes]
    return sorted({str(e["classname"]) for e in data["images"]})


def _numbered(entries: list[dict]) -> bool:
    # UCM names its tiles "1.tif" .. "2100.tif", numbered class by class (see load_collection).
    return all(Path(str(e["filename"])).stem.isdigit() and "/" not in str(e["filename"]) for e in entries)


def _entry_path(root: Path, e: dict, class_names: list[str], numbered: bool) -> Path:
    name = str(e["filename"])
    direct = root / "images" / name
    if direct.is_file() or not numbered:
        return direct
    return ucm_image_path(root, name, {str(i): c for i, c in enumerate(class_names)})


def load_collection(root: Path) -> CaptionedImages:
    """Read a captioned collection: ``root/captions.json`` (Karpathy-style) and ``root/images/``.

    Each entry's ``filename`` is a path under ``images/`` (RSICD: ``"airport/airport_1.jpg"``),
    or, where no such file exists and every name is a number (UCM's ``"N.tif"``), tile ``N`` of
    ``N = class * 100 + k + 1`` at ``images/<class>/<class>kk.jpg``. Entries come in number order
    (UCM) or ``imgid`` order; ``labels`` index the ``classname`` of each entry; ``splits`` hold the
    collection's own ``split`` field ("" where absent).
    """
    root = Path(root)
    path = root / UCM_CAPTIONS
    if not path.is_file():
        raise UserError(f"{root} is not a captioned collection: {UCM_CAPTIONS} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = list(data["images"])
        class_names = _class_names(data)
        numbered = _numbered(entries)
        key = (lambda e: int(Path(str(e["filename"])).stem)) if numbered else (lambda e: int(e.get("imgid", 0)))
        entries.sort(key=key)
        index = {c: i for i, c in enumerate(class_names)}
        labels = [index[str(e["classname"])] if "classname" in e else int(e["classcode"]) for e in entries]
        captions = [[clean_caption(s["raw"] if isinstance(s, dict) else s) for s in e["sentences"]] for e in entries]
        paths = [_entry_path(root, e, class_names, numbered) for e in entries]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{path} is not a Karpathy-style captions file ({e!r})") from e
    missing = next((p for p in paths if not p.is_file()), None)
    if missing is not None:
        raise UserError(f"a tile named in {path} is missing: {missing}")
    splits = np.asarray([str(e.get("split", "")) for e in entries])
    return CaptionedImages(paths, np.asarray(labels, dtype=np.int64), class_names, captions, splits)


def load_ucm(root: Path) -> CaptionedImages:
    """UCM: 2100 tiles in file-number order, 5 captions each (one case of :func:`load_collection`)."""
    return load_collection(root)


def merge_collections(parts: list[CaptionedImages]) -> CaptionedImages:
    """One collection of several: tiles in order; classes of the same name are one class."""
    names = list(dict.fromkeys(c for p in parts for c in p.class_names))
    index = {c: i for i, c in enumerate(names)}
    labels = np.concatenate([[index[p.class_names[int(l)]] for l in p.labels] for p in parts]).astype(np.int64)
    return CaptionedImages([x for p in parts for x in p.paths], labels, names,
                           [c for p in parts for c in p.captions], np.concatenate([p.split_names() for p in parts]))


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
