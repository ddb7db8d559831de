"""The plugin collector: loads every plugin of the ``toolkit`` entry-point group and
collects what each registered, kind by kind. A pure collector: it builds nothing.

Built-in plugins come through the same group (see our ``pyproject.toml``), so
the core has no private back door. A plugin whose import or hook raises is kept
aside as a ``BrokenPlugin`` with its error; the others still load. Plugins
named in the environment variable ``TOOLKIT_DISABLE_PLUGINS`` (comma list of
entry-point names, as ``toolkit plugins --json`` shows them) are not loaded at
all, the escape hatch for a plugin that breaks on import (pytest's
``-p no:NAME``). A name registered twice keeps its first owner, the built-ins
always first, and the second plugin is reported broken for it.

Low-level modules that look a name up (an importance, an architecture, a
dataset) use ``get_collector()``; pruners, with a structured pruner around
every importance, are ``toolkit.plugins``' job.
"""
from __future__ import annotations

import fnmatch
import importlib.metadata as md
import os
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import pluggy

from toolkit import hookspecs
from toolkit.contract import DatasetSpec, ImportanceSpec, ModelSpec, PrunerSpec
from toolkit.errors import UnknownNameError

GROUP = hookspecs.PROJECT
DISABLE_ENV = "TOOLKIT_DISABLE_PLUGINS"
OWN_DISTRIBUTION = "toolkit"  # the built-ins' distribution: its names win a clash


@dataclass(frozen=True)
class Registered:
    """A registered thing (pruner, importance, ...) and where it came from."""

    spec: Any
    plugin: str  # the plugin's registered name (entry-point name)
    distribution: str  # the pip distribution that installed it, or "(local)"
    version: str = ""


@dataclass(frozen=True)
class BrokenPlugin:
    plugin: str
    distribution: str
    error: str  # one line: "ExceptionType: message"
    detail: str  # the full traceback, for --verbose


def disabled_from_env() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


# hook name -> (spec type, what the name is called in messages)
HOOKS: dict[str, tuple[type, str]] = {
    "register_pruners": (PrunerSpec, "pruner"),
    "register_importances": (ImportanceSpec, "importance"),
    "register_datasets": (DatasetSpec, "dataset"),
    "register_models": (ModelSpec, "architecture"),
}
# A plugin that raises anything but Ctrl-C while loading or registering is broken, never fatal
# (``SystemExit`` included: a plugin calling ``sys.exit`` on import must not end the CLI).
PLUGIN_FAILURES = (Exception, SystemExit)


class PluginCollector:
    """Plugins and what they registered, each kind indexed by name."""

    def __init__(self, entry_points: bool = True, disabled: Iterable[str] | None = None) -> None:
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.disabled = set(disabled_from_env() if disabled is None else disabled)
        for name in self.disabled:
            self.pm.set_blocked(name)
        self.broken: list[BrokenPlugin] = []
        self._load_broken: list[BrokenPlugin] = []
        self._cache: dict[str, dict[str, Registered]] = {}
        if entry_points:
            self._load_entry_points()

    # -- loading -------------------------------------------------------------
    def _load_entry_points(self) -> None:
        for ep in md.entry_points(group=GROUP):
            if self.pm.has_plugin(ep.name) or self.pm.is_blocked(ep.name):
                continue
            try:
                # pluggy's own loader, one entry point at a time, so that a
                # plugin whose import raises cannot hide the others.
                self.pm.load_setuptools_entrypoints(GROUP, name=ep.name)
            except PLUGIN_FAILURES as exc:  # isolate any plugin failure
                dist = ep.dist.name if ep.dist else "(unknown)"
                self._load_broken.append(_broken(ep.name, dist, exc))
        self.broken = list(self._load_broken)

    def register(self, plugin: Any, name: str | None = None) -> str:
        """Register a plugin object directly (tests, notebooks)."""
        registered = self.pm.register(plugin, name=name)
        self._cache.clear()
        return registered

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self._cache.clear()

    # -- collecting ------------------------------------------------------------
    def _distributions(self) -> dict[str, tuple[str, str]]:
        return {self.pm.get_name(p): (d.project_name, d.version) for p, d in self.pm.list_plugin_distinfo()}

    def _collect(self, hook: str) -> dict[str, Registered]:
        if hook in self._cache:
            return self._cache[hook]
        if not self._cache:
            self.broken = [b for b in self._load_broken if not self.pm.has_plugin(b.plugin)]
        spec_type, what = HOOKS[hook]
        dists = self._distributions()
        found: dict[str, Registered] = {}
        # Built-ins first: a plugin cannot take over a built-in name, its duplicate is reported instead.
        impls = sorted(getattr(self.pm.hook, hook).get_hookimpls(),
                       key=lambda impl: dists.get(impl.plugin_name, ("(local)", ""))[0] != OWN_DISTRIBUTION)
        for impl in impls:
            plugin = impl.plugin_name
            dist, version = dists.get(plugin, ("(local)", ""))
            specs: list[Any] = []
            try:
                impl.function(register=specs.append)
                for spec in specs:
                    if not isinstance(spec, spec_type):
                        raise TypeError(f"register() takes a {spec_type.__name__}, got {type(spec).__name__}")
            except PLUGIN_FAILURES as exc:
                self.broken.append(_broken(plugin, dist, exc))
                continue
            for spec in specs:
                if spec.name in found:
                    other = found[spec.name].plugin
                    self.broken.append(BrokenPlugin(plugin, dist, f"{what} name {spec.name!r} already registered by {other}", ""))
                    continue
                found[spec.name] = Registered(spec, plugin, dist, version)
        self._cache[hook] = dict(sorted(found.items()))
        return self._cache[hook]

    @property
    def importances(self) -> dict[str, Registered]:
        return self._collect("register_importances")

    @property
    def datasets(self) -> dict[str, Registered]:
        return self._collect("register_datasets")

    @property
    def models(self) -> dict[str, Registered]:
        return self._collect("register_models")

    @property
    def whole_pruners(self) -> dict[str, Registered]:
        """The pruners plugins registered whole (``register_pruners``), without the importances."""
        return self._collect("register_pruners")

    # -- lookups -----------------------------------------------------------------
    def memo(self, key: str, build: Callable[[], Any]) -> Any:
        """A view built from what was collected (``build()``), kept until a plugin comes or goes."""
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def importance(self, name: str) -> ImportanceSpec:
        return lookup(self.importances, "importance", name).spec

    def dataset(self, name: str) -> DatasetSpec:
        return lookup(self.datasets, "dataset", name).spec

    def model(self, name: str) -> ModelSpec:
        return lookup(self.models, "architecture", name).spec

    def plugins(self) -> list[dict[str, Any]]:
        """One entry per loaded plugin (``toolkit plugins --json``): its entry-point name,
        distribution and version, the hooks it implements, the pruner kinds and
        backends it brings, and each thing it registered."""
        for hook in HOOKS:
            self._collect(hook)  # so every broken plugin is known
        dists = self._distributions()
        out: dict[str, dict[str, Any]] = {}
        for plugin_name, plugin in self.pm.list_name_plugin():
            if plugin is None:
                continue
            dist, version = dists.get(plugin_name, ("(local)", ""))
            hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
            out[plugin_name] = {"name": plugin_name, "distribution": dist, "version": version, "hooks": hooks,
                                "kinds": [], "backends": [], "provides": []}
        for hook, (_, what) in HOOKS.items():
            for name, reg in self._collect(hook).items():
                entry = out.get(reg.plugin)
                if entry is not None:
                    entry["provides"].append({"name": name, "type": what, **summary(reg.spec)})
        for entry in out.values():
            for key in ("kind", "backend"):
                entry[f"{key}s"] = sorted({p[key] for p in entry["provides"] if key in p})
        return list(out.values())


def summary(spec: Any) -> dict[str, Any]:
    """A spec as plain data: description, and kind/backend (pruners), path use (datasets), task (models)."""
    info: dict[str, Any] = {"description": getattr(spec, "description", "")}
    for key in ("kind", "backend", "task"):
        if hasattr(spec, key):
            info[key] = getattr(spec, key)
    if isinstance(spec, ImportanceSpec):
        info.update(kind="structured", needs_gradients=spec.needs_gradients)
    if isinstance(spec, DatasetSpec):
        info["path"] = spec.path
    return info


def matching(names: Iterable[str], pattern: str | None = None) -> list[str]:
    """The names that match a glob (``"l*"``), all of them without one."""
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def lookup(found: Mapping[str, Registered], what: str, name: str) -> Registered:
    try:
        return found[name]
    except KeyError:
        raise UnknownNameError(what, name, sorted(found)) from None


def _broken(plugin: str, dist: str, exc: BaseException) -> BrokenPlugin:
    line = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return BrokenPlugin(plugin, dist, line, "".join(traceback.format_exception(exc)))


_COLLECTOR: PluginCollector | None = None


def get_collector() -> PluginCollector:
    """The process-wide collector, loaded on first use."""
    global _COLLECTOR
    if _COLLECTOR is None:
        _COLLECTOR = PluginCollector()
    return _COLLECTOR


def reset_collector() -> None:
    """Forget loaded plugins (after installing one at run time)."""
    global _COLLECTOR
    _COLLECTOR = None
