"""The plugin manager: loads every plugin of the ``toolkit`` entry-point group.

Built-in plugins come through the same group (see our ``pyproject.toml``), so
the core has no private back door. A plugin whose import or hook raises is kept
aside as a ``BrokenPlugin`` with its error; the others still load.
"""
from __future__ import annotations

import fnmatch
import importlib.metadata as md
import traceback
from dataclasses import dataclass
from typing import Any

import pluggy

from toolkit import hookspecs
from toolkit.contract import Pruner, PrunerSpec
from toolkit.errors import UnknownNameError

GROUP = hookspecs.PROJECT


@dataclass(frozen=True)
class RegisteredPruner:
    spec: PrunerSpec
    plugin: str  # the plugin's registered name
    distribution: str  # the pip distribution that installed it, or "(local)"


@dataclass(frozen=True)
class BrokenPlugin:
    plugin: str
    distribution: str
    error: str  # one line: "ExceptionType: message"
    detail: str  # the full traceback, for --verbose


class Registry:
    """Plugins and the pruners they registered, indexed by pruner name."""

    def __init__(self, entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.broken: list[BrokenPlugin] = []
        self._pruners: dict[str, RegisteredPruner] | None = None
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
            except Exception as exc:  # noqa: BLE001 - isolate any plugin failure
                dist = ep.dist.name if ep.dist else "(unknown)"
                self.broken.append(_broken(ep.name, dist, exc))

    def register(self, plugin: Any, name: str | None = None) -> str:
        """Register a plugin object directly (tests, notebooks)."""
        registered = self.pm.register(plugin, name=name)
        self._pruners = None
        return registered

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self._pruners = None

    # -- pruners -------------------------------------------------------------
    @property
    def pruners(self) -> dict[str, RegisteredPruner]:
        if self._pruners is None:
            self._pruners = self._collect()
        return self._pruners

    def _collect(self) -> dict[str, RegisteredPruner]:
        dists = {self.pm.get_name(p): d.project_name for p, d in self.pm.list_plugin_distinfo()}
        self.broken = [b for b in self.broken if not self.pm.has_plugin(b.plugin)]
        found: dict[str, RegisteredPruner] = {}
        for impl in self.pm.hook.register_pruners.get_hookimpls():
            plugin = impl.plugin_name
            dist = dists.get(plugin, "(local)")
            specs: list[PrunerSpec] = []
            try:
                impl.function(register=specs.append)
                for spec in specs:
                    if not isinstance(spec, PrunerSpec):
                        raise TypeError(f"register() takes a PrunerSpec, got {type(spec).__name__}")
            except Exception as exc:  # noqa: BLE001
                self.broken.append(_broken(plugin, dist, exc))
                continue
            for spec in specs:
                if spec.name in found:
                    other = found[spec.name].plugin
                    self.broken.append(BrokenPlugin(plugin, dist, f"pruner name {spec.name!r} already registered by {other}", ""))
                    continue
                found[spec.name] = RegisteredPruner(spec, plugin, dist)
        return dict(sorted(found.items()))

    def get(self, name: str) -> RegisteredPruner:
        try:
            return self.pruners[name]
        except KeyError:
            raise UnknownNameError("pruner", name, list(self.pruners)) from None

    def create(self, name: str, **options: Any) -> Pruner:
        return self.get(name).spec.factory(**options)

    def list(self, pattern: str | None = None) -> list[str]:
        return [n for n in self.pruners if pattern is None or fnmatch.fnmatch(n, pattern)]


def _broken(plugin: str, dist: str, exc: BaseException) -> BrokenPlugin:
    line = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return BrokenPlugin(plugin, dist, line, "".join(traceback.format_exception(exc)))


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry()
    return _REGISTRY


def reset_registry() -> None:
    """Forget loaded plugins (after installing one at run time)."""
    global _REGISTRY
    _REGISTRY = None


def list_pruners(pattern: str | None = None) -> list[str]:
    return get_registry().list(pattern)


def create_pruner(name: str, **options: Any) -> Pruner:
    return get_registry().create(name, **options)


def parse_names(text: str) -> list[str]:
    """Split a comma list (``"fpgm, l1"``) and check every name is known."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    registry = get_registry()
    for n in names:
        registry.get(n)
    return names
