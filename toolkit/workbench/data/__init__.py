"""Datasets: one module a format, all ending in the same in-memory ``SegmentationDataset``.

``load_splits(source)`` is the entry point; ``source`` is a format name
(``synthetic``, the generated default; ``magnetic-tile``), ``FORMAT:PATH``,
or a bare folder whose format is recognised from its files. Formats are
registered through the ``register_datasets`` hook, the built-ins too
(``plugins/datasets.py``); ``list_datasets()`` lists them.
"""
from toolkit.workbench.data.dataset import SegmentationDataset, paper_augmentation
from toolkit.workbench.data.severstal import rle_decode, rle_encode
from toolkit.workbench.data.splits import DatasetSplits, list_datasets, load_splits, parse_source

__all__ = [
    "DatasetSplits", "SegmentationDataset", "list_datasets", "load_splits", "paper_augmentation",
    "parse_source", "rle_decode", "rle_encode",
]
