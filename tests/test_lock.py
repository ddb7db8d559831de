"""One grid per folder: a second compare or merge on a folder in use stops with one line naming
the holder, and the lock of a process killed with SIGKILL is taken over."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from toolkit.cli import main
from toolkit.runner.lock import LOCK, FolderLocked, hold

HOLD_AND_WAIT = """
import sys, time
from pathlib import Path
from toolkit.runner.lock import hold
with hold(Path(sys.argv[1]), "compare"):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def held_elsewhere(tmp_path):
    """The run folder held by another process, as a running 'toolkit compare' holds it."""
    folder = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", HOLD_AND_WAIT, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        yield folder, child
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()


def test_second_compare_and_merge_stop_with_one_line_naming_the_holder(held_elsewhere, tmp_path, capsys):
    folder, child = held_elsewhere
    assert main(["compare", "--archs", "fpn", "--plugins", "l1", "--out", str(folder)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"pid {child.pid} on " in err and "'toolkit compare'" in err and "is in use" in err
    assert sorted(p.name for p in folder.iterdir()) == [LOCK], "the second compare wrote nothing"

    source = tmp_path / "other"
    (source / "cells").mkdir(parents=True)
    (source / "settings.json").write_text("{}")
    assert main(["merge", str(source), "--into", str(folder)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"pid {child.pid} on " in err, err


def test_lock_of_a_killed_process_is_taken_over(held_elsewhere, capsys):
    folder, child = held_elsewhere
    with pytest.raises(FolderLocked, match=f"pid {child.pid} "):
        with hold(folder, "merge"):
            pass
    child.send_signal(signal.SIGKILL)  # no chance to release anything
    child.wait()
    assert json.loads((folder / LOCK).read_text())["pid"] == child.pid, "its record stays behind"
    with hold(folder, "compare") as left:
        assert left["pid"] == child.pid
        assert json.loads((folder / LOCK).read_text())["pid"] == os.getpid()
    assert f"taking over from 'toolkit compare' (pid {child.pid} " in capsys.readouterr().err
    assert (folder / LOCK).read_text() == "", "released cleanly: nothing to take over next time"
    with hold(folder, "compare") as left:
        assert left == {}


def test_the_holder_may_enter_again_but_another_thread_may_not(tmp_path):
    with hold(tmp_path, "compare"):
        with hold(tmp_path, "compare"):  # the CLI holds the folder around run_grid, which holds it too
            pass
        failed = []
        worker = threading.Thread(target=lambda: failed.append(_try_hold(tmp_path)))
        worker.start()
        worker.join()
        assert failed == [True]


def _try_hold(folder: Path) -> bool:
    try:
        with hold(folder, "merge"):
            return False
    except FolderLocked:
        return True


def test_out_naming_a_file_is_one_line(tmp_path, capsys):
    file = tmp_path / "results.txt"
    file.write_text("not a folder")
    assert main(["compare", "--archs", "fpn", "--plugins", "l1", "--out", str(file)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--out {file} is a file" in err, err
    assert main(["merge", str(tmp_path), "--into", str(file)]) == 2
    assert f"--into {file} is a file" in capsys.readouterr().err
