"""``load_splits``: from a ``--data`` value to seeded train / validation / test datasets.

Splits follow the research: a dataset's own test split when it has one,
otherwise ``test_fraction`` of it set aside; then ``val_fraction`` of the rest
(80/20) held out for validation. Every split is stratified (by class folder,
by which defects an image has, or by the dataset's own train/test), so rare
classes reach every split, and seeded, so a run can be repeated exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from toolkit.workbench.data import folder, magnetic_tile, severstal, synthetic, thin_lines
from toolkit.workbench.data.dataset import SegmentationDataset, Triple
from toolkit.workbench.data.folder import Listing
from toolkit.workbench.data.records import Arrays, Record, read_records
from toolkit.errors import DataError, UsageError

IMAGENET_MEAN: Triple = (0.485, 0.456, 0.406)
IMAGENET_STD: Triple = (0.229, 0.224, 0.225)

DATASETS = {
    "synthetic": "built-in, generated offline: steel with rust of graded severity (4 classes, not real data)",
    "thin-lines": "built-in, generated offline: dark cracks 1-2 px wide on noise (binary, ~1.5% crack pixels, not real data)",
    "magnetic-tile": "real magnetic-tile surface defects, 6 classes (found in shared/data or TOOLKIT_DATA_DIR)",
    "sscs": "SSCS corrosion condition states, 4 classes: sscs:PATH (folder layout)",
    "nea": "NEA UAV corroded walls, 3 classes: nea:PATH (folder layout)",
    "severstal": "Severstal steel defects, 4 defect classes: severstal:PATH (train.csv + train_images/)",
    "folder": "your own: folder:PATH with images/ and masks/ (+ dataset.toml for class names or a palette)",
}
_CORROSION = {"synthetic", "sscs", "nea"}
GENERATED = {"synthetic": synthetic, "thin-lines": thin_lines}  # made from the seed, no files


@dataclass
class DatasetSplits:
    train: SegmentationDataset
    val: SegmentationDataset
    test: SegmentationDataset
    num_classes: int
    class_names: list[str]
    description: str
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why) left out with skip_bad


def list_datasets() -> dict[str, str]:
    return dict(DATASETS)


def parse_source(source: str) -> tuple[str, str | None]:
    """``NAME``, ``FORMAT:PATH`` or a bare path (format recognised from its files)."""
    name, sep, rest = source.partition(":")
    if sep and name in DATASETS and name not in GENERATED:
        return name, rest
    if source in (*GENERATED, "magnetic-tile"):
        return source, None
    if source in DATASETS:
        raise UsageError(f"dataset {source} needs its folder: --data {source}:PATH")
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "train.csv").is_file():
            return "severstal", str(path)
        if (path / "MT_Free").is_dir():
            return "magnetic-tile", str(path)
        return "folder", str(path)
    raise UsageError(
        f"unknown dataset {source!r}: give synthetic, thin-lines, magnetic-tile, FORMAT:PATH or an existing folder "
        f"(formats: {', '.join(DATASETS)})"
    )


def split_indices(strata: Sequence[str], fraction: float, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """(kept, split off): ``fraction`` of each stratum split off, at least one of any stratum of 2 or more."""
    kept: list[int] = []
    taken: list[int] = []
    for stratum in sorted(set(strata)):
        idx = [i for i, s in enumerate(strata) if s == stratum]
        rng.shuffle(idx)
        k = int(round(len(idx) * fraction))
        if fraction > 0 and k == 0 and len(idx) >= 2:
            k = 1
        k = min(k, len(idx) - 1) if len(idx) > 1 else k
        taken += idx[:k]
        kept += idx[k:]
    return sorted(kept), sorted(taken)


def subsample(strata: Sequence[str], limit: int, rng: np.random.Generator) -> list[int]:
    """``limit`` indices, each stratum in proportion (and at least one while there is room)."""
    groups = {s: [i for i, t in enumerate(strata) if t == s] for s in sorted(set(strata))}
    total = len(strata)
    quota = {s: len(g) * limit / total for s, g in groups.items()}
    counts = {s: max(1 if limit >= len(groups) else 0, int(q)) for s, q in quota.items()}
    by_remainder = sorted(groups, key=lambda s: quota[s] - int(quota[s]), reverse=True)
    while sum(counts.values()) < limit:
        grew = False
        for s in by_remainder:
            if sum(counts.values()) < limit and counts[s] < len(groups[s]):
                counts[s] += 1
                grew = True
        if not grew:
            break
    while sum(counts.values()) > limit:
        biggest = max(counts, key=counts.get)  # type: ignore[arg-type]
        counts[biggest] -= 1
    chosen: list[int] = []
    for s, g in groups.items():
        chosen += list(rng.permutation(g)[: counts[s]])
    return sorted(int(i) for i in chosen)


def _listing(fmt: str, path: str | None) -> Listing:
    if fmt == "magnetic-tile":
        return magnetic_tile.list_magnetic_tile(magnetic_tile.locate(path))
    assert path is not None
    root = Path(path).expanduser()
    if fmt == "severstal":
        return severstal.list_severstal(root)
    return folder.list_folder(root, {"sscs": folder.SSCS, "nea": folder.NEA}.get(fmt, folder.FOLDER))


def _read(records: list[Record], image_size: int, num_classes: int, skip_bad: bool, label: str) -> tuple[Arrays, list[tuple[str, str]]]:
    arrays, skipped = read_records(records, image_size, num_classes, skip_bad, label)
    return arrays, skipped


def _take(a: Arrays, idx: Sequence[int]) -> Arrays:
    return Arrays(a.images[list(idx)], a.masks[list(idx)], [a.names[i] for i in idx], [a.strata[i] for i in idx])


def load_splits(
    source: str = "synthetic",
    *,
    image_size: int = 128,
    seed: int = 0,
    augment: bool = True,
    skip_bad: bool = False,
    mean: Triple = IMAGENET_MEAN,
    std: Triple = IMAGENET_STD,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    limit: int | None = None,
    binary: bool = False,
) -> DatasetSplits:
    """Read a dataset once and split it; see the module docstring for how."""
    if limit is not None and limit < 3:
        raise UsageError(f"--limit must be at least 3 (train, validation and test need an image each), got {limit}")
    fmt, path = parse_source(source)
    rng = np.random.default_rng(seed)
    skipped: list[tuple[str, str]] = []
    if fmt in GENERATED:
        generator = GENERATED[fmt]
        images, masks, names = generator.make_arrays(seed, image_size, limit or generator.DEFAULT_COUNT)
        everything = Arrays(images, masks, names, ["all"] * len(names))
        given_test, class_names, description = None, list(generator.CLASS_NAMES), generator.DESCRIPTION
    else:
        listing = _listing(fmt, path)
        class_names, description = listing.class_names, listing.description
        records = listing.train + (listing.test or [])
        if limit is not None and limit < len(records):
            records = [records[i] for i in subsample([r.stratum for r in records], limit, rng)]
        budget = len(class_names) or 256  # no class list: read any id, name them after
        everything, skipped = _read(records, image_size, budget, skip_bad, f"reading {fmt}")
        if not len(everything.names):
            raise DataError(f"{description}: empty dataset, every image was bad (see the skipped files)")
        if not class_names:
            top = int(everything.masks.max())
            if top > 32:
                raise DataError(
                    f"{description}: masks hold values up to {top}; with no class list that reads as {top + 1} classes. "
                    "Save masks as class ids 0..N, or list classes (and a palette for colour masks) in dataset.toml"
                )
            class_names = ["background", *(f"class-{i}" for i in range(1, max(top, 1) + 1))]
        given_test = [i for i, s in enumerate(everything.strata) if s == "test"] if listing.test else None
    if given_test:
        pool = [i for i in range(len(everything.names)) if i not in set(given_test)]
        test_idx = given_test
    else:
        pool_local, test_local = split_indices(everything.strata, test_fraction, rng)
        pool, test_idx = pool_local, test_local
    pool_strata = [everything.strata[i] for i in pool]
    train_local, val_local = split_indices(pool_strata, val_fraction, rng)
    train_idx, val_idx = [pool[i] for i in train_local], [pool[i] for i in val_local]
    if not train_idx or not val_idx or not test_idx:
        raise DataError(
            f"{description}: too few images to split ({len(everything.names)}: train/val/test = "
            f"{len(train_idx)}/{len(val_idx)}/{len(test_idx)}); give more images or a larger --limit"
        )
    if binary:
        everything.masks = (everything.masks > 0).astype(np.uint8)
        class_names = ["background", "corrosion" if fmt in _CORROSION else "defect"]
        description += "; binary"

    def make(idx: list[int], aug: bool) -> SegmentationDataset:
        part = _take(everything, idx)
        return SegmentationDataset(part.images, part.masks, part.names, mean, std, augment=aug, strata=part.strata)

    return DatasetSplits(
        train=make(train_idx, augment), val=make(val_idx, False), test=make(test_idx, False),
        num_classes=len(class_names), class_names=class_names, description=description, skipped=skipped,
    )
