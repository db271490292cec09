"""Build resources/demo/ from the UC Merced tiles (3 per class), 3 RSICD val tiles of each of ten
scene types UCM does not have, and one georeferenced 4-band uint16 GeoTIFF, so a first run shows
plain photos, scene types beyond UCM's 21 and the geo path.

Usage: python scripts/make_demo.py [--ucm ../shared/data/ucm] [--rsicd ../shared/data/rsicd] [--out resources/demo]
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

PICK = (95, 96, 97)  # fixed tiles per class, so the demo is reproducible
# RSICD (AID) types that are not UCM classes; their first three val tiles in captions.json order.
RSICD_TYPES = ("stadium", "bridge", "church", "desert", "pond", "port", "viaduct", "playground", "mountain",
               "industrial")
RSICD_PICK = 3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ucm", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ucm")
    ap.add_argument("--rsicd", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "rsicd")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "resources" / "demo")
    args = ap.parse_args()
    classes = json.loads((args.ucm / "captions.json").read_text())["classes"]
    for name in classes.values():
        (args.out / name).mkdir(parents=True, exist_ok=True)
        for k in PICK:
            src = args.ucm / "images" / name / f"{name}{k:02d}.jpg"
            shutil.copyfile(src, args.out / name / src.name)
    copy_rsicd(args.rsicd, args.out)
    write_geotiff(args.ucm / "images" / "storagetanks" / "storagetanks98.jpg",
                  args.out / "geotiff" / "storagetanks98_4band_utm11n.tif")
    print(f"demo written to {args.out}")


def copy_rsicd(rsicd: Path, out: Path) -> None:
    """The first ``RSICD_PICK`` val tiles of each of ``RSICD_TYPES``, into ``out/<type>/``."""
    images = json.loads((rsicd / "captions.json").read_text())["images"]
    for name in RSICD_TYPES:
        picked = [e["filename"] for e in images if e["classname"] == name and e["split"] == "val"][:RSICD_PICK]
        (out / name).mkdir(parents=True, exist_ok=True)
        for rel in picked:
            shutil.copyfile(rsicd / "images" / rel, out / name / Path(rel).name)


def write_geotiff(src: Path, dest: Path) -> None:
    """A 4-band (R, G, B, synthetic NIR) uint16 GeoTIFF in UTM 11N at 0.3 m with a nodata frame."""
    import rasterio
    from rasterio.transform import from_origin

    rgb = np.asarray(Image.open(src).convert("RGB"), dtype=np.float32)
    nir = 0.6 * rgb[..., 1] + 0.4 * rgb[..., 0]
    bands = np.concatenate([rgb, nir[..., None]], axis=2).transpose(2, 0, 1)
    data = (bands * 40 + 500).astype(np.uint16)  # 12-bit-like radiometry, as from a real sensor
    data[:, :6, :] = 0
    data[:, :, -6:] = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Los Angeles, where many UC Merced tiles come from.
    transform = from_origin(384_000.0, 3_766_000.0, 0.3, 0.3)
    with rasterio.open(dest, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=4,
                       dtype="uint16", crs="EPSG:32611", transform=transform, nodata=0,
                       compress="deflate") as ds:
        ds.write(data)


if __name__ == "__main__":
    main()
