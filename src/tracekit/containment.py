"""Which plugin raised an exception: the plugin, its distribution and, where it can be told, the
component (kind and name), found from the exception's traceback.

A component runs deep inside the engine, so what escapes it (a `SystemExit` from a `sys.exit` in a
saliency method, a `GeneratorExit`, a bare `BaseException`, or any bug) reaches the command line
far from where it was raised. `culprit` walks the traceback from the raise outwards to the
deepest frame of a third-party plugin's code: a module of the plugin's distribution (its
top-level packages), or the module a registered factory of the plugin lives in (plugins
registered at run time have no distribution). The component is the one whose factory was running
(`Registry.create`'s `entry`), else the one whose object the frame's method belongs to, else the
only one of the plugin's components of the kind whose Protocol has that method.

tracekit's own built-ins are not named: an error in them is tracekit's bug. Nothing here loads the
plugins: with none loaded there is no culprit.
"""

from __future__ import annotations

import functools
import importlib.metadata as metadata
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any

from .bounded import short

OWN = "tracekit"  # the distribution of the built-ins
RUNTIME = "<runtime>"  # the distribution of plugins registered at run time (`plugins.register_plugin`)


@dataclass(frozen=True)
class Culprit:
    """The plugin an exception came from, and its component where it could be told."""

    plugin: str
    distribution: str
    kind: str | None = None
    component: str | None = None

    def who(self) -> str:
        """`plugin 'foo' (distribution foo-dist)`."""
        dist = "" if self.distribution in (RUNTIME, self.plugin) else f" (distribution {self.distribution})"
        return f"plugin '{self.plugin}'{dist}"

    def where(self) -> str:
        """` in its saliency 'bar'`, or nothing when the component is not known."""
        return f" in its {self.kind} '{self.component}'" if self.kind and self.component else ""


@dataclass(frozen=True)
class _Component:
    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    distribution: str


def culprit(exc: BaseException) -> Culprit | None:
    """The third-party plugin whose code raised `exc` (or was running when it was raised), or the
    error `exc` was raised from (the engine re-raises a component's error with where it was), if any."""
    components = _components()
    if not components:
        return None
    owners = _Owners(components)
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 8:  # and what it was raised from
        seen.add(id(current))
        frames = list(_frames(current.__traceback__))
        for depth in range(len(frames) - 1, -1, -1):
            plugin = owners.of(frames[depth])
            if plugin is None:
                continue
            own = [c for c in components if (c.plugin, c.distribution) == plugin]
            found = _component(frames[: depth + 1], own)
            return Culprit(plugin[0], plugin[1], found.kind if found else None, found.name if found else None)
        current = current.__cause__ or current.__context__
    return None


def describe(exc: BaseException) -> str | None:
    """One line for what a plugin raised that no component may raise (`SystemExit`,
    `GeneratorExit`, any other `BaseException` that is not an `Exception`), or None when `exc` did
    not come from a plugin."""
    found = culprit(exc)
    if found is None:
        return None
    return (
        f"{found.who()} raised {short(exc, 200)}{found.where()}; a component must raise an exception, never "
        "exit or stop the program: this is a bug in the plugin, report it to its authors"
    )


def _frames(tb: TracebackType | None) -> Iterator[FrameType]:
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


def _components() -> list[_Component]:
    """Every registered component of a third-party plugin, with its plugin and distribution (none
    when the plugins have not been loaded in this process)."""
    plugins = sys.modules.get("tracekit.plugins")
    state = getattr(plugins, "_state", None)
    if state is None:
        return []
    out = []
    for info in state.plugins:
        if info.distribution == OWN or not info.components:
            continue
        for kind, names in info.components.items():
            registry = state.registries.get(kind)
            for name in names:
                if registry is not None and name in registry:
                    entry = registry.get(name)
                    out.append(_Component(kind, name, entry.factory, info.name, info.distribution))
    return out


def _function(factory: Any) -> Any:
    while isinstance(factory, functools.partial):
        factory = factory.func
    return factory


def _module_of(factory: Any) -> str | None:
    return getattr(_function(factory), "__module__", None)


class _Owners:
    """Which plugin a frame's module belongs to: the module of one of its factories, or a module of
    its distribution (its top-level packages, looked up only for a frame outside tracekit that no
    factory module names)."""

    def __init__(self, components: list[_Component]) -> None:
        self.dists = {(c.plugin, c.distribution) for c in components if c.distribution != RUNTIME}
        self.modules: dict[str, tuple[str, str]] = {}
        for c in components:
            module = _module_of(c.factory)
            if module and module.split(".")[0] != OWN:
                self.modules.setdefault(module, (c.plugin, c.distribution))
        self.packages: dict[str, tuple[str, str]] | None = None

    def of(self, frame: FrameType) -> tuple[str, str] | None:
        name = frame.f_globals.get("__name__")
        if not isinstance(name, str):
            return None
        if name in self.modules:
            return self.modules[name]
        top = name.split(".")[0]
        if top == OWN or not self.dists:
            return None
        if self.packages is None:
            self.packages = self._packages()
        return self.packages.get(top)

    def _packages(self) -> dict[str, tuple[str, str]]:
        try:
            installed = metadata.packages_distributions()
        except Exception:  # a broken installation must not hide the error being reported
            return {}
        found: dict[str, tuple[str, str]] = {}
        for top, names in installed.items():
            for plugin, dist in sorted(self.dists):
                if dist in names and top != OWN:
                    found.setdefault(top, (plugin, dist))
        return found


def _component(frames: list[FrameType], own: list[_Component]) -> _Component | None:
    """The plugin's component that was running at the deepest of `frames` (the raise's end)."""
    if len(own) == 1:
        return own[0]
    for frame in reversed(frames):  # a factory building its component (`Registry.create`'s entry)
        entry = frame.f_locals.get("entry") if frame.f_code.co_name == "create" else None
        for c in own:
            if entry is not None and getattr(entry, "factory", None) is c.factory:
                return c
            if frame.f_code is getattr(_function(c.factory), "__code__", None):
                return c
    for frame in reversed(frames):  # a method of a component's object
        obj = frame.f_locals.get("self")
        if obj is None:
            continue
        for c in own:
            if _built_by(type(obj), c.factory):
                return c
    method = frames[-1].f_code.co_name
    kinds = _kinds_with(method)
    fitting = [c for c in own if c.kind in kinds]
    return fitting[0] if len(fitting) == 1 else None


def _built_by(cls: type, factory: Any) -> bool:
    """Whether `factory` makes objects of `cls`: it is the class (or a base), defines it in its body,
    or names it (`return Peak(scale)`, `from .impl import Peak`)."""
    function = _function(factory)
    if isinstance(function, type):
        return issubclass(cls, function)
    qualname = getattr(function, "__qualname__", None)
    if qualname and cls.__qualname__.startswith(f"{qualname}.<locals>."):
        return True
    code = getattr(function, "__code__", None)
    return code is not None and cls.__name__ in code.co_names


def _kinds_with(method: str) -> set[str]:
    """The kinds whose Protocol (or an optional capability) has `method` (torch already imported
    only: reporting an error never imports it)."""
    if "torch" not in sys.modules:
        return set()
    from .contracts import CONTRACTS, members

    return {
        kind
        for kind, (protocol, capabilities) in CONTRACTS.items()
        if any(method in members(p) for p in (protocol, *capabilities))
    }
