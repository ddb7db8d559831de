"""Datasets: one module a format, all ending in the same in-memory ``SegmentationDataset``.

``load_splits(source)`` is the entry point; ``source`` is ``synthetic`` (the
built-in, generated default), ``magnetic-tile``, ``FORMAT:PATH`` with FORMAT
in sscs, nea, severstal, folder, magnetic-tile, or a bare folder.
"""
from toolkit.workbench.data.dataset import SegmentationDataset, paper_augmentation
from toolkit.workbench.data.severstal import rle_decode, rle_encode
from toolkit.workbench.data.splits import DatasetSplits, list_datasets, load_splits, parse_source

__all__ = [
    "DatasetSplits", "SegmentationDataset", "list_datasets", "load_splits", "paper_augmentation",
    "parse_source", "rle_decode", "rle_encode",
]
