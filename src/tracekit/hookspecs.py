"""Every hook a tracekit plugin can implement.

A plugin is any module or object with functions marked `@tracekit.hookimpl`, exposed through
the entry-point group `tracekit` in its distribution's metadata::

    [project.entry-points.tracekit]
    gradcam = "tracekit_gradcam"

Each hook receives a `register(name, factory)` callback. A factory is a plain function or class
whose keyword parameters (annotated, with defaults) are the component's parameters; tracekit
validates spec entries against them before any work starts. The Protocol each built object
must follow is in `tracekit.protocols`. tracekit's own built-ins use exactly these hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("tracekit")

Register = Callable[[str, Callable[..., Any]], None]


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
    """Register executors: factories returning a `tracekit.protocols.Executor` (where a run's
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
