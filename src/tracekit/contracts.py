"""What a built component must be: its kind's Protocol, and all of each optional capability it claims.

`Registry.create` checks every object a factory builds here, so that a broken plugin is reported
where its component is made, naming what it lacks, and never surfaces as an `AttributeError`
deep in a run. A capability is claimed by having any of its own members; claiming one half-way
(`needs_detector = True` without `bind`, a `map` that is not callable) is refused, because the
engine would take the half for the whole (it tests capabilities with `isinstance`).

This module imports torch (through `tracekit.protocols`): the registry imports it only when it
builds a component, so that listing and validating stay light.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Generic, Protocol

from . import protocols
from .errors import PluginError
from .executing import Executor

if TYPE_CHECKING:
    from .registry import Entry

DOCS = "docs/plugins.md"

# kind -> (what a built component must be, the optional capabilities it may claim)
CONTRACTS: dict[str, tuple[type, tuple[type, ...]]] = {
    "model": (protocols.LoadedModel, ()),
    "dataset": (protocols.Dataset, (protocols.RandomAccessDataset,)),
    "attack": (
        protocols.Attack,
        (
            protocols.PerImageAttack,
            protocols.InputChecked,
            protocols.DetectorBound,
            protocols.SeededAttack,
            protocols.CacheKeyed,
            protocols.ModelChecked,
        ),
    ),
    "saliency": (protocols.Saliency, (protocols.ModelChecked, protocols.DifferentiableMaps)),
    "score": (protocols.Score, (protocols.ScoreMap, protocols.DifferentiableMapScore)),
    "detector": (
        protocols.Detector,
        (protocols.MapsDetector, protocols.StatefulDetector, protocols.ModelChecked, protocols.DifferentiableScore),
    ),
    "executor": (Executor, ()),
}


def members(protocol: type) -> dict[str, bool]:
    """A Protocol's members, base classes' first: `{name: is_method}`. They are the annotated
    attributes and the functions written in each class's body (`__len__` included; typing's own
    `__init__` and `__subclasshook__`, which it puts in a protocol's `__dict__`, are not)."""
    found: dict[str, bool] = {}
    for cls in reversed(protocol.__mro__):
        if cls in (Protocol, Generic, object):
            continue
        found.update(dict.fromkeys(inspect.get_annotations(cls), False))
        for name, value in vars(cls).items():
            private = name.startswith("_") and not name.endswith("__")
            if inspect.isfunction(value) and value.__qualname__ == f"{cls.__qualname__}.{name}" and not private:
                found[name] = True
    return found


def problems(obj: Any, wanted: dict[str, bool]) -> list[str]:
    """What `obj` lacks of the members `wanted` (`lacks info and score()`) and which of its
    methods are not callable (`its map is not callable`)."""
    present = [name for name in wanted if hasattr(obj, name)]
    missing = [f"{name}()" if method else name for name, method in wanted.items() if name not in present]
    inert = [name for name in present if wanted[name] and not callable(getattr(obj, name))]
    said = [f"it lacks {_listed(missing)}"] if missing else []
    said += [f"its {name} is not callable" for name in inert]
    return said


def check(entry: Entry, obj: Any) -> None:
    """Refuse `obj`, built by the factory of `entry`, unless it is what its kind's Protocol asks
    and claims each optional capability fully or not at all."""
    expected, capabilities = CONTRACTS[entry.kind]
    type_name = type(obj).__name__
    built = "None" if obj is None else f"{'an' if type_name[0].lower() in 'aeiou' else 'a'} {type_name}"
    where = f"{entry.kind} '{entry.name}' (from {entry.source}) built {built}"
    if Protocol not in expected.__mro__:
        if not isinstance(obj, expected):
            raise PluginError(
                f"{where}, which is not a tracekit {expected.__name__} (a {entry.kind} factory returns a "
                f"{expected.__module__}.{expected.__name__}); see {DOCS}"
            )
        return
    base = members(expected)
    said = problems(obj, base)
    if said:
        raise PluginError(f"{where}, which is not a tracekit {expected.__name__}: {'; '.join(said)}; see {DOCS}")
    for capability in capabilities:
        own = {m: method for m, method in members(capability).items() if m not in base}
        has = [m for m in own if hasattr(obj, m)]
        said = problems(obj, own)
        if has and said:
            raise PluginError(
                f"{where}, which claims the optional capability {capability.__name__} half-way "
                f"(it has {_listed(has)}): {'; '.join(said)}; see {DOCS}"
            )


def _listed(names: list[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
