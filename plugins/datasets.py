"""Built-in dataset formats: synthetic, thin-lines, magnetic-tile, sscs, nea, severstal, folder.

Registered through ``register_datasets`` exactly as a third-party format would
be: each only lists records (``toolkit.workbench.data``: one module a
format), and the core reads them, applies the bad-input rules and splits.
A bare ``--data PATH`` is recognised by its files: ``train.csv`` is
Severstal, ``MT_*`` folders are the magnetic tile, ``images/`` + ``masks/``
(or ``train/``) the folder layout.
"""
from __future__ import annotations

from typing import Callable

from toolkit.contract import DataRequest, DatasetSpec, Listing
from toolkit.hookspecs import hookimpl
from toolkit.workbench.data import folder, magnetic_tile, severstal, synthetic, thin_lines


def _folder_format(fmt: folder.FolderFormat) -> Callable[[DataRequest], Listing]:
    def listing(request: DataRequest) -> Listing:
        assert request.path is not None  # the spec requires one; the core checks
        return folder.list_folder(request.path, fmt)

    return listing


def _magnetic_tile(request: DataRequest) -> Listing:
    return magnetic_tile.list_magnetic_tile(magnetic_tile.locate(request.path))


def _severstal(request: DataRequest) -> Listing:
    assert request.path is not None
    return severstal.list_severstal(request.path)


@hookimpl
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    register(DatasetSpec(
        "synthetic", "built-in, generated offline: steel with rust of graded severity (4 classes, not real data)",
        synthetic.list_synthetic, path="none", binary_class="corrosion"))
    register(DatasetSpec(
        "thin-lines", "built-in, generated offline: dark cracks 1-2 px wide on noise (binary, ~1.5% crack pixels, not real data)",
        thin_lines.list_thin_lines, path="none"))
    register(DatasetSpec(
        "magnetic-tile", "real magnetic-tile surface defects, 6 classes (found in shared/data or TOOLKIT_DATA_DIR)",
        _magnetic_tile, path="optional", recognise=lambda p: (p / "MT_Free").is_dir()))
    register(DatasetSpec(
        "sscs", "SSCS corrosion condition states, 4 classes: sscs:PATH (folder layout)",
        _folder_format(folder.SSCS), binary_class="corrosion"))
    register(DatasetSpec(
        "nea", "NEA UAV corroded walls, 3 classes: nea:PATH (folder layout)",
        _folder_format(folder.NEA), binary_class="corrosion"))
    register(DatasetSpec(
        "severstal", "Severstal steel defects, 4 defect classes: severstal:PATH (train.csv + train_images/)",
        _severstal, recognise=lambda p: (p / "train.csv").is_file()))
    register(DatasetSpec(
        "folder", "your own: folder:PATH with images/ and masks/ (+ dataset.toml for class names or a palette)",
        _folder_format(folder.FOLDER), recognise=folder.is_folder_dataset))
