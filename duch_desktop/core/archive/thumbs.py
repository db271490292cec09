"""The thumbnail cache of an index directory (``thumbs/``): tiles' JPEGs and whole-scene previews.

The common size sits flat in ``thumbs/<id>.jpg`` (the documented place), other sizes in
``thumbs/<size>/``, scene previews in ``thumbs/scenes/<size>/``. Made on first request, from any
thread; a tile that changes or vanishes has its thumbnails dropped (row ids are never reused).
"""
from __future__ import annotations

from pathlib import Path

from ..files import unlink_quietly
from ..imagery import reading as imagery
from ..imagery.chips import SCENE_PREVIEWS, scene_preview


class Thumbnails:
    """The ``thumbs/`` folder of one index."""

    SIZE = 256

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, tile_id: int, size: int) -> Path:
        if size == self.SIZE:
            return self.folder / f"{int(tile_id)}.jpg"
        return self.folder / str(int(size)) / f"{int(tile_id)}.jpg"

    def make(self, source: Path, dest: Path, size: int, opts: dict, window=None) -> None:
        """Write the thumbnail of ``source`` (a chip: its ``window``) read with the archive's ``opts``.
        Raises ImageryError or ValueError."""
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # thumbs/ is a plain file, the disk is read-only...
            raise imagery.ImageryError(f"cannot keep thumbnails in {dest.parent}: {e.strerror or e}") from e
        try:
            imagery.make_thumbnail(source, dest, size, bands=opts["bands"], window=window, stretch=opts["stretch"])
        except ValueError:  # the archive's band choice does not fit this particular file
            imagery.make_thumbnail(source, dest, size, window=window, stretch=opts["stretch"])

    def scene(self, source: Path, rel_bytes: bytes, version, size: int, opts: dict) -> tuple[Path, tuple[int, int]]:
        """The cached preview of a whole scene and its pixel size (see :func:`chips.scene_preview`)."""
        return scene_preview(self.folder, source, rel_bytes, version, size, opts["bands"], opts["stretch"])

    def drop(self, ids) -> None:
        """Forget cached thumbnails of tiles that changed or vanished."""
        if not len(ids) or not self.folder.is_dir():
            return
        sizes = [p for p in self.folder.iterdir() if p.is_dir() and p.name != SCENE_PREVIEWS]
        for i in ids:
            for folder in [self.folder, *sizes]:
                unlink_quietly(folder / f"{int(i)}.jpg")
