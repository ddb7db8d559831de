"""Image-folder formats: the generic ``folder`` layout, and SSCS and NEA, which share it.

Layout (folder names are matched case-insensitively)::

    ROOT/images/<stem>.jpg      ROOT/masks/<stem>.png
    or ROOT/train/images, ROOT/train/masks, ROOT/test/images, ROOT/test/masks
    ROOT/dataset.toml           optional: classes = [...], palette = [[r, g, b], ...],
                                          ignore_index = 255, void = [r, g, b]

A mask has the image's stem (or the stem plus ``_mask``/``_label``/``_gt``).
Grey or indexed (palette-mode) masks hold class ids (without ``classes`` they
are named ``class-1``... up to the largest id found); colour masks are mapped
through ``palette`` (the i-th colour is class i). ``ignore_index`` is the
mask value of void pixels (VOC's 255: boundaries, unlabelled), ``void`` the
colour of void pixels in colour masks (read as ``ignore_index``, 255 unless
given). A ``test`` folder is the given test split; without one the toolkit
splits off a seeded test set.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from toolkit.contract import Listing, Record
from toolkit.errors import DataError
from toolkit.workbench.data.records import CLASS_ID_MODES, IMAGE_SUFFIXES, find_images, open_image

MASK_SUFFIXES = ("", "_mask", "_label", "_gt")
# Pascal VOC's first colours: what labelme-style tools (and SSCS's colour masks) use
VOC_PALETTE = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128)]


@dataclass
class FolderFormat:
    """A folder dataset with its default classes; ``dataset.toml`` overrides them."""

    name: str
    class_names: list[str]
    about: str
    palette: list[tuple[int, int, int]] = field(default_factory=lambda: list(VOC_PALETTE))


FOLDER = FolderFormat("folder", [], "images/ + masks/ with matching stems")
SSCS = FolderFormat(
    "sscs", ["background", "fair", "poor", "severe"],
    "Corrosion Condition State (SSCS, Bianchi & Hebdon 2021): 512x512 images, 4 condition states",
)
NEA = FolderFormat(
    "nea", ["background", "corrosion-light", "corrosion-heavy"],
    "NEA UAV corroded walls: 1280x720 images, no corrosion + two corrosion levels",
)


def _child(folder: Path, *names: str) -> Path | None:
    wanted = {n.lower() for n in names}
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        if p.is_dir() and p.name.lower() in wanted:
            return p
    return None


def _layout(folder: Path) -> tuple[Path | None, Path | None]:
    """The images and masks subfolders of ``folder``, where they exist."""
    return _child(folder, "images", "imgs", "img"), _child(folder, "masks", "mask", "labels", "annotations")


def is_folder_dataset(root: Path) -> bool:
    """``images/`` and ``masks/`` inside, or a ``train/`` split folder: how a bare ``--data PATH`` is recognised."""
    return all(_layout(root)) or _child(root, "train", "training") is not None


@dataclass
class FolderSettings:
    """What ``dataset.toml`` says: class names, mask colours and the void value."""

    classes: list[str]
    palette: list[tuple[int, int, int]]
    ignore_index: int | None = None
    void: tuple[int, int, int] | None = None


def _is_colour(c: object) -> bool:
    return isinstance(c, list | tuple) and len(c) == 3 and all(isinstance(v, int) for v in c)


def _settings(root: Path, fmt: FolderFormat) -> FolderSettings:
    path = root / "dataset.toml"
    if not path.exists():
        return FolderSettings(list(fmt.class_names), list(fmt.palette))
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid TOML ({exc})") from None
    classes = data.get("classes", fmt.class_names)
    palette = data.get("palette", fmt.palette)
    void, ignore_index = data.get("void"), data.get("ignore_index")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise DataError(f"{path}: 'classes' must be a list of names")
    if not isinstance(palette, list) or not all(_is_colour(c) for c in palette):
        raise DataError(f"{path}: 'palette' must be a list of [r, g, b] integer triples")
    if void is not None and not _is_colour(void):
        raise DataError(f"{path}: 'void' must be one [r, g, b] integer triple, the colour of void pixels")
    if void is not None and tuple(void) in {tuple(c) for c in palette}:
        raise DataError(f"{path}: the void colour {tuple(void)} is also a class colour in 'palette'")
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
        raise DataError(f"{path}: 'ignore_index' must be a whole number, the mask value of void pixels (e.g. 255)")
    if void is not None and ignore_index is None:
        ignore_index = 255
    return FolderSettings(list(classes), [tuple(c) for c in palette], ignore_index,  # type: ignore[misc]
                          tuple(void) if void is not None else None)  # type: ignore[arg-type]


def read_mask(path: Path, palette: list[tuple[int, int, int]], void: tuple[int, int, int] | None = None,
              ignore_index: int = 255) -> np.ndarray:
    """Class ids from a grey, indexed or colour mask (colours through ``palette``; ``void`` -> ``ignore_index``)."""
    im = open_image(path)
    if im.mode in CLASS_ID_MODES:
        return np.asarray(im, dtype=np.int64)
    rgb = np.asarray(im.convert("RGB"), dtype=np.int64)
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    lookup = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(palette)}
    if void is not None:
        lookup[(void[0] << 16) | (void[1] << 8) | void[2]] = ignore_index
    present = np.unique(codes)
    grey = (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    if grey and not all(int(c) in lookup for c in present):
        return rgb[..., 0]  # grey saved as RGB (unless every grey is a palette colour, e.g. white for class 1)
    out = np.zeros(codes.shape, np.int64)
    for code in present:
        if int(code) not in lookup:
            colour = ((code >> 16) & 255, (code >> 8) & 255, code & 255)
            raise DataError(f"{path}: colour {tuple(int(c) for c in colour)} is not in the palette {palette}"
                            + (f" nor the void colour {void}" if void is not None else ""))
        out[codes == code] = lookup[int(code)]
    return out


def _read(mask: Path, settings: FolderSettings, size: tuple[int, int]) -> np.ndarray:
    return read_mask(mask, settings.palette, settings.void, settings.ignore_index or 0)


def _mask_for(image: Path, masks: Path) -> Path | None:
    for suffix in MASK_SUFFIXES:
        for ext in (".png", *IMAGE_SUFFIXES):
            candidate = masks / f"{image.stem}{suffix}{ext}"
            if candidate.is_file():
                return candidate
    return None


def _missing(image: Path, masks: Path, size: tuple[int, int]) -> np.ndarray:
    raise DataError(f"{image}: no mask (looked for {masks / image.stem}.png)")


def _records(split_dir: Path, settings: FolderSettings, stratum: str) -> list[Record]:
    images, masks = _layout(split_dir)
    if images is None or masks is None:
        raise DataError(f"{split_dir}: expected folders images/ and masks/ inside (found: "
                        f"{', '.join(sorted(p.name for p in split_dir.iterdir())) or 'nothing'})")
    records = []
    for image in find_images(images):
        mask = _mask_for(image, masks)
        reader = partial(_missing, image, masks) if mask is None else partial(_read, mask, settings)
        records.append(Record(image, reader, str(mask or masks / f"{image.stem}.png"), stratum))
    return records


def list_folder(root: Path, fmt: FolderFormat = FOLDER) -> Listing:
    """Records of a folder dataset, with the given train/test split if there is one."""
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    settings = _settings(root, fmt)
    train_dir, test_dir = _child(root, "train", "training"), _child(root, "test", "testing")
    if train_dir is not None:
        train = _records(train_dir, settings, "train")
        test = _records(test_dir, settings, "test") if test_dir is not None else None
    else:
        train, test = _records(root, settings, "all"), None
    if not train:
        raise DataError(f"{root}: empty dataset, no images found (expected {', '.join(IMAGE_SUFFIXES)} in images/)")
    what = fmt.about if fmt is not FOLDER else f"folder dataset {root.name}"
    return Listing(train, test, settings.classes, f"{what} at {root}", settings.ignore_index)
