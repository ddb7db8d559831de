"""Plugin projects installed as a user installs them, for the plugin tests (``tests/test_*plugin*.py``)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from toolkit.plugins import reset_registry

HERE = Path(__file__).parent
PROJECTS = ("sample_plugin", "sample_structured_plugin", "broken_plugin")
MODULES = ("toolkit_sample_plugin", "toolkit_sample_structured", "toolkit_broken_hook", "toolkit_broken_import",
           "toolkit_broken_exit")


def pip_install(project: Path, target: Path) -> None:
    """Install a plugin project as a user would, into a private target folder.

    pip builds in the project's own folder (``build/``, ``*.egg-info``); test workers
    running side by side (pytest-xdist) would clean each other's build half-way and
    install a plugin without its entry points, so each install builds a private copy."""
    with tempfile.TemporaryDirectory(prefix=f"{project.name}-") as scratch:
        source = Path(scratch) / project.name
        shutil.copytree(project, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
             "--target", str(target), str(source)],
            check=True, capture_output=True,
        )


@pytest.fixture(scope="module")
def installed_plugins(tmp_path_factory):
    """The sample plugins and the broken ones, pip-installed and put on sys.path."""
    target = tmp_path_factory.mktemp("site")
    for project in PROJECTS:
        pip_install(HERE / project, target)
    sys.path.insert(0, str(target))
    reset_registry()
    yield target
    sys.path.remove(str(target))
    for mod in MODULES:
        sys.modules.pop(mod, None)
    reset_registry()


def run_cli(*args: str, pythonpath: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m toolkit.cli ARGS`` in a fresh process, as a user runs ``toolkit``."""
    environ = {**os.environ, **(env or {})}
    if pythonpath:
        environ["PYTHONPATH"] = f"{pythonpath}{os.pathsep}{environ.get('PYTHONPATH', '')}"
    return subprocess.run([sys.executable, "-m", "toolkit.cli", *args], capture_output=True, text=True, env=environ)
