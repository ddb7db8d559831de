"""Magnetic-tile surface defects (real images, pixel masks).

Huang, Y., Qiu, C., Yuan, K. "Surface defect saliency of magnetic tile",
The Visual Computer 36, 85-96 (2020). Layout::

    ROOT/MT_<Class>/Imgs/<stem>.jpg   grayscale image
    ROOT/MT_<Class>/Imgs/<stem>.png   grey-level mask, same stem

Classes come from the folder: Blowhole, Break, Crack, Fray, Uneven and Free
(defect-free, all-zero mask). Masks have soft edges and are thresholded
(> 127 is defect); a defect pixel takes its folder's class, so the set reads as
6-class segmentation (background + 5 defects) or, with ``binary``, defect vs
not. Splits are stratified by folder so the 952 defect-free images cannot
swamp the 32 Fray images in any split.

Where it is: ``magnetic-tile:PATH``, else ``$TOOLKIT_DATA_DIR/magnetic-tile``,
else a ``shared/data/magnetic-tile`` (or ``data/magnetic-tile``) folder beside
the working directory or the installed package, or one of their parents.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from toolkit.contract import Listing, Record
from toolkit.errors import DataError
from toolkit.workbench.data.records import open_image

DEFECTS = ["Blowhole", "Break", "Crack", "Fray", "Uneven"]
CLASS_NAMES = ["background", *(d.lower() for d in DEFECTS)]
THRESHOLD = 127
NAME = "magnetic-tile"
CITATION = 'Huang, Qiu, Yuan: "Surface defect saliency of magnetic tile", The Visual Computer 36:85-96 (2020)'


def locate(path: str | None = None) -> Path:
    """The dataset folder, or a ``DataError`` saying where it was looked for."""
    if path:
        return Path(path).expanduser()
    tried: list[Path] = []
    env = os.environ.get("TOOLKIT_DATA_DIR")
    if env:
        tried.append(Path(env) / NAME)
    for base in (Path.cwd(), Path(__file__).resolve()):
        for parent in [base, *base.parents]:
            tried += [parent / "shared" / "data" / NAME, parent / "data" / NAME]
    for candidate in tried:
        if (candidate / "MT_Free").is_dir():
            return candidate
    raise DataError(
        f"magnetic-tile dataset not found: set TOOLKIT_DATA_DIR to the folder that holds {NAME}/, "
        f"or pass --data magnetic-tile:PATH (looked in {tried[0].parent if env else 'shared/data/ beside the working directory'})"
    )


def read_mask(path: Path, class_id: int) -> np.ndarray:
    grey = np.asarray(open_image(path, "L"))
    return np.where(grey > THRESHOLD, class_id, 0).astype(np.uint8)


def _missing(image: Path) -> np.ndarray:
    raise DataError(f"{image}: no mask (looked for {image.with_suffix('.png')})")


def list_magnetic_tile(root: Path) -> Listing:
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    records: list[Record] = []
    for cls_dir in sorted(root.glob("MT_*")):
        folder = cls_dir.name[3:]
        class_id = DEFECTS.index(folder) + 1 if folder in DEFECTS else 0
        if folder != "Free" and class_id == 0:
            raise DataError(f"{cls_dir}: unknown class folder (expected MT_{{{', '.join(DEFECTS)}, Free}})")
        for image in sorted((cls_dir / "Imgs").glob("*.jpg")):
            mask = image.with_suffix(".png")
            reader = (lambda size, m=mask, c=class_id: read_mask(m, c)) if mask.is_file() else (lambda size, i=image: _missing(i))
            records.append(Record(image, reader, str(mask), folder))
    if not records:
        raise DataError(f"{root}: empty dataset, no MT_<Class>/Imgs/*.jpg images found")
    return Listing(records, None, list(CLASS_NAMES), f"magnetic-tile surface defects (real; {CITATION}) at {root}")
