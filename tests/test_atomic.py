"""Every run-folder writer goes through ``toolkit.atomic``: the whole name is kept for the temporary
file (``results.jsonl`` and ``results.csv`` never share one) and a failed write leaves the old file."""
from __future__ import annotations

import pytest

from toolkit.atomic import atomic_write, write_text


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = write_text(tmp_path / "results.jsonl", "old\n")
    seen = []

    def half_then_crash(tmp):
        seen.append(tmp.name)
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_crash)
    assert seen == ["results.jsonl.tmp"]
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["results.jsonl"]
    write_text(path, "new\n")
    assert path.read_text() == "new\n"
