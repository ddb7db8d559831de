"""The plugin core as plugin authors and users meet it: registration, isolation, listing, disabling."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import toolkit
from plugin_helpers import installed_plugins, run_cli  # noqa: F401 - installed_plugins is a fixture
from toolkit import DatasetSpec, ModelSpec, Option, PruneRequest, PruneResult, PrunerSpec, hookimpl
from toolkit.cli import main
from toolkit.contract import check_result
from toolkit.errors import UnknownNameError
from toolkit.plugins import Registry, get_registry
from toolkit.workbench.data import load_splits
from toolkit.workbench.models import create_model

BUILTIN = {"fpgm", "l1", "l2", "taylor", "lamp", "random", "linear", "agp", "movement", "level",
           "nni-l1", "nni-l2", "nni-fpgm"}
BUILTIN_DATASETS = {"synthetic", "thin-lines", "magnetic-tile", "sscs", "nea", "severstal", "folder"}
BUILTIN_ARCHS = {"unet", "unetplusplus", "fpn", "linknet", "manet", "resnet50", "resnext50_32x4d", "resnet18"}
SAMPLES = {"pruners": {"sample_magnitude", "bn_scale", "bn_gradient"}, "datasets": {"pairs"}, "architectures": {"small_unet"}}


def test_builtins_come_through_entry_points():
    registry = Registry()
    for found, expected in ((registry.pruners, BUILTIN), (registry.datasets, BUILTIN_DATASETS),
                            (registry.models, BUILTIN_ARCHS)):
        assert expected <= set(found), f"missing built-ins: {expected - set(found)}"
        # Built-ins are loaded from our own distribution's entry points, like any plugin.
        assert {found[n].distribution for n in expected} == {"toolkit"}
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
    assert {n: registry.datasets[n].distribution for n in SAMPLES["datasets"]} == {"pairs": "toolkit-sample-structured"}
    assert registry.models["small_unet"].distribution == "toolkit-sample-structured"


def test_broken_plugins_are_isolated(installed_plugins):
    registry = get_registry()
    registry.plugins()  # every hook collected
    errors = [(b.plugin, b.error) for b in registry.broken]
    for plugin, error in [
        ("broken_import", "ImportError: this plugin needs a library"),
        ("broken_exit", "SystemExit: this plugin exits on import"),
        ("broken_hook", "RuntimeError: hook failed on purpose"),
        ("broken_hook", "TypeError: register() takes a ModelSpec, got str"),
        ("broken_hook", "dataset name 'synthetic' already registered by datasets"),
    ]:
        assert any(p == plugin and error in e for p, e in errors), (plugin, error, errors)
    assert BUILTIN | SAMPLES["pruners"] <= set(registry.pruners)
    assert BUILTIN_ARCHS | SAMPLES["architectures"] <= set(registry.models)
    assert registry.datasets["synthetic"].plugin == "datasets", "a plugin cannot take over a built-in name"


def test_cli_lists_builtin_sample_and_broken(installed_plugins, capsys):
    out = run_cli("plugins", "--verbose", pythonpath=installed_plugins)  # a fresh process: nothing stops it
    assert out.returncode == 0, out.stderr
    for name in (*BUILTIN, *BUILTIN_DATASETS, *BUILTIN_ARCHS, *(n for names in SAMPLES.values() for n in names),
                 "toolkit-sample-plugin", "toolkit-sample-structured"):
        assert name in out.stdout, name
    for plugin in ("broken_import", "broken_exit", "broken_hook"):
        assert f"broken plugin {plugin}" in out.stdout
    assert "Traceback (most recent call last)" in out.stdout and "hook failed on purpose" in out.stdout
    assert "global_pruning=False" in out.stdout, "--verbose lists each pruner's options"
    assert main(["plugins"]) == 0
    plain = capsys.readouterr().out
    assert "broken plugin broken_hook" in plain and "Traceback" not in plain and "global_pruning=False" not in plain


def test_cli_json_describes_every_plugin(installed_plugins, capsys):
    assert main(["plugins", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    plugins = {p["name"]: p for p in payload["plugins"]}
    for entry in plugins.values():
        assert {"name", "distribution", "version", "hooks", "kinds", "backends", "provides"} <= set(entry)
    sample = plugins["sample_structured"]
    assert sample["distribution"] == "toolkit-sample-structured" and sample["version"] == "0.1.0"
    assert sample["hooks"] == ["register_datasets", "register_importances", "register_models"]
    assert sample["kinds"] == ["structured"] and sample["backends"] == ["torch-pruning"]
    assert {(p["type"], p["name"]) for p in sample["provides"]} == {
        ("importance", "bn_scale"), ("importance", "bn_gradient"), ("dataset", "pairs"), ("architecture", "small_unet")}
    provided = {p["name"]: p for p in sample["provides"]}
    assert provided["bn_gradient"]["needs_gradients"] and not provided["bn_scale"]["needs_gradients"], "read from the class"
    assert plugins["nni"]["kinds"] == ["unstructured"] and plugins["nni"]["backends"] == ["nni", "toolkit"]
    assert plugins["smp"]["hooks"] == ["register_models"] and plugins["datasets"]["hooks"] == ["register_datasets"]
    pruners = {p["name"]: p for p in payload["pruners"]}
    assert BUILTIN | SAMPLES["pruners"] <= set(pruners)
    assert pruners["bn_scale"]["kind"] == "structured" and pruners["bn_scale"]["plugin"] == "sample_structured"
    assert "round_to" in {o["name"] for o in pruners["bn_scale"]["options"]}, "the core's structured options"
    assert {d["name"] for d in payload["datasets"]} == BUILTIN_DATASETS | SAMPLES["datasets"]
    assert {a["name"]: a["task"] for a in payload["architectures"]}["resnet50"] == "classification"
    assert {"broken_import", "broken_exit", "broken_hook"} <= {b["name"] for b in payload["broken"]}
    assert all("traceback" not in b for b in payload["broken"])
    assert payload["disabled"] == []
    assert main(["plugins", "--json", "--verbose"]) == 0
    tracebacks = {b["name"]: b["traceback"] for b in json.loads(capsys.readouterr().out)["broken"] if b["traceback"]}
    assert tracebacks["broken_import"].startswith("Traceback") and "needs a library" in tracebacks["broken_import"]


def test_disabled_plugins_are_absent_and_the_others_work(installed_plugins, monkeypatch):
    env = {"TOOLKIT_DISABLE_PLUGINS": "sample, broken_import,broken_exit,broken_hook"}
    out = run_cli("plugins", "--json", pythonpath=installed_plugins, env=env)
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert payload["disabled"] == ["broken_exit", "broken_hook", "broken_import", "sample"]
    assert payload["broken"] == []
    names = {p["name"] for p in payload["plugins"]}
    assert "sample" not in names and "sample_structured" in names
    assert "sample_magnitude" not in {p["name"] for p in payload["pruners"]}
    assert BUILTIN | {"bn_scale"} <= {p["name"] for p in payload["pruners"]}

    monkeypatch.setenv("TOOLKIT_DISABLE_PLUGINS", "sample")
    registry = Registry()
    with pytest.raises(UnknownNameError, match="unknown pruner 'sample_magnitude'"):
        registry.get("sample_magnitude")
    model = create_model("small_unet", num_classes=2)
    result = registry.create("bn_scale").prune(PruneRequest(model, torch.randn(1, 3, 32, 32), 0.5, ignored_layers=[model.head]))
    assert result.sparsity == pytest.approx(0.5, abs=0.05) and model.fuse[0].out_channels < 16


@pytest.mark.parametrize("call, says", [
    (lambda: get_registry().get("fpgn"), ["unknown pruner 'fpgn'", "fpgm", "l1"]),
    (lambda: create_model("segnet"), ["unknown architecture 'segnet'", "unet", "manet", "resnext50_32x4d"]),
    (lambda: load_splits("no-such-data"), ["unknown dataset 'no-such-data'", "synthetic", "severstal", "folder"]),
])
def test_unknown_name_lists_known_ones(call, says):
    with pytest.raises(toolkit.errors.UsageError) as err:
        call()
    for text in says:
        assert text in str(err.value)


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
                conv.weight[: int(conv.out_channels * request.amount)] = 0
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


class OldStylePruner:
    """A third-party pruner written before ``PruneRequest.amount``: it reads the old name."""

    def prune(self, request: PruneRequest):
        convs = [m for m in request.model.modules() if isinstance(m, nn.Conv2d)][:-1]
        with torch.no_grad():
            for conv in convs:
                conv.weight[: int(conv.out_channels * request.sparsity)] = 0
        zeros = sum(int((c.weight == 0).sum()) for c in convs)
        return PruneResult(request.model, "unstructured", "toy", zeros / sum(c.weight.numel() for c in convs))


def test_a_plugin_using_the_old_name_sparsity_keeps_working_with_one_deprecation_warning(monkeypatch):
    from toolkit import contract

    monkeypatch.setattr(contract, "_WARNED", set())  # as in a fresh process
    x = torch.randn(1, 3, 8, 8)

    def model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 8, 3), nn.Conv2d(8, 2, 1))

    new, old = model(), model()
    expected = check_result(ToyPruner().prune(PruneRequest(new, x, 0.5, ignored_layers=[new[2]])))
    with pytest.warns(DeprecationWarning, match="use PruneRequest.amount") as caught:
        result = check_result(OldStylePruner().prune(PruneRequest(old, x, 0.5)))
        OldStylePruner().prune(PruneRequest(model(), x, 0.25))  # every cell reads it: warned once, not each time
        built_old_style = PruneRequest(model=model(), example_inputs=x, sparsity=0.75)
    assert len([w for w in caught if issubclass(w.category, DeprecationWarning)]) == 1
    assert result.sparsity == pytest.approx(expected.sparsity) == pytest.approx(0.5)
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), new.state_dict().values()))
    assert built_old_style.amount == 0.75 and built_old_style.sparsity == 0.75
    with pytest.raises(TypeError, match="not both"):
        PruneRequest(model(), x, 0.5, sparsity=0.5)


def test_specs_reject_bad_values():
    with pytest.raises(ValueError, match="kind must be one of"):
        PrunerSpec("bad", "sparse", "x", "", ToyPruner)
    with pytest.raises(ValueError, match="path must be required, optional or none"):
        DatasetSpec("bad", "", lambda request: None, path="maybe")
    with pytest.raises(ValueError, match="task must be segmentation or classification"):
        ModelSpec("bad", "", nn.Identity, task="detection")
    with pytest.raises(ValueError, match="must be a plain identifier"):
        ModelSpec("no:colons", "", nn.Identity)
