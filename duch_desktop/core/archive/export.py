"""Search results written as CSV or GeoJSON: the one export of ``duch search --csv/--geojson`` and
of the desktop app's File > Export (same columns, same footprints).

A result is a :class:`records.Hit` (anything with ``tile_id, rel, path, distance, footprint``
and optionally ``window``). A footprint has one shape: the ring of ``(lon, lat)`` pairs (WGS84)
the archive stores, closed (first point = last), or None when the tile is not georeferenced.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence, TextIO

from ..files import display_path, write_text_atomic

CSV_FIELDS = ["rank", "distance", "tile_id", "rel", "path", "window", "lon_min", "lat_min", "lon_max", "lat_max",
              "footprint_wkt"]


def footprint_ring(footprint: Sequence | None) -> list[tuple[float, float]] | None:
    """The footprint as closed ``(lon, lat)`` float pairs, or None if unknown (or not a ring of pairs)."""
    if not footprint:
        return None
    try:
        ring = [(float(p[0]), float(p[1])) for p in footprint]
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    if ring[0] != ring[-1]:
        ring.append(ring[0])
    return ring


def footprint_bounds(footprint: Sequence | None) -> tuple[float, float, float, float] | None:
    """``(lon_min, lat_min, lon_max, lat_max)`` of a footprint, or None."""
    ring = footprint_ring(footprint)
    if not ring:
        return None
    lons, lats = [p[0] for p in ring], [p[1] for p in ring]
    return min(lons), min(lats), max(lons), max(lats)


def footprint_wkt(footprint: Sequence | None) -> str:
    """``POLYGON ((lon lat, ...))`` of a footprint ("" when unknown)."""
    ring = footprint_ring(footprint)
    if not ring:
        return ""
    return "POLYGON ((" + ", ".join(f"{x:.7f} {y:.7f}" for x, y in ring) + "))"


def window_of(hit: Any) -> list[int] | None:
    """A chip's pixel window ``[col_off, row_off, width, height]`` (None for a whole file)."""
    w = getattr(hit, "window", None)
    return [int(v) for v in w] if w is not None else None


def write_csv(hits: Iterable[Any], out: TextIO) -> None:
    """One row per hit, best first; footprint as bounds and WKT (empty when unknown)."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for rank, h in enumerate(hits, 1):
        b = footprint_bounds(h.footprint)
        bounds = [f"{v:.7f}" for v in b] if b else ["", "", "", ""]
        win = window_of(h)
        w.writerow([rank, int(h.distance), int(h.tile_id), str(h.rel), display_path(h.path),
                    " ".join(map(str, win)) if win else "", *bounds, footprint_wkt(h.footprint)])


def to_geojson(hits: Iterable[Any], query: str | None = None) -> dict:
    """A FeatureCollection: one Polygon feature per hit (null geometry when not georeferenced);
    a chip's polygon is its window's footprint, not its scene's."""
    features = []
    for rank, h in enumerate(hits, 1):
        ring = footprint_ring(h.footprint)
        features.append({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in ring]]} if ring else None,
            "properties": {"rank": rank, "distance": int(h.distance), "tile_id": int(h.tile_id),
                           "rel": str(h.rel), "path": display_path(h.path), "window": window_of(h)},
        })
    fc: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if query is not None:
        fc["query"] = query
    return fc


def csv_text(hits: Iterable[Any]) -> str:
    buf = io.StringIO()
    write_csv(hits, buf)
    return buf.getvalue()


def geojson_text(hits: Iterable[Any], query: str | None = None) -> str:
    return json.dumps(to_geojson(hits, query), indent=1, ensure_ascii=False) + "\n"


def export_csv(hits: Iterable[Any], path: str | os.PathLike, query: str | None = None) -> Path:
    """:func:`csv_text` into the file ``path`` (atomically; its folder is made if needed). ``query`` is
    not written: a column would repeat it on every row (the GeoJSON export records it)."""
    return _write(path, csv_text(hits))


def export_geojson(hits: Iterable[Any], path: str | os.PathLike, query: str | None = None) -> Path:
    """:func:`geojson_text` into the file ``path`` (atomically; its folder is made if needed)."""
    return _write(path, geojson_text(hits, query))


def _write(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text, newline="")
    return path
