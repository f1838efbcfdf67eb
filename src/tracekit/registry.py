"""One generic registry for every component kind.

A registry maps names to factories. A factory is a plain function (or class) whose keyword
parameters, with their type annotations and defaults, *are* the component's parameter schema:
`params_model` turns the signature into a pydantic model (extra keys forbidden), so a spec is
checked against the component before any work starts. Factories import heavy libraries inside
their bodies, so listing and validating stays fast.

The plugin manager (`tracekit.plugins`) makes one registry per kind and hands each what only it
knows: the registries of the other kinds (against which a nested component spec is resolved,
`component_spec`) and the plugins that failed to load (which an unknown name's error names). This
module never imports the plugin manager.
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

import pydantic

from .bounded import short
from .errors import PluginError, SpecError, TracekitError, UnknownComponentError, closest, did_you_mean

KINDS: tuple[str, ...] = ("model", "dataset", "attack", "saliency", "score", "detector", "executor")

# Components of plugin distributions people are likely to name before installing them.
KNOWN_PLUGINS: dict[tuple[str, str], str] = {
    ("saliency", "grad-cam"): "tracekit-gradcam",
    ("score", "cam-spread"): "tracekit-gradcam",
}

# Keys of a component spec that are not parameters of the factory.
RESERVED_KEYS = ("name", "label")

# The validation context key under which `Registry.resolve` hands nested specs (`component_spec`)
# the registries to resolve them against.
_REGISTRIES = "tracekit.registries"


class FailedPlugin(Protocol):
    """A plugin that failed to load, as the plugin manager describes it (`tracekit.plugins.PluginInfo`)."""

    name: str
    distribution: str
    error: str | None


def failed_plugins_note(failed: Sequence[FailedPlugin]) -> str:
    """One line about the plugins that failed to load (empty when none did)."""
    if not failed:
        return ""
    names = ", ".join(f"{p.name} ({p.distribution})" for p in failed[:5]) + (", ..." if len(failed) > 5 else "")
    return f"{len(failed)} plugin(s) failed to load: {names}; `tracekit plugins` shows why"


def params_model(name: str, factory: Callable[..., Any]) -> type[pydantic.BaseModel]:
    """A pydantic model of `factory`'s keyword parameters (types, defaults, constraints)."""
    fields: dict[str, Any] = {}
    for pname, p in inspect.signature(factory).parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or pname in ("self", "cls"):
            continue
        annotation = Any if p.annotation is p.empty else _evaluated(p.annotation, factory)
        default = ... if p.default is p.empty else p.default
        fields[pname] = (annotation, default)
    model_name = "".join(part.capitalize() for part in name.replace("_", "-").split("-")) + "Params"
    return pydantic.create_model(
        model_name,
        __config__=pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=True, allow_inf_nan=False),
        **fields,
    )


def _evaluated(annotation: Any, factory: Callable[..., Any]) -> Any:
    """A parameter's annotation as an object (a string one, under `from __future__ import
    annotations`, evaluated in the factory's module). Only the parameters' are: a factory that
    imports its implementation in its body, so that listing and validating stay light, names its
    return type for type checkers alone (`if TYPE_CHECKING:`)."""
    if not isinstance(annotation, str):
        return annotation
    function = factory.func if isinstance(factory, functools.partial) else factory
    function = inspect.unwrap(typing.cast(Any, function).__init__ if isinstance(function, type) else function)
    return eval(annotation, getattr(function, "__globals__", {}))  # noqa: S307 (the factory's own source)


@dataclass(frozen=True)
class Entry:
    """One registered component."""

    kind: str
    name: str
    factory: Callable[..., Any]
    source: str  # distribution (or plugin) that registered it
    params: type[pydantic.BaseModel] = field(repr=False)

    @property
    def doc(self) -> str:
        """The factory's whole docstring (what its parameters mean)."""
        return inspect.getdoc(self.factory) or ""

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.factory) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""


class Registry:
    """Named factories of one kind: register, look up, list by pattern, create.

    `registries`: every kind's registry, this one's included, against which the nested component
    specs of its factories' parameters are resolved (`component_spec`); `failed`: the plugins that
    failed to load, asked when a name is unknown. The plugin manager gives both; a registry made
    alone knows no other kind and no failed plugin.
    """

    def __init__(
        self,
        kind: str,
        *,
        registries: Mapping[str, Registry] | None = None,
        failed: Callable[[], Sequence[FailedPlugin]] = lambda: (),
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; kinds are {', '.join(KINDS)}")
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._registries: Mapping[str, Registry] = {kind: self} if registries is None else registries
        self._failed = failed

    def register(self, name: str, factory: Callable[..., Any], *, source: str = "<local>") -> None:
        """Add `factory` under `name`; a name already taken is refused."""
        if name in self._entries:
            other = self._entries[name].source
            raise PluginError(
                f"{self.kind} '{name}' from {source} is already registered by {other}; "
                "rename one of them or uninstall the other plugin"
            )
        self._entries[name] = Entry(self.kind, name, factory, source, params_model(name, factory))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> Entry:
        """The entry called `name`, or an error naming the closest known names."""
        try:
            return self._entries[name]
        except KeyError:
            plugin = KNOWN_PLUGINS.get((self.kind, name))
            failed = self._failed()
            broken = [p for p in failed if plugin and p.distribution == plugin]
            if broken:
                raise UnknownComponentError(
                    f"unknown {self.kind} '{name}': it comes from the plugin '{plugin}', which is installed but failed "
                    f"to load ({str(broken[0].error)[:160]}); fix or reinstall it"
                ) from None
            if plugin:
                raise UnknownComponentError(
                    f"unknown {self.kind} '{name}': it comes from the plugin '{plugin}', which is not installed; "
                    f"install it (`pip install {plugin}`, or `pip install plugins/{plugin}` in a tracekit checkout)"
                ) from None
            note = failed_plugins_note(failed)
            raise UnknownComponentError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, self._entries)}; "
                + (
                    f"{note} (it may come from one of them)"
                    if note
                    else "`tracekit plugins` lists what is installed "
                    "(a plugin's components appear once it is installed)"
                )
            ) from None

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted names matching a shell-style pattern."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def resolve(self, spec: Mapping[str, Any], where: str = "") -> dict[str, Any]:
        """Validate a component spec `{name: ..., **params}`; return it with every default filled.

        Errors name the location (`where`), the bad key and the closest valid parameter.
        """
        if not isinstance(spec, Mapping):
            raise SpecError(f"{where or self.kind}: expected a mapping like {{name: ...}}, got {spec!r}")
        if "name" not in spec:
            raise SpecError(f"{where or self.kind}: missing 'name' (one of: {', '.join(self.names())})")
        try:
            entry = self.get(str(spec["name"]))
        except UnknownComponentError as exc:
            raise UnknownComponentError(f"{_at(where, 'name')}: {exc}") from None
        params = {k: v for k, v in spec.items() if k not in RESERVED_KEYS}
        booleans = [
            f"{_at(where, k)}: a number, not {str(v).lower()} (YAML reads true/false/yes/no/on/off as booleans)"
            for k, v in params.items()
            if isinstance(v, bool)
            and k in entry.params.model_fields
            and _number_type(entry.params.model_fields[k].annotation)
        ]
        if booleans:
            raise SpecError("; ".join(booleans))
        try:
            validated = entry.params.model_validate(params, context={_REGISTRIES: self._registries})
        except pydantic.ValidationError as exc:
            raise SpecError(_param_error(exc, entry, where)) from None
        out: dict[str, Any] = {"name": entry.name}
        if "label" in spec:
            out["label"] = _label(spec["label"], where)
        out.update(validated.model_dump(mode="python"))
        return out

    def create(self, name: str, **params: Any) -> Any:
        """Build the component `name` with validated `params`; what it builds is checked against
        its kind's Protocol here, where a broken plugin can be named (`tracekit.contracts`)."""
        from .contracts import check  # imports torch: building does anyway, listing and validating must not

        resolved = self.resolve({"name": name, **params}, where=f"{self.kind} '{name}'")
        resolved.pop("name")
        resolved.pop("label", None)
        entry = self.get(name)
        built = entry.factory(**resolved)
        check(entry, built)
        return built


def component_spec(kind: str, default: str) -> Any:
    """A parameter type for a nested component spec of `kind` (e.g. a detector's saliency),
    resolved against that kind's registry when the spec is validated (`Registry.resolve` hands it
    the registries), defaults filled in. A spec without `name` (say `--set detector.score.size=5`
    on a defaulted score) means `default`."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; kinds are {', '.join(KINDS)}")

    def resolve(value: dict[str, Any], info: pydantic.ValidationInfo) -> dict[str, Any]:
        registries = (info.context or {}).get(_REGISTRIES, {})
        if kind not in registries:
            raise ValueError(
                f"a nested {kind} spec is resolved by a registry that knows the {kind} registry "
                "(`tracekit.plugins.registry(kind).resolve`)"
            )
        if isinstance(value, Mapping) and "name" not in value:
            value = {"name": default, **value}
        try:
            return registries[kind].resolve(value)
        except TracekitError as exc:
            raise ValueError(str(exc)) from None

    return Annotated[dict[str, Any], pydantic.AfterValidator(resolve), pydantic.Field(validate_default=True)]


def _number_type(annotation: Any) -> bool:
    """Whether a parameter is an int or a float (optional or constrained), where pydantic would
    quietly read `true` as 1."""
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return len(members) == 1 and _number_type(members[0])
    return annotation in (int, float)


MAX_LABEL = 64  # characters: labels name figure files


def _label(label: Any, where: str) -> str:
    """A component's `label`: a non-empty one-line string, usable in file names."""
    if not isinstance(label, str) or not label.strip() or label != label.strip():
        raise SpecError(
            f"{_at(where, 'label')}: a label is a non-empty string without surrounding spaces, got {short(label)}"
        )
    if any(c in label for c in "/\\") or not label.isprintable():
        raise SpecError(f"{_at(where, 'label')}: {short(label)} has a slash or a control character; labels name files")
    if len(label) > MAX_LABEL:
        raise SpecError(
            f"{_at(where, 'label')}: {short(label, 40)} is longer than {MAX_LABEL} characters; labels name files"
        )
    return label


def _at(where: str, key: str) -> str:
    """`where.key`, or just `key` at the top (nested specs get their location from pydantic)."""
    return f"{where}.{key}" if where else key


def _param_error(exc: pydantic.ValidationError, entry: Entry, where: str) -> str:
    known = list(entry.params.model_fields)
    messages = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            key = str(err["loc"][-1])
            hint = closest(key, known)
            suggestion = f"did you mean '{hint[0]}'?" if hint else f"known: {', '.join(known) or 'none'}"
            messages.append(f"{_at(where, loc)}: unknown parameter of {entry.kind} '{entry.name}' ({suggestion})")
        elif err["type"] == "missing":
            messages.append(f"{_at(where, loc)}: required parameter of {entry.kind} '{entry.name}' is missing")
        elif err["type"] == "value_error":
            messages.append(f"{_at(where, loc)}: {err['ctx']['error']}")
        else:
            messages.append(f"{_at(where, loc)}: {err['msg']} (got {short(err.get('input'))})")
    return "; ".join(messages)
