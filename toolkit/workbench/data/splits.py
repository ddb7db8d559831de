"""``load_splits``: from a ``--data`` value to seeded train / validation / test datasets.

Splits follow the research: a dataset's own test split when it has one,
otherwise ``test_fraction`` of it set aside; then ``val_fraction`` of the rest
(80/20) held out for validation. Every split is stratified (by class folder,
by which defects an image has, or by the dataset's own train/test), so rare
classes reach every split, and seeded, so a run can be repeated exactly.

Void pixels (``ignore_index``: the format's, e.g. ``dataset.toml``'s, unless
the run gives one) keep their value through every step, ``binary`` included.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from toolkit.contract import DataRequest, DatasetSpec, Listing, Record
from toolkit.errors import DataError, UsageError
from toolkit.registry import get_collector
from toolkit.workbench.data.dataset import SegmentationDataset, Triple
from toolkit.workbench.data.records import VOID_HINT, Arrays, check_void_value, read_records

IMAGENET_MEAN: Triple = (0.485, 0.456, 0.406)
IMAGENET_STD: Triple = (0.229, 0.224, 0.225)


@dataclass
class DatasetSplits:
    train: SegmentationDataset
    val: SegmentationDataset
    test: SegmentationDataset
    num_classes: int
    class_names: list[str]
    description: str
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why) left out with skip_bad
    ignore_index: int | None = None  # mask value of void pixels: in no loss, metric or class count


def list_datasets() -> dict[str, str]:
    """Every registered dataset format (built-in and plugins') and its description."""
    return {name: reg.spec.description for name, reg in get_collector().datasets.items()}


def parse_source(source: str) -> tuple[str, str | None]:
    """``NAME``, ``NAME:PATH`` or a bare folder, whose format a registered spec recognises."""
    registry = get_collector()
    formats = registry.datasets
    name, sep, rest = source.partition(":")
    if sep and name in formats and formats[name].spec.path != "none":
        return name, rest
    if source in formats:
        if formats[source].spec.path == "required":
            raise UsageError(f"dataset {source} needs its folder: --data {source}:PATH")
        return source, None
    path = Path(source).expanduser()
    if path.is_dir():
        found = [n for n, reg in formats.items() if reg.spec.recognise is not None and reg.spec.recognise(path)]
        if len(found) == 1:
            return found[0], str(path)
        if found:
            raise UsageError(f"{path} looks like a dataset of each format {', '.join(found)}: say which, --data FORMAT:PATH")
        raise UsageError(f"{path}: no dataset format recognises this folder; give --data FORMAT:PATH "
                         f"(formats: {', '.join(formats)})")
    raise UsageError(
        f"unknown dataset {source!r}: give a format name, FORMAT:PATH or an existing folder (formats: {', '.join(formats)})"
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


def check_void(ignore_index: int | None, class_names: Sequence[str], where: str) -> None:
    """A void value that masks held as uint8 can keep and that is no class's id."""
    check_void_value(ignore_index)
    if ignore_index is not None and ignore_index < len(class_names):
        raise DataError(f"{where}: ignore_index {ignore_index} is the id of class {class_names[ignore_index]!r}; "
                        f"the void value must be none of the class ids 0..{len(class_names) - 1}")


def _listing(spec: DatasetSpec, request: DataRequest) -> Listing:
    """The format's records, checked for what every format must give."""
    if spec.path == "required" and request.path is not None and not request.path.exists():
        raise DataError(f"{request.path}: no such folder or file")
    listing = spec.listing(request)
    if not isinstance(listing, Listing):
        raise TypeError(f"dataset {spec.name!r}: listing() must return a toolkit.contract.Listing, got {type(listing).__name__}")
    if not listing.train:
        raise DataError(f"{listing.description}: empty dataset, no images found")
    return listing


def _take(a: Arrays, idx: Sequence[int]) -> Arrays:
    return Arrays(a.images[list(idx)], a.masks[list(idx)], [a.names[i] for i in idx], [a.strata[i] for i in idx])


def _join(a: Arrays, b: Arrays) -> Arrays:
    return Arrays(np.concatenate([a.images, b.images]), np.concatenate([a.masks, b.masks]), a.names + b.names,
                  a.strata + b.strata)


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
    progress: bool = True,
    ignore_index: int | None = None,
) -> DatasetSplits:
    """Read a dataset once and split it; see the module docstring for how."""
    if limit is not None and limit < 3:
        raise UsageError(f"--limit must be at least 3 (train, validation and test need an image each), got {limit}")
    fmt, path = parse_source(source)
    spec = get_collector().dataset(fmt)
    rng = np.random.default_rng(seed)
    request = DataRequest(None if path is None else Path(path).expanduser(), seed, image_size, limit)
    listing = _listing(spec, request)
    class_names, description = list(listing.class_names), listing.description
    void = ignore_index if ignore_index is not None else listing.ignore_index
    check_void(void, class_names, description)
    parts = [(r, False) for r in listing.train] + [(r, True) for r in listing.test or []]
    if limit is not None and limit < len(parts):
        parts = [parts[i] for i in subsample([r.stratum for r, _ in parts], limit, rng)]
    budget = len(class_names) or 256  # no class list: read any id, name them after
    def read(records: list[Record]) -> tuple[Arrays, list[tuple[str, str]]]:
        return read_records(records, image_size, budget, skip_bad, f"reading {fmt}", progress, void)

    train, skipped = read([r for r, test in parts if not test])
    test, skipped_test = read([r for r, test in parts if test])
    everything, skipped = _join(train, test), skipped + skipped_test
    if not len(everything.names):
        raise DataError(f"{description}: empty dataset, every image was bad (see the skipped files)")
    if not class_names:
        labelled = everything.masks if void is None else everything.masks[everything.masks != void]
        top = int(labelled.max()) if labelled.size else 0
        if top > 32:
            raise DataError(
                f"{description}: masks hold values up to {top}; with no class list that reads as {top + 1} classes. "
                "Save masks as class ids 0..N, or list classes (and a palette for colour masks) in dataset.toml"
                + (VOID_HINT if top == 255 else "")
            )
        class_names = ["background", *(f"class-{i}" for i in range(1, max(top, 1) + 1))]
        check_void(void, class_names, description)
    given_test = list(range(len(train.names), len(everything.names)))
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
        merged = (everything.masks > 0).astype(np.uint8)
        everything.masks = merged if void is None else np.where(everything.masks == void, everything.masks, merged)
        class_names = ["background", spec.binary_class]
        description += "; binary"

    def make(idx: list[int], aug: bool) -> SegmentationDataset:
        part = _take(everything, idx)
        return SegmentationDataset(part.images, part.masks, part.names, mean, std, augment=aug, strata=part.strata,
                                   ignore_index=void)

    return DatasetSplits(
        train=make(train_idx, augment), val=make(val_idx, False), test=make(test_idx, False),
        num_classes=len(class_names), class_names=class_names, description=description, skipped=skipped,
        ignore_index=void,
    )
