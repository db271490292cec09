"""Export search results to CSV or GeoJSON. Qt-free on purpose (it could move to the core).

A hit is anything with ``tile_id, rel, path, distance, footprint``; a footprint may be
``None``, a GeoJSON geometry dict, a ring of ``(lon, lat)`` pairs, a list of rings, or a
``(west, south, east, north)`` box. Coordinates are WGS84 longitude/latitude.
"""
from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

CSV_FIELDS = ["rank", "distance", "tile_id", "rel", "path", "window", "lon_min", "lat_min", "lon_max", "lat_max",
              "footprint_wkt"]


def show_path(path: Any) -> str:
    """A path as printable text: bytes that are not UTF-8 appear as ``\\xNN`` (never an encode error)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def window_of(hit: Any) -> list[int] | None:
    """A chip's pixel window ``[col_off, row_off, width, height]`` (None for a whole file)."""
    w = getattr(hit, "window", None)
    return [int(v) for v in w] if w is not None else None


def _pairs(seq: Any) -> list[tuple[float, float]] | None:
    try:
        pts = [(float(p[0]), float(p[1])) for p in seq]
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    return pts or None


def footprint_ring(footprint: Any) -> list[tuple[float, float]] | None:
    """The outer ring of a footprint as closed ``(lon, lat)`` pairs, or None if unknown."""
    if footprint is None:
        return None
    if hasattr(footprint, "__geo_interface__"):
        footprint = footprint.__geo_interface__
    if isinstance(footprint, dict):
        coords = footprint.get("coordinates")
        kind = footprint.get("type")
        if kind == "Polygon" and coords:
            ring = _pairs(coords[0])
        elif kind == "MultiPolygon" and coords:
            ring = _pairs(coords[0][0])
        elif "geometry" in footprint:
            return footprint_ring(footprint["geometry"])
        else:
            return None
    else:
        seq = list(footprint)
        if not seq:
            return None
        if len(seq) == 4 and all(isinstance(v, (int, float)) for v in seq):
            w, s, e, n = (float(v) for v in seq)
            ring = [(w, s), (e, s), (e, n), (w, n)]
        elif seq and isinstance(seq[0], (list, tuple)) and seq[0] and isinstance(seq[0][0], (list, tuple)):
            ring = _pairs(seq[0])
        else:
            ring = _pairs(seq)
    if not ring:
        return None
    if ring[0] != ring[-1]:
        ring.append(ring[0])
    return ring


def footprint_bounds(footprint: Any) -> tuple[float, float, float, float] | None:
    """``(lon_min, lat_min, lon_max, lat_max)`` of a footprint, or None."""
    ring = footprint_ring(footprint)
    if not ring:
        return None
    lons, lats = [p[0] for p in ring], [p[1] for p in ring]
    return min(lons), min(lats), max(lons), max(lats)


def footprint_text(footprint: Any) -> str:
    """Human-readable footprint: 'lon 12.3400…12.3500, lat 45.6700…45.6800' or a plain note."""
    b = footprint_bounds(footprint)
    if b is None:
        return "not georeferenced"
    return f"lon {b[0]:.5f} … {b[2]:.5f}, lat {b[1]:.5f} … {b[3]:.5f}"


def footprint_wkt(footprint: Any) -> str:
    ring = footprint_ring(footprint)
    if not ring:
        return ""
    return "POLYGON ((" + ", ".join(f"{x:.7f} {y:.7f}" for x, y in ring) + "))"


def _atomic_write(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def export_csv(hits: Iterable[Any], path: str | os.PathLike, query: str | None = None) -> Path:
    """One row per hit, best first; footprint as bounds and WKT (empty when unknown)."""
    hits = list(hits)

    def write(f) -> None:
        w = csv.writer(f)
        w.writerow(CSV_FIELDS)
        for rank, h in enumerate(hits, 1):
            b = footprint_bounds(h.footprint)
            bounds = [f"{v:.7f}" for v in b] if b else ["", "", "", ""]
            win = window_of(h)
            w.writerow([rank, int(h.distance), int(h.tile_id), str(h.rel), show_path(h.path),
                        " ".join(map(str, win)) if win else "", *bounds, footprint_wkt(h.footprint)])

    return _atomic_write(Path(path), write)


def to_geojson(hits: Sequence[Any], query: str | None = None) -> dict:
    """A FeatureCollection: one Polygon feature per hit (null geometry when not georeferenced)."""
    features = []
    for rank, h in enumerate(hits, 1):
        ring = footprint_ring(h.footprint)
        geometry = {"type": "Polygon", "coordinates": [[list(p) for p in ring]]} if ring else None
        features.append({
            "type": "Feature",
            "geometry": geometry,
            "properties": {"rank": rank, "distance": int(h.distance), "tile_id": int(h.tile_id),
                           "rel": str(h.rel), "path": show_path(h.path)},
        })
        if window_of(h) is not None:
            features[-1]["properties"]["window"] = window_of(h)
    fc: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if query is not None:
        fc["query"] = query
    return fc


def export_geojson(hits: Iterable[Any], path: str | os.PathLike, query: str | None = None) -> Path:
    data = to_geojson(list(hits), query)
    return _atomic_write(Path(path), lambda f: json.dump(data, f, indent=1, ensure_ascii=False))
