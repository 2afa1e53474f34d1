"""A tiny name -> class registry (timm's ``_registry`` in miniature).

A registry imports its built-in modules (``modules=``) and the Python entry points of its plug-in
group (``group="egsbench.methods"``) the first time it is asked for a name (``get``, ``names``,
``in``), so importing a package that owns a registry imports none of its members. A built-in name
listed in ``provides`` imports only its own module (a CIFAR-10 run never imports timm).
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from .errors import UnknownNameError, UserError

T = TypeVar("T")

__all__ = ["Registry", "UnknownNameError", "unknown_name_message"]


class Registry(Generic[T]):
    """Maps names to registered classes (or factory functions).

    Examples:
        >>> MODELS = Registry("model")
        >>> @MODELS.register("tiny")
        ... class Tiny: ...
        >>> MODELS.get("tiny") is Tiny
        True
        >>> MODELS.get("tinny")
        Traceback (most recent call last):
        ...
        egsbench.core.errors.UnknownNameError: unknown model 'tinny'; did you mean 'tiny'? Valid models: tiny
    """

    def __init__(
        self,
        kind: str,
        group: str | None = None,
        modules: tuple[str, ...] = (),
        provides: Mapping[str, str] | None = None,
    ):
        self.kind = kind
        self.group = group  # entry-point group of plug-ins, e.g. "egsbench.methods"
        self.modules = modules  # built-in modules whose import registers their entries
        self.provides = dict(provides or {})  # built-in name -> the module (one of ``modules``) that registers it
        self._entries: dict[str, T] = {}
        self._plugins_loaded = group is None and not modules

    def load_plugins(self, reload: bool = False) -> None:
        """Import the built-in modules, then every entry point of ``group``, once; a plug-in that fails to
        import is named in the error."""
        if self._plugins_loaded and not reload:
            return
        self._plugins_loaded = True  # before importing: a module registering itself calls back into us
        for module in self.modules:
            importlib.import_module(module)
        for ep in entry_points(group=self.group) if self.group else ():
            try:
                ep.load()
            except Exception as err:  # a plug-in may fail in any way; say which one
                raise UserError(f"plug-in {ep.name!r} ({ep.value}) in {self.group} failed to load: {err}") from err

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        if name in self._entries and self._entries[name] is not obj:
            raise ValueError(f"{self.kind} {name!r} is already registered to {self._entries[name]!r}")
        self._entries[name] = obj

    def _find(self, name: object) -> None:
        """Make ``name`` registered if anything can: its own module when it is a listed built-in, else all."""
        if name in self._entries:
            return
        if name in self.provides:
            importlib.import_module(self.provides[name])
            if name in self._entries:
                return
        self.load_plugins()

    def get(self, name: str) -> T:
        self._find(name)
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(unknown_name_message(self.kind, name, self.names())) from None

    def names(self, pattern: str = "*") -> list[str]:
        self.load_plugins()
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        self._find(name)
        return name in self._entries

    def __iter__(self):
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def unknown_name_message(kind: str, name: str, valid: list[str]) -> str:
    """``unknown task 'cifar' ; did you mean 'cifar10'? Valid tasks: ...``"""
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.4)
    hint = f"; did you mean {close[0]!r}?" if close else ";"
    return f"unknown {kind} {name!r}{hint} Valid {kind}s: {', '.join(valid) or '(none)'}"
