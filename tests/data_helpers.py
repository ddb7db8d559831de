"""Tiny on-disk datasets for the data-layer tests (``tests/test_data_*.py``).

Everything is a few pixels a side so a whole fixture writes and loads in
milliseconds; masks are returned alongside so tests can check decoding exactly.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from toolkit.workbench.data.folder import VOC_PALETTE


def noise_rgb(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def save_mask(path: Path, ids: np.ndarray, mode: str = "L", palette=None) -> None:
    """Class ids as a grey (``L``), indexed (``P``) or colour (``RGB``, through ``palette``) PNG."""
    ids = np.asarray(ids, np.uint8)
    if mode == "L":
        Image.fromarray(ids, mode="L").save(path)
    elif mode == "P":
        im = Image.frombytes("P", (ids.shape[1], ids.shape[0]), ids.tobytes())
        im.putpalette([v for colour in VOC_PALETTE for v in colour] * 8)
        im.save(path)
    elif mode == "RGB":
        colours = np.asarray(palette if palette is not None else VOC_PALETTE, np.uint8)
        Image.fromarray(colours[ids], mode="RGB").save(path)
    else:
        raise ValueError(mode)


def make_folder(
    root: Path,
    count: int = 6,
    size: tuple[int, int] = (16, 16),
    num_classes: int = 4,
    mask_mode: str = "L",
    palette=None,
    seed: int = 0,
    prefix: str = "img",
    images_dir: str = "images",
    masks_dir: str = "masks",
    mask_suffix: str = "",
) -> dict[str, np.ndarray]:
    """``root/images/<stem>.png`` + ``root/masks/<stem>.png``; returns stem -> (H, W) class ids."""
    rng = np.random.default_rng(seed)
    width, height = size
    (root / images_dir).mkdir(parents=True, exist_ok=True)
    (root / masks_dir).mkdir(parents=True, exist_ok=True)
    masks = {}
    for i in range(count):
        stem = f"{prefix}{i}"
        ids = rng.integers(0, num_classes, (height, width)).astype(np.uint8)
        ids[0, 0] = num_classes - 1  # every mask holds the top id: the inferred class count is known
        Image.fromarray(noise_rgb(rng, width, height)).save(root / images_dir / f"{stem}.png")
        save_mask(root / masks_dir / f"{stem}{mask_suffix}.png", ids, mask_mode, palette)
        masks[stem] = ids
    return masks


def write_toml(root: Path, text: str) -> None:
    (root / "dataset.toml").write_text(text)


def all_samples(splits) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (image H x W x 3 uint8, mask H x W) over train, val and test, as loaded (before augmentation)."""
    out = {}
    for part in (splits.train, splits.val, splits.test):
        for i, name in enumerate(part.names):
            assert name not in out, f"{name} is in more than one split"
            out[name] = (part.images[i].permute(1, 2, 0).numpy(), part.masks[i].numpy())
    return out


def names_of(dataset) -> list[str]:
    return sorted(dataset.names)


# -- a magnetic-tile look-alike: MT_<Class>/Imgs/<stem>.jpg + .png ------------------------------

def tile_mask(rng: np.random.Generator, width: int, height: int, defect: bool) -> np.ndarray:
    """Grey-level mask as the real set has: 255 inside, soft grey edges (some above, some below 127)."""
    grey = np.zeros((height, width), np.uint8)
    if defect:
        top, left = int(rng.integers(0, height - 6)), int(rng.integers(0, width - 6))
        grey[top : top + 6, left : left + 6] = 100  # soft edge below the threshold
        grey[top + 1 : top + 5, left + 1 : left + 5] = 200  # soft edge above it
        grey[top + 2 : top + 4, left + 2 : left + 4] = 255
    return grey


def make_fake_tile(root: Path, counts: dict[str, int], size: tuple[int, int] = (20, 16), seed: int = 0) -> dict[str, np.ndarray]:
    """A magnetic-tile-shaped tree; returns stem -> grey mask (stems are ``<class>-<i>``, lower case)."""
    rng = np.random.default_rng(seed)
    width, height = size
    masks = {}
    for cls, n in counts.items():
        folder = root / f"MT_{cls}" / "Imgs"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            stem = f"{cls.lower()}-{i}"
            Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8), mode="L").save(folder / f"{stem}.jpg")
            grey = tile_mask(rng, width, height, cls != "Free")
            Image.fromarray(grey, mode="L").save(folder / f"{stem}.png")
            masks[stem] = grey
    return masks


# -- Severstal: train.csv + train_images/ -----------------------------------------------------

SEVERSTAL_H, SEVERSTAL_W = 16, 40
# image -> [(class id, RLE)]; hand-decoded in severstal_expected()
SEVERSTAL_RUNS = {
    "a.jpg": [(1, "1 5"), (3, "33 20")],
    "b.jpg": [(2, "630 11"), (4, "17 1")],
}
SEVERSTAL_IMAGES = ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg"]


def severstal_expected() -> dict[str, np.ndarray]:
    """The masks of SEVERSTAL_RUNS, decoded by hand (H=16, so pixel p is column (p-1)//16, row (p-1)%16)."""
    h, w = SEVERSTAL_H, SEVERSTAL_W
    out = {name: np.zeros((h, w), np.uint8) for name in SEVERSTAL_IMAGES}
    a = out["a.jpg"]
    a[0:5, 0] = 1  # "1 5": pixels 1-5, column 0 rows 0-4
    a[:, 2] = 3  # "33 20": pixels 33-48 are all of column 2 ...
    a[0:4, 3] = 3  # ... and 49-52 rows 0-3 of column 3
    b = out["b.jpg"]
    b[5:16, 39] = 2  # "630 11": pixel 630 is column 39 row 5, through row 15 (pixel 640, the last)
    b[0, 1] = 4  # "17 1": pixel 17 is column 1 row 0
    return out


def make_severstal(root: Path, layout: str = "new", extra_rows: list[str] | None = None) -> None:
    """Six 40x16 JPEGs; defects on a and b only; c has explicit empty rows (old layout), d-f none."""
    rng = np.random.default_rng(0)
    (root / "train_images").mkdir(parents=True, exist_ok=True)
    for name in SEVERSTAL_IMAGES:
        Image.fromarray(noise_rgb(rng, SEVERSTAL_W, SEVERSTAL_H)).save(root / "train_images" / name)
    if layout == "new":
        lines = ["ImageId,ClassId,EncodedPixels"]
        lines += [f"{name},{c},{rle}" for name, runs in SEVERSTAL_RUNS.items() for c, rle in runs]
    else:
        lines = ["ImageId_ClassId,EncodedPixels"]
        for name in ("a.jpg", "b.jpg", "c.jpg"):
            given = dict(SEVERSTAL_RUNS.get(name, []))
            lines += [f"{name}_{c},{given.get(c, '')}" for c in range(1, 5)]
    lines += extra_rows or []
    (root / "train.csv").write_text("\n".join(lines) + "\n")
