"""Reading one image and its mask, with errors that name the file.

Every format (a ``DatasetSpec``, built-in or a plugin's) lists ``Record``s;
this module turns them into arrays and is the one place that decides what
"bad input" means: an unreadable or truncated image, a missing mask, a mask
whose size differs from its image, a class id out of range. With ``skip_bad``
a bad record is reported and left out; without it, the first one stops the
run with a ``DataError``. A dataset's void value (``ignore_index``) is the
one mask value besides the class ids that passes; it is kept as it is.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from toolkit.contract import Record
from toolkit.errors import DataError, UsageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
CLASS_ID_MODES = ("L", "P", "I", "I;16", "1")  # PIL modes whose values are class ids
VOID_HINT = "; if 255 marks void pixels, set ignore_index = 255 in dataset.toml or --ignore-index 255"


@dataclass
class Arrays:
    """Decoded, resized samples: ``images`` N x H x W x 3 and ``masks`` N x H x W, uint8."""

    images: np.ndarray
    masks: np.ndarray
    names: list[str]
    strata: list[str]


def open_image(path: Path, mode: str | None = None) -> Image.Image:
    """Fully decode ``path`` (a lazy open would let a truncated file through)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert(mode) if mode else im.copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot read image ({exc})") from None


def read_class_ids(path: Path) -> np.ndarray:
    """Class ids from a grey or indexed mask file (a ``Record`` whose mask is a path)."""
    im = open_image(path)
    if im.mode not in CLASS_ID_MODES:
        raise DataError(f"{path}: a {im.mode} mask; save class ids as a grey or indexed PNG")
    return np.asarray(im, dtype=np.int64)


def check_void_value(ignore_index: int | None) -> None:
    """A void value that masks held as uint8 keep: 0..255 (VOC's is 255)."""
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)
                                     or not 0 <= ignore_index <= 255):
        raise UsageError(f"ignore_index must be a mask value from 0 to 255 (VOC's void is 255), got {ignore_index!r}")


def check_mask(
    mask: np.ndarray, size: tuple[int, int], num_classes: int, where: Path | str, image: Path,
    ignore_index: int | None = None,
) -> np.ndarray:
    """Same size as its image and only known class ids (or the void value), or a ``DataError`` naming the file."""
    width, height = size
    if mask.shape != (height, width):
        raise DataError(f"{where}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {image.name} is {width}x{height}")
    labelled = mask if ignore_index is None else mask[mask != ignore_index]
    top = int(labelled.max()) if labelled.size else 0
    if top >= num_classes:
        void = f", void {ignore_index}" if ignore_index is not None else (VOID_HINT if top == 255 else "")
        raise DataError(f"{where}: class id {top} out of range (this dataset has {num_classes} classes, "
                        f"ids 0..{num_classes - 1}{void})")
    return mask.astype(np.uint8)


def read_record(
    record: Record, size: int, num_classes: int, ignore_index: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Image as size x size x 3 uint8 (bilinear) and mask as size x size class ids (nearest)."""
    image = open_image(record.image, "RGB") if record.read_image is None else record.read_image().convert("RGB")
    ids = read_class_ids(record.mask) if isinstance(record.mask, Path) else record.mask(image.size)
    mask = check_mask(ids, image.size, num_classes, record.where, record.image, ignore_index)
    image = image.resize((size, size), Image.Resampling.BILINEAR)
    mask = Image.fromarray(mask.astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(image, dtype=np.uint8), np.asarray(mask, dtype=np.uint8)


def read_records(
    records: Sequence[Record], size: int, num_classes: int, skip_bad: bool, label: str = "reading images",
    progress: bool = True, ignore_index: int | None = None,
) -> tuple[Arrays, list[tuple[str, str]]]:
    """Decode every record once, up front: bad files surface now, and training never waits on JPEG decoding."""
    images = np.zeros((len(records), size, size, 3), np.uint8)
    masks = np.zeros((len(records), size, size), np.uint8)
    names: list[str] = []
    strata: list[str] = []
    skipped: list[tuple[str, str]] = []
    kept = 0
    for record in tqdm(records, desc=label, unit="img", leave=False, disable=not progress or len(records) < 200):
        try:
            image, mask = read_record(record, size, num_classes, ignore_index)
        except DataError as exc:
            if not skip_bad:
                raise DataError(f"{exc} (pass --skip-bad to leave bad files out)") from None
            skipped.append((str(record.image), str(exc)))
            continue
        images[kept], masks[kept] = image, mask
        names.append(record.image.stem)
        strata.append(record.stratum)
        kept += 1
    return Arrays(images[:kept], masks[:kept], names, strata), skipped


def find_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
