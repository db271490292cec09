"""File > Export and the footprint text of the detail pane: the export itself is the core's
(:mod:`duch_desktop.core.archive.export`, shared with ``duch search --csv/--geojson``)."""
from __future__ import annotations

from typing import Sequence

from ..core.archive.export import (CSV_FIELDS, export_csv, export_geojson, footprint_bounds, footprint_ring,
                                   footprint_wkt, to_geojson, window_of)

__all__ = ["CSV_FIELDS", "export_csv", "export_geojson", "footprint_bounds", "footprint_ring", "footprint_wkt",
           "to_geojson", "window_of", "footprint_text"]


def footprint_text(footprint: Sequence | None) -> str:
    """Human-readable footprint: 'lon 12.3400…12.3500, lat 45.6700…45.6800' or a plain note."""
    b = footprint_bounds(footprint)
    if b is None:
        return "not georeferenced"
    return f"lon {b[0]:.5f} … {b[2]:.5f}, lat {b[1]:.5f} … {b[3]:.5f}"
