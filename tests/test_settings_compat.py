"""Run folders made before a setting existed keep resuming and merging (at the setting's default)."""
from __future__ import annotations

import json

import pytest

from toolkit.runner import grid as compare


def test_a_grid_started_before_these_settings_existed_still_resumes(tmp_path):
    """settings.json written before channels_last (and the other new settings) existed: resuming
    at their defaults is the same grid; turning one on is not."""
    grid = compare.load_grid(None, archs=["fpn"], plugins=["l1"], sparsities=[0.5])
    old = compare._run_settings(grid)
    for key in ("channels_last", "sparsity_regularizer", "regularizer_strength", "recovery_lr"):
        del old["train"][key]
    del old["distill"]["kind"], old["distill"]["decoder_weight"]
    (tmp_path / "settings.json").write_text(json.dumps(old))
    compare._check_same_settings(grid, tmp_path, force=False)
    grid.run.train.channels_last = False  # the memory layout computes the same model: not a change
    compare._check_same_settings(grid, tmp_path, force=False)
    grid.run.train.recovery_lr = "by-flops"
    with pytest.raises(Exception, match="other settings .*train"):
        compare._check_same_settings(grid, tmp_path, force=False)
