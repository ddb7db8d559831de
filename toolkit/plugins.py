"""The plugin manager's public face: pruners by name, ``list_pruners`` / ``create_pruner``.

``toolkit.registry`` loads the plugins and collects what they registered;
this module sits above it and above the structured algorithm, and is the one
place where a registered importance becomes a pruner (the structured pruner
the core builds around it). A ``Registry`` is a view of one collector:
``get_registry()`` views the process-wide one, ``Registry(entry_points=False)``
a fresh one (tests, notebooks).
"""
from __future__ import annotations

from typing import Any, Mapping

from toolkit.contract import Pruner
from toolkit.registry import (  # noqa: F401 - re-exported: their old home
    DISABLE_ENV, GROUP, HOOKS, OWN_DISTRIBUTION, PLUGIN_FAILURES, BrokenPlugin, PluginCollector, Registered,
    disabled_from_env, get_collector, matching, reset_collector, summary,
)
from toolkit.registry import lookup


class Registry:
    """Pruners (whole ones, and one around every importance) over a ``PluginCollector``;
    everything else (``register``, ``datasets``, ``models``, ``broken``...) is the collector's."""

    def __init__(self, entry_points: bool = True, disabled: Any = None, *,
                 collector: PluginCollector | None = None) -> None:
        self.collector = collector if collector is not None else PluginCollector(entry_points, disabled)

    def __getattr__(self, name: str) -> Any:
        if name == "collector":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.collector, name)

    @property
    def pruners(self) -> dict[str, Registered]:
        """Whole pruners plus a structured pruner around every registered importance."""
        return self.collector.memo("pruners", self._pruners)

    def _pruners(self) -> dict[str, Registered]:
        from toolkit.pruning.structured import importance_pruner_spec  # Torch-Pruning loads only when used

        found = dict(self.collector.whole_pruners)
        for name, reg in self.collector.importances.items():
            if name in found:
                self.collector.broken.append(BrokenPlugin(
                    reg.plugin, reg.distribution, f"importance {name!r} clashes with pruner {name!r} of {found[name].plugin}", ""))
                continue
            found[name] = Registered(importance_pruner_spec(reg.spec), reg.plugin, reg.distribution, reg.version)
        return dict(sorted(found.items()))

    def get(self, name: str) -> Registered:
        """A pruner by name, or an ``UnknownNameError`` listing the known ones."""
        return lookup(self.pruners, "pruner", name)

    def create(self, name: str, options: Mapping[str, Any] | None = None) -> Pruner:
        """Build a pruner; options are checked against its spec first."""
        return self.get(name).spec.create(options)

    def list(self, pattern: str | None = None) -> list[str]:
        return matching(self.pruners, pattern)

    def plugins(self) -> list[dict[str, Any]]:
        """One entry per loaded plugin (``toolkit plugins --json``): its entry-point name,
        distribution and version, the hooks it implements, the pruner kinds and
        backends it brings, and each thing it registered."""
        from toolkit.pruning.structured import needs_gradients

        self.pruners  # noqa: B018 - clashes between importances and pruners are known too
        entries = self.collector.plugins()
        for provided in (p for entry in entries for p in entry["provides"] if p["type"] == "importance"):
            provided["needs_gradients"] = needs_gradients(self.collector.importance(provided["name"]))  # its class may say
        return entries


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    return Registry(collector=get_collector())


def reset_registry() -> None:
    """Forget loaded plugins (after installing one at run time)."""
    reset_collector()


def list_pruners(pattern: str | None = None) -> list[str]:
    return get_registry().list(pattern)


def create_pruner(name: str, options: Mapping[str, Any] | None = None, **kwargs: Any) -> Pruner:
    """A pruner by name, options checked (``create_pruner("fpgm", round_to=8)``)."""
    return get_registry().create(name, {**(options or {}), **kwargs})
