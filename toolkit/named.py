"""Named choices: a small table of name -> thing, each with a one-line help.

Losses, optimisers, learning-rate schedules, recipes, unstructured criteria,
sparsity schedules, precisions and executors are each one ``Names`` table in
the module that implements them. The table is the only place a name is
written: config checks, lookups, error messages and the CLI's choices and
help texts are read from it, so adding a name in one place shows up
everywhere. (Plugins' pruners, importances, datasets and architectures are
found through pluggy instead: ``toolkit.registry``.)

A leaf: it imports nothing from the package but ``toolkit.errors``.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar, overload

from toolkit.errors import UnknownNameError

T = TypeVar("T")
_MISSING = object()


class Names(Generic[T]):
    """Things of one ``kind`` ("loss", "optimizer") by name, in the order they were registered.

    An unknown name is an ``UnknownNameError`` (a ``UsageError``) that lists the
    known names, followed by ``hint`` when one is given.
    """

    def __init__(self, kind: str, hint: str = "") -> None:
        self.kind, self.hint = kind, hint
        self._things: dict[str, T] = {}
        self._help: dict[str, str] = {}

    @overload
    def register(self, name: str, help: str) -> Callable[[T], T]: ...
    @overload
    def register(self, name: str, help: str, thing: T) -> T: ...

    def register(self, name: str, help: str, thing: object = _MISSING) -> object:
        """Add ``thing`` under ``name``; without ``thing``, a decorator that adds what it decorates."""
        if thing is _MISSING:
            def decorate(obj: T) -> T:
                return self.register(name, help, obj)
            return decorate
        if name in self._things:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._things[name] = thing  # type: ignore[assignment]
        self._help[name] = help
        return thing

    def get(self, name: str) -> T:
        """The thing registered as ``name``, or the error that lists the known names."""
        return self._things[self.check(name)]

    def check(self, name: str) -> str:
        """``name`` itself when it is known (a config value checked where it enters)."""
        if name not in self._things:
            raise UnknownNameError(self.kind, name, self.names(), hint=self.hint)
        return name

    def names(self) -> list[str]:
        return list(self._things)

    def describe(self) -> dict[str, str]:
        """Name -> its one-line help, in registration order."""
        return dict(self._help)

    def listing(self, last: str = "or") -> str:
        """The names as a phrase for help texts: ``"sgd or adamw"``, ``"cyclic, onecycle or cosine"``."""
        names = self.names()
        return f"{', '.join(names[:-1])} {last} {names[-1]}" if len(names) > 1 else "".join(names)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._things

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._things)

    def __repr__(self) -> str:
        return f"Names({self.kind!r}: {', '.join(self._things)})"
