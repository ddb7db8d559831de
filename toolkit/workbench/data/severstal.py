"""Severstal steel defect detection: 256x1600 images and run-length-encoded masks in ``train.csv``.

Layout (Kaggle, 2019)::

    ROOT/train.csv        ImageId,ClassId,EncodedPixels   (or the older ImageId_ClassId,EncodedPixels)
    ROOT/train_images/*.jpg

Four defect classes (ids 1-4; 0 is background). Images with no row, or only
empty ``EncodedPixels``, have no defect; they are most of the set, so splits
are stratified by which defects an image has. RLE is Kaggle's: pairs of
"start length", pixels numbered from 1, top to bottom then left to right
(column-major).
"""
from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from toolkit.contract import Listing, Record
from toolkit.errors import DataError
from toolkit.workbench.data.records import find_images

CLASS_NAMES = ["background", "defect-1", "defect-2", "defect-3", "defect-4"]
ABOUT = "Severstal steel defect detection (Kaggle 2019): 256x1600 images, 4 defect classes"


def rle_decode(rle: str, shape: tuple[int, int], where: str = "RLE") -> np.ndarray:
    """0/1 mask of ``shape`` (height, width) from Kaggle's column-major, 1-indexed runs."""
    height, width = shape
    flat = np.zeros(height * width, np.uint8)
    tokens = rle.split()
    if len(tokens) % 2:
        raise DataError(f"{where}: run-length code has an odd number of values ({len(tokens)})")
    try:
        values = np.asarray(tokens, dtype=np.int64).reshape(-1, 2)
    except ValueError:
        raise DataError(f"{where}: run-length code must be integers, got {rle[:40]!r}") from None
    for start, length in values:
        if start < 1 or length < 0 or start - 1 + length > flat.size:
            raise DataError(f"{where}: run {start} {length} lies outside a {height}x{width} image")
        flat[start - 1 : start - 1 + length] = 1
    return flat.reshape((height, width), order="F")


def rle_encode(mask: np.ndarray) -> str:
    """Kaggle's run-length code of the nonzero pixels of ``mask`` (inverse of ``rle_decode``)."""
    flat = np.concatenate([[0], (np.asarray(mask).flatten(order="F") > 0).astype(np.int8), [0]])
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts, ends = edges[0::2], edges[1::2]
    return " ".join(f"{s} {e - s}" for s, e in zip(starts, ends))


def _read_csv(path: Path) -> dict[str, list[tuple[int, str, str]]]:
    """ImageId -> [(class id, RLE, 'file:line')] for non-empty codes, in either CSV layout."""
    runs: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            fields = set(reader.fieldnames or ())
            for line, row in enumerate(reader, start=2):
                where = f"{path}:{line}"
                if {"ImageId", "ClassId"} <= fields:
                    image, cls = row["ImageId"], row["ClassId"]
                elif "ImageId_ClassId" in fields:
                    image, _, cls = row["ImageId_ClassId"].rpartition("_")
                else:
                    raise DataError(f"{path}: expected columns ImageId,ClassId,EncodedPixels (got {', '.join(sorted(fields))})")
                rle = (row.get("EncodedPixels") or "").strip()
                try:
                    class_id = int(cls)
                except ValueError:
                    raise DataError(f"{where}: class id {cls!r} is not an integer") from None
                if not 1 <= class_id < len(CLASS_NAMES):
                    raise DataError(f"{where}: class id {class_id} out of range (defect classes are 1..{len(CLASS_NAMES) - 1})")
                if rle:
                    runs[image].append((class_id, rle, where))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a text CSV ({exc})") from None
    return runs


def _mask_reader(runs: list[tuple[int, str, str]]):
    def read(size: tuple[int, int]) -> np.ndarray:
        width, height = size
        mask = np.zeros((height, width), np.uint8)
        for class_id, rle, where in runs:
            mask[rle_decode(rle, (height, width), where) > 0] = class_id
        return mask

    return read


def list_severstal(root: Path) -> Listing:
    csv_path = root / "train.csv"
    images_dir = root / "train_images"
    if not csv_path.is_file():
        raise DataError(f"{root}: no train.csv (a Severstal folder holds train.csv and train_images/)")
    if not images_dir.is_dir():
        raise DataError(f"{root}: no train_images/ folder beside train.csv")
    runs = _read_csv(csv_path)
    images = {p.name: p for p in find_images(images_dir)}
    for name in runs:
        if name not in images:
            raise DataError(f"{csv_path}: lists {name}, which is not in {images_dir}")
    if not images:
        raise DataError(f"{images_dir}: empty dataset, no images found")
    records = []
    for name, path in images.items():
        its = runs.get(name, [])
        stratum = "+".join(str(c) for c in sorted({c for c, _, _ in its})) or "none"
        source = ", ".join(w for _, _, w in its) or f"{csv_path} (no rows: no defect)"
        records.append(Record(path, _mask_reader(its), source, stratum))
    return Listing(records, None, list(CLASS_NAMES), f"{ABOUT} at {root}")
