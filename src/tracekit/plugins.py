"""The plugin manager: loads the `tracekit` entry-point group and fills one registry per kind.

Built-ins are registered through the same entry-point group as third-party plugins (see
tracekit's own pyproject). A plugin that fails to import, or whose hook raises, is recorded
with its error (`tracekit plugins` shows it) and never stops the others from loading.

`TRACEKIT_LOAD_PLUGINS`, when set, names the third-party plugins to load (comma-separated
distribution or entry-point names; empty: none), so that a run can be reproduced, or a broken
plugin kept out, without uninstalling anything. tracekit's built-ins always load.
"""

from __future__ import annotations

import functools
import importlib.metadata as metadata
import os
import re
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError, closest
from .registry import KINDS, Registry, failed_plugins_note

GROUP = "tracekit"
LOAD_PLUGINS = "TRACEKIT_LOAD_PLUGINS"
hookimpl = pluggy.HookimplMarker("tracekit")


@dataclass
class PluginInfo:
    """One loaded (or failed) plugin and what it registered."""

    name: str
    distribution: str
    version: str
    module: str
    error: str | None = None
    components: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class _State:
    pm: pluggy.PluginManager
    registries: dict[str, Registry]
    plugins: list[PluginInfo]
    selection: str  # a note of the installed plugins TRACEKIT_LOAD_PLUGINS leaves out, if it does


_lock = threading.Lock()
_state: _State | None = None
_extra: dict[str, Any] = {}  # plugins registered at run time (tests, notebooks)


def _entry_points() -> list[metadata.EntryPoint]:
    seen: set[tuple[str, str, str]] = set()
    out = []
    for ep in metadata.entry_points(group=GROUP):
        key = (ep.dist.name if ep.dist else "", ep.name, ep.value)
        if key not in seen:
            seen.add(key)
            out.append(ep)
    return out


def _normalized(name: str) -> str:
    """A distribution or entry-point name as packaging compares them: `Tracekit_GradCAM` is `tracekit-gradcam`."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def _selected(entry_points: list[metadata.EntryPoint]) -> tuple[list[metadata.EntryPoint], str]:
    """The entry points to load: tracekit's own, and the third parties' that `TRACEKIT_LOAD_PLUGINS`
    names (all of them when it is unset); and a note of those it leaves out. A name in it that no
    installed plugin has is warned about, with the closest installed ones."""
    value = os.environ.get(LOAD_PLUGINS)
    if value is None:
        return entry_points, ""
    wanted = {_normalized(n) for n in value.split(",") if n.strip()}
    known: set[str] = set()  # every name in the group: naming one of tracekit's own is harmless
    third_party: set[str] = set()  # as installed, for suggestions
    chosen, left_out = [], []
    for ep in entry_points:
        dist = ep.dist.name if ep.dist else "<unknown>"
        names = {_normalized(dist), _normalized(ep.name)}
        known |= names
        if dist == "tracekit" or wanted & names:
            chosen.append(ep)
        else:
            left_out.append(f"{ep.name} ({dist})")
        if dist != "tracekit":
            third_party |= {dist, ep.name}
    for name in sorted(wanted - known):
        hits = closest(name, sorted(third_party))
        hint = f"did you mean {' or '.join(map(repr, hits))}?" if hits else "`tracekit plugins` lists what is installed"
        warnings.warn(f"{LOAD_PLUGINS}: no installed tracekit plugin is called '{name}' ({hint})", stacklevel=2)
    note = f"{LOAD_PLUGINS}={value!r} leaves out {len(left_out)} installed plugin(s): {', '.join(left_out)}"
    return chosen, note if left_out else ""


def _load() -> _State:
    pm = pluggy.PluginManager("tracekit")
    pm.add_hookspecs(hookspecs)
    infos: dict[str, PluginInfo] = {}

    entry_points, selection = _selected(_entry_points())
    candidates: list[tuple[str, str, str, str, Any]] = []  # name, dist, version, module, loader
    for ep in entry_points:
        dist = ep.dist.name if ep.dist else "<unknown>"
        version = ep.dist.version if ep.dist else ""
        candidates.append((ep.name, dist, version, ep.value, ep.load))
    for name, obj in _extra.items():
        candidates.append((name, "<runtime>", "", getattr(obj, "__name__", repr(obj)), lambda o=obj: o))

    # Built-ins first: a third party can add components but never shadow tracekit's own.
    candidates.sort(key=lambda c: c[1] != "tracekit")
    for name, dist, version, module, loader in candidates:
        info = PluginInfo(name=name, distribution=dist, version=version, module=module)
        infos.setdefault(name, info)
        if infos[name] is not info:
            info.name = f"{dist}:{name}"
            infos[info.name] = info
        try:
            pm.register(loader(), name=info.name)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a broken plugin (even one calling sys.exit) must not take the others down
            info.error = f"{type(exc).__name__}: {exc}"

    def failed_here() -> list[PluginInfo]:  # read when a name is unknown: errors recorded below count
        return [p for p in _listed(infos) if p.error is not None]

    registries: dict[str, Registry] = {}
    for kind in KINDS:  # each resolves nested specs against the others and names this load's failed plugins
        registries[kind] = Registry(kind, registries=registries, failed=failed_here)
    for kind, hook_name in hookspecs.HOOK_OF_KIND.items():
        impls = getattr(pm.hook, hook_name).get_hookimpls()
        for impl in sorted(impls, key=lambda i: infos[i.plugin_name].distribution != "tracekit"):
            info = infos[impl.plugin_name]
            registry = registries[kind]

            def register(name: str, factory: Any, _info: PluginInfo = info, _reg: Registry = registry) -> None:
                try:
                    _reg.register(name, factory, source=_info.distribution)
                except PluginError as exc:  # refused, recorded; the plugin's other components stay
                    _info.error = f"{_info.error}; {exc}" if _info.error else str(exc)
                    return
                _info.components.setdefault(_reg.kind, []).append(name)

            try:
                impl.function(register=register)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                info.error = f"{hook_name}: {type(exc).__name__}: {exc}"
    return _State(pm, registries, _listed(infos), selection)


def _listed(infos: dict[str, PluginInfo]) -> list[PluginInfo]:
    return sorted(infos.values(), key=lambda i: (i.distribution, i.name))


def _get() -> _State:
    global _state
    with _lock:
        if _state is None:
            _state = _load()
        return _state


def registry(kind: str) -> Registry:
    """The registry of one kind (model, dataset, attack, saliency, score, detector)."""
    if kind not in KINDS:
        from .errors import TracekitError, did_you_mean

        raise TracekitError(f"unknown component kind '{kind}'{did_you_mean(kind, KINDS)}")
    return _get().registries[kind]


def plugins() -> list[PluginInfo]:
    """Every plugin found, with its distribution, what it registered, and its error if any."""
    return list(_get().plugins)


def failed() -> list[PluginInfo]:
    """The plugins that failed to load (or whose hook raised)."""
    return [p for p in plugins() if p.error is not None]


def failure_note() -> str:
    """One line about failed plugins (empty when none failed)."""
    return failed_plugins_note(failed())


def selection_note() -> str:
    """One line naming the installed plugins that `TRACEKIT_LOAD_PLUGINS` leaves out (empty when none)."""
    return _get().selection


def register_plugin(plugin: Any, name: str) -> None:
    """Register a plugin object at run time (for tests and notebooks) and reload registries."""
    _extra[name] = plugin
    reload()


def unregister_plugin(name: str) -> None:
    """Remove a plugin added with `register_plugin` and reload registries."""
    _extra.pop(name, None)
    reload()


def reload() -> None:
    """Forget loaded plugins; the next lookup scans entry points again."""
    global _state
    with _lock:
        _state = None
    distribution_versions.cache_clear()


@functools.lru_cache(maxsize=None)
def distribution_versions() -> dict[str, str]:
    """`{distribution: version}` of every plugin distribution that loaded."""
    return {p.distribution: p.version for p in plugins() if p.error is None}
