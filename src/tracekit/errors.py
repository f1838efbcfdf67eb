"""Errors tracekit raises for bad input.

Every `TracekitError` is the user's to fix: the CLI prints its message on one line and exits
with code 2, never a traceback. Anything else that escapes is a bug (exit code 1).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TracekitError(Exception):
    """Bad input: a spec, a path, a component name or an option. Exit code 2."""


class SpecError(TracekitError):
    """The spec (YAML, structure, values or `--set` overrides) is invalid."""


class UnknownComponentError(TracekitError):
    """A component name that no installed plugin registers."""


class PluginError(TracekitError):
    """A plugin registered something invalid (for example a duplicate name)."""


class PluginFault(Exception):
    """A plugin's component raised what no component may (`SystemExit`, `GeneratorExit`, another
    `BaseException`), carried as an ordinary exception (out of a Ray worker, say); the message
    names the plugin. The plugin's bug: exit code 1."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during long work; the message says what was kept and how to resume."""


def closest(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """The known names closest to `name` (case-insensitive), best first."""
    known = list(known)
    lowered = {k.lower(): k for k in known}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[h] for h in hits]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """` (did you mean 'x' or 'y'?)`, or a list of the known names when none is close."""
    known = sorted(known)
    hits = closest(name, known)
    if hits:
        return " (did you mean " + " or ".join(f"'{h}'" for h in hits) + "?)"
    if not known:
        return ""
    shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
    return f" (known: {shown})"
