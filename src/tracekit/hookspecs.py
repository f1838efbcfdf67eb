"""Every hook a tracekit plugin can implement.

A plugin is any module or object with functions marked `@tracekit.hookimpl`, exposed through
the entry-point group `tracekit` in its distribution's metadata::

    [project.entry-points.tracekit]
    gradcam = "tracekit_gradcam"

Each hook receives a `register(name, factory)` callback. A factory is a plain function or class
whose keyword parameters (annotated, with defaults) are the component's parameters; tracekit
validates spec entries against them before any work starts. The Protocol each built object
must follow is in `tracekit.protocols` (checked when it is built, `tracekit.contracts`).
tracekit's own built-ins use exactly these hooks, registering their factories where they are
defined with `Components`::

    scores = Components("score")

    @scores.register("peak")
    def peak(scale: float = 1.0) -> Peak: ...

    @tracekit.hookimpl
    def tracekit_register_scores(register):
        scores.into(register)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pluggy

hookspec = pluggy.HookspecMarker("tracekit")

Register = Callable[[str, Callable[..., Any]], None]
Factory = TypeVar("Factory", bound=Callable[..., Any])


class Components:
    """The factories of one kind that a module defines, each named by a decorator above it
    (`@scores.register("peak")`), so that adding a component touches the module that defines its
    factory and nothing else; the kind's hook hands them all to tracekit with `scores.into(register)`."""

    def __init__(self, kind: str) -> None:
        if kind not in HOOK_OF_KIND:
            raise ValueError(f"unknown kind {kind!r}; kinds are {', '.join(HOOK_OF_KIND)}")
        self.kind = kind
        self._factories: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Factory], Factory]:
        """A decorator adding its factory under `name`; it returns the factory unchanged (its
        signature is the component's parameter schema)."""

        def add(factory: Factory) -> Factory:
            if name in self._factories:
                raise ValueError(f"{self.kind} '{name}' is registered twice in {factory.__module__}")
            self._factories[name] = factory
            return factory

        return add

    def into(self, register: Register) -> None:
        """Register every factory collected, in the order they were defined, with a hook's `register`."""
        for name, factory in self._factories.items():
            register(name, factory)


@hookspec
def tracekit_register_models(register: Register) -> None:
    """Register model loaders: factories returning a `tracekit.protocols.LoadedModel`."""


@hookspec
def tracekit_register_datasets(register: Register) -> None:
    """Register datasets: factories returning a `tracekit.protocols.Dataset`."""


@hookspec
def tracekit_register_attacks(register: Register) -> None:
    """Register attacks: factories returning a `tracekit.protocols.Attack`."""


@hookspec
def tracekit_register_saliency(register: Register) -> None:
    """Register saliency methods: factories returning a `tracekit.protocols.Saliency`."""


@hookspec
def tracekit_register_scores(register: Register) -> None:
    """Register scores: factories returning a `tracekit.protocols.Score`."""


@hookspec
def tracekit_register_detectors(register: Register) -> None:
    """Register detectors: factories returning a `tracekit.protocols.Detector`."""


@hookspec
def tracekit_register_executors(register: Register) -> None:
    """Register executors: factories returning a `tracekit.executing.Executor` (where a run's
    per-image stages happen: `local`, `ray`, or a third party's, say SLURM or Dask)."""


HOOK_OF_KIND: dict[str, str] = {
    "model": "tracekit_register_models",
    "dataset": "tracekit_register_datasets",
    "attack": "tracekit_register_attacks",
    "saliency": "tracekit_register_saliency",
    "score": "tracekit_register_scores",
    "detector": "tracekit_register_detectors",
    "executor": "tracekit_register_executors",
}
