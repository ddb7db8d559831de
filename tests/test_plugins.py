"""The plugin core as plugin authors and users meet it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import toolkit
from toolkit import Option, PruneRequest, PruneResult, PrunerSpec, hookimpl
from toolkit.contract import check_result
from toolkit.errors import UnknownNameError
from toolkit.plugins import Registry, get_registry, reset_registry

HERE = Path(__file__).parent
BUILTIN = {"fpgm", "l1", "l2", "taylor", "linear", "agp", "movement", "level"}


def pip_install(project: Path, target: Path) -> None:
    """Install a plugin project as a user would, into a private target folder."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(project)],
        check=True, capture_output=True,
    )


@pytest.fixture(scope="module")
def installed_plugins(tmp_path_factory):
    """The sample and the broken plugin, pip-installed and put on sys.path."""
    target = tmp_path_factory.mktemp("site")
    pip_install(HERE / "sample_plugin", target)
    pip_install(HERE / "broken_plugin", target)
    sys.path.insert(0, str(target))
    reset_registry()
    yield target
    sys.path.remove(str(target))
    for mod in ("toolkit_sample_plugin", "toolkit_broken_hook"):
        sys.modules.pop(mod, None)
    reset_registry()


def run_cli(*args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = f"{pythonpath}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return subprocess.run([sys.executable, "-m", "toolkit.cli", *args], capture_output=True, text=True, env=env)


def test_builtin_pruners_come_through_entry_points():
    registry = Registry()
    found = {name: reg.distribution for name, reg in registry.pruners.items()}
    assert BUILTIN <= set(found), f"missing built-ins: {BUILTIN - set(found)}"
    # Built-ins are loaded from our own distribution's entry points, like any plugin.
    assert {found[n] for n in BUILTIN} == {"toolkit"}
    assert not [b for b in registry.broken if b.distribution == "toolkit"]


def test_pip_installed_plugin_is_listed_and_usable(installed_plugins):
    registry = get_registry()
    reg = registry.get("sample_magnitude")
    assert reg.distribution == "toolkit-sample-plugin"
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 2, 1))
    pruner = toolkit.create_pruner("sample_magnitude")
    result = check_result(pruner.prune(PruneRequest(model, torch.randn(1, 3, 8, 8), 0.5, ignored_layers=[model[2]])))
    assert result.sparsity == pytest.approx(0.5, abs=0.01)
    assert (model[0].weight == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)
    assert (model[2].weight != 0).all(), "ignored layer must stay dense"


def test_broken_plugins_are_isolated(installed_plugins):
    registry = get_registry()
    broken = {b.plugin: b for b in registry.broken}
    assert "ImportError: this plugin needs a library" in broken["broken_import"].error
    assert "RuntimeError: hook failed on purpose" in broken["broken_hook"].error
    assert "sample_magnitude" in registry.pruners and BUILTIN <= set(registry.pruners)


def test_cli_lists_builtin_sample_and_broken(installed_plugins):
    out = run_cli("plugins", pythonpath=installed_plugins)
    assert out.returncode == 0, out.stderr
    for name in (*BUILTIN, "sample_magnitude", "toolkit-sample-plugin"):
        assert name in out.stdout
    assert "broken plugin broken_import" in out.stdout and "broken plugin broken_hook" in out.stdout


def test_unknown_name_lists_known_ones():
    with pytest.raises(UnknownNameError) as err:
        get_registry().get("fpgn")
    assert "unknown pruner 'fpgn'" in str(err.value) and "fpgm" in str(err.value)


class ToyPruner:
    """A pruner that zeroes the first half of every prunable conv's filters."""

    def __init__(self, honest: bool = True):
        self.honest = honest

    def prune(self, request: PruneRequest):
        if not self.honest:
            return {"model": request.model}
        skip = {id(m) for m in request.ignored_layers}
        convs = [m for m in request.model.modules() if isinstance(m, nn.Conv2d) and id(m) not in skip]
        with torch.no_grad():
            for conv in convs:
                conv.weight[: int(conv.out_channels * request.sparsity)] = 0
        zeros = sum(int((c.weight == 0).sum()) for c in convs)
        return PruneResult(request.model, "unstructured", "toy", zeros / sum(c.weight.numel() for c in convs))


@pytest.fixture
def toy_registry():
    class ToyPlugin:
        @hookimpl
        def register_pruners(self, register):
            register(PrunerSpec("toy", "unstructured", "toy", "zero the first filters", ToyPruner,
                                options=(Option("honest", bool, True),)))

    registry = Registry(entry_points=False)
    registry.register(ToyPlugin(), name="toy-plugin")
    yield registry
    registry.unregister("toy-plugin")


def test_contract_on_a_toy_pruner(toy_registry):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 2, 1))
    request = PruneRequest(model, torch.randn(1, 3, 8, 8), 0.5, ignored_layers=[model[1]])
    result = check_result(toy_registry.create("toy").prune(request))
    assert result.kind == "unstructured" and result.sparsity == pytest.approx(0.5)
    with pytest.raises(TypeError, match="must return PruneResult"):
        check_result(toy_registry.create("toy", {"honest": False}).prune(request))
    assert toy_registry.list("to*") == ["toy"] and toy_registry.list("x*") == []


def test_spec_rejects_bad_kind():
    with pytest.raises(ValueError, match="kind must be one of"):
        PrunerSpec("bad", "sparse", "x", "", ToyPruner)
