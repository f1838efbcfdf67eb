"""The run spec: one YAML file, validated completely before any work starts.

Loading goes YAML (safe loader) -> `--set` overrides -> structure (pydantic, extra keys
forbidden) -> every component resolved against its registry (unknown names and parameters
rejected with the closest known ones, defaults filled in). The result is a `Spec` whose
`model_dump()` is the resolved spec written to `spec.resolved.yaml`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr

from .bounded import MAX_SPEC_BYTES, load_yaml, read_text, short
from .compute import Compute
from .errors import SpecError, TracekitError, closest

Component = dict[str, Any]
DEFAULT_DETECTOR = "feature-response"


def component_label(component: Mapping[str, Any]) -> str:
    """What a resolved component's results are keyed by: its `label`, else its `name`."""
    return str(component.get("label") or component["name"])


def check_device(value: str) -> str:
    """`value` if it names a device tracekit runs on (auto, cpu, cuda, cuda:N), else ValueError.
    Apple's MPS backend has no float64, in which the gray conversion, the entropies and several
    detectors compute: refused up front rather than failing at the first score."""
    if value == "mps":
        raise ValueError(
            "device 'mps' is not supported: the gray conversion, the entropies and several detectors "
            "compute in float64, which Apple's MPS backend lacks; use cpu (auto picks it on a Mac)"
        )
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise ValueError(f"device is auto, cpu, cuda or cuda:N, got {value!r}")
    return value


def _batch_size(value: Any) -> int | str:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        return value
    raise ValueError(f"a positive number of images or 'auto', got {short(value)}")


def _threads(value: Any) -> int | str:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1024):
        return value
    raise ValueError(f"a number of CPU threads from 1 to 1024, or 'auto', got {short(value)}")


class Calibration(BaseModel):
    """How clean images are split and the detection threshold calibrated."""

    model_config = ConfigDict(extra="forbid")

    fit_fraction: float = Field(0.5, gt=0, lt=1)  # expected share of the fit part (a seeded hash of each id)
    target_fpr: float = Field(0.05, gt=0, lt=1)
    fit_images: int = Field(1000, ge=2, le=1_000_000)  # most fit images a learning detector is fitted on
    folds: int = Field(5, ge=2, le=20)  # cross-fitting folds: a learning detector's own fit images' scores


class Evaluation(BaseModel):
    """Uncertainty of the reported metrics."""

    model_config = ConfigDict(extra="forbid")

    bootstrap: int = Field(1000, ge=0, le=100_000)  # resamples for confidence intervals; 0 = none
    confidence: float = Field(0.95, gt=0, lt=1)
    transfer: bool = True  # learned detectors: fit on one attack, test on each other


class Spec(BaseModel):
    """A detection run (`detector`) or a comparison (`detectors`)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    seed: int = Field(0, ge=0, le=2**63 - 1)  # torch takes 64-bit seeds
    device: Annotated[str, AfterValidator(check_device)] = "auto"
    model: Component
    data: Component
    attacks: list[Component] = Field(min_length=1)
    detector: Component | None = None
    detectors: list[Component] | None = Field(None, min_length=1)
    calibration: Calibration = Calibration()
    evaluation: Evaluation = Evaluation()
    controls: list[Literal["noise", "randomized-model"]] = []
    batch_size: Annotated[int | str, BeforeValidator(_batch_size)] = 128  # or auto: the largest that fits the GPU
    compute: Compute = Compute()  # precision, channels_last, cudnn_benchmark (tracekit.compute)
    # torch's CPU threads; auto: OMP_NUM_THREADS if set, else the free cores (tracekit.threads)
    threads: Annotated[int | str, BeforeValidator(_threads)] = "auto"
    num_workers: int | None = Field(None, ge=0, le=64)  # image-decoding processes; None: chosen from the machine
    executor: Component = {"name": "local"}  # where per-image stages run: local, ray, or a plugin's
    provenance: dict[str, Any] | None = None  # written by `run`; ignored on input
    _source: str = PrivateAttr("spec")  # where it was read from, for later errors
    _threads_chosen: dict[str, Any] | None = PrivateAttr(None)  # how `threads` was resolved (provenance)

    @property
    def source(self) -> str:
        """The spec file (or "spec") it was validated from."""
        return self._source

    @property
    def threads_chosen(self) -> dict[str, Any] | None:
        """How `threads` was resolved (`tracekit.threads.Choice.record`), once `choose_threads` ran."""
        return self._threads_chosen

    def choose_threads(self, override: int | None = None) -> int:
        """Resolve `threads` to a number (`auto`: from the machine; `override`, e.g. `--threads`,
        wins) and keep how it was chosen for the provenance."""
        from .threads import choose

        choice = choose(self.threads, override)
        self.threads, self._threads_chosen = choice.threads, choice.record()
        return choice.threads

    def attack_key(self, index: int) -> str:
        """The name results of attack `index` are keyed by (its `label`, else its `name`)."""
        return component_label(self.attacks[index])

    def detector_key(self, index: int) -> str:
        return component_label((self.detectors or [])[index])


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (YAML lets the last win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice in one mapping; keep one", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(path: Path) -> dict[str, Any]:
    """Read a spec file with the safe loader; errors name the file and line."""
    path = Path(path)
    if not path.exists():
        raise SpecError(f"spec file {path} does not exist; check the path (examples/quickstart.yaml is one)")
    if path.is_dir():
        raise SpecError(f"{path} is a directory, not a spec file")
    text = read_text(path, "a spec", MAX_SPEC_BYTES)
    try:
        data = load_yaml(text, _UniqueKeyLoader, str(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{path}{where}: invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise SpecError(
            f"{path}: a spec is a YAML mapping (name:, model:, data:, attacks:, ...), got {type(data).__name__}"
        )
    return data


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one `a.b.0.c=value` override in place; the value is parsed as YAML (types coerced)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise SpecError(f"--set {assignment!r}: expected KEY=VALUE, e.g. --set attacks.0.eps=0.05")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    node: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        here = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not re.fullmatch(r"-?\d+", part):
                raise SpecError(
                    f"--set {key}: '{'.'.join(parts[:depth])}' is a list; use an index like {here.rsplit('.', 1)[0]}.0"
                )
            index = int(part)
            if not -len(node) <= index < len(node):
                raise SpecError(
                    f"--set {key}: index {index} out of range ('{'.'.join(parts[:depth])}' has {len(node)} items)"
                )
            if last:
                node[index] = value
            node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if part not in node or node[part] is None:
                    _check_known_field(key, parts[: depth + 1])
                    node[part] = {}
                node = node[part]
        else:
            raise SpecError(f"--set {key}: '{'.'.join(parts[:depth])}' is a value, not a mapping or list")


def _check_known_field(key: str, parts: list[str]) -> None:
    """A missing intermediate may only be created where the spec has such a field."""
    if len(parts) == 1 and parts[0] not in Spec.model_fields:
        hint = closest(parts[0], Spec.model_fields)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise SpecError(f"--set {key}: the spec has no field '{parts[0]}'{suggestion}")


def validate_spec(data: Mapping[str, Any], source: str = "spec") -> Spec:
    """Structure, then components: the fully validated `Spec` or one `SpecError`."""
    try:
        spec = Spec.model_validate(dict(data))
    except pydantic.ValidationError as exc:  # the components' errors too, all in one message
        problems = [_structure_error(exc), *map(str, _component_problems(data))]
        raise SpecError(f"{source}: " + "; ".join(problems)) from None
    spec = _resolve_components(spec, source)
    spec._source = source
    return spec


def _structure_error(exc: pydantic.ValidationError) -> str:
    messages = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parent = _model_at(err["loc"][:-1])
            hint = closest(str(err["loc"][-1]), parent.model_fields) if parent else []
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            messages.append(f"{loc}: unknown key{suggestion}")
        elif err["type"] == "missing":
            messages.append(f"{loc}: required key is missing")
        elif err["type"] == "value_error":  # our validators' own words, which quote the value
            messages.append(f"{loc}: {err['ctx']['error']}")
        else:
            messages.append(f"{loc}: {err['msg']} (got {short(err.get('input'))})")
    return "; ".join(messages)


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = Spec
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _resolve_components(spec: Spec, source: str) -> Spec:
    """Resolve every component; report all their errors together, in spec order."""
    if spec.detector is None and spec.detectors is None:
        spec.detector = {}
    if isinstance(spec.detector, dict) and "name" not in spec.detector:  # none, or --set detector.score.size=5
        spec.detector = {"name": DEFAULT_DETECTOR, **spec.detector}
    if spec.detector is not None and spec.detectors is not None:
        raise SpecError(f"{source}: give either 'detector' (tracekit run) or 'detectors' (tracekit compare), not both")
    problems: list[TracekitError] = []
    fields = {name: getattr(spec, name) for name in ("model", "data", "attacks", "detector", "detectors", "executor")}
    for name, value in _resolve_fields(fields, problems).items():
        setattr(spec, name, value)
    if problems:  # one problem keeps its own type (e.g. UnknownComponentError)
        kind = type(problems[0]) if len(problems) == 1 else SpecError
        raise kind(f"{source}: " + "; ".join(map(str, problems)))
    attack_keys = [spec.attack_key(i) for i in range(len(spec.attacks))]
    if "clean" in attack_keys:
        raise SpecError(
            f"{source}: attacks.{attack_keys.index('clean')}: 'clean' names the clean images in scores.csv "
            "and the metrics; give this attack another `label:`"
        )
    _unique(source, "attacks", attack_keys)
    if spec.detectors is not None:
        _unique(source, "detectors", [spec.detector_key(i) for i in range(len(spec.detectors))])
    return spec


def _resolve_fields(fields: Mapping[str, Any], problems: list[TracekitError]) -> dict[str, Any]:
    """The component fields present in `fields` (a spec's, or a raw mapping's that failed its
    structure check) resolved against their registries; each error goes to `problems`."""
    from .plugins import registry

    def resolve(kind: str, component: Any, where: str) -> Any:
        try:
            return registry(kind).resolve(component, where)
        except TracekitError as exc:
            problems.append(exc)
            return component

    out: dict[str, Any] = {}
    if "model" in fields:
        out["model"] = resolve("model", fields["model"], "model")
    if "data" in fields:
        try:
            out["data"] = _resolve_data(fields["data"], resolve)
        except TracekitError as exc:
            problems.append(exc)
    if isinstance(fields.get("attacks"), list):
        out["attacks"] = [resolve("attack", a, f"attacks.{i}") for i, a in enumerate(fields["attacks"])]
    if fields.get("detector") is not None:
        out["detector"] = resolve("detector", fields["detector"], "detector")
    if isinstance(fields.get("detectors"), list):
        out["detectors"] = [resolve("detector", d, f"detectors.{i}") for i, d in enumerate(fields["detectors"])]
    executor = fields.get("executor")
    if executor is not None:
        out["executor"] = resolve(
            "executor", {"name": "local", **executor} if isinstance(executor, Mapping) else executor, "executor"
        )
    return out


def _component_problems(data: Mapping[str, Any]) -> list[TracekitError]:
    """The component errors of a raw spec whose structure is wrong (so that all come at once)."""
    problems: list[TracekitError] = []
    fields = dict(data) if isinstance(data, Mapping) else {}
    if isinstance(fields.get("detector"), Mapping) and "name" not in fields["detector"]:
        fields["detector"] = {"name": DEFAULT_DETECTOR, **fields["detector"]}
    _resolve_fields(fields, problems)
    return problems


LABELS = ("dataset", "predicted")


def _resolve_data(data: Component, resolve: Any) -> Component:
    """The dataset component plus the engine's `labels:` option (any dataset): `dataset` (its own
    labels, the default) or `predicted` (the model's clean prediction is the label)."""
    if not isinstance(data, Mapping) or "labels" not in data:
        return resolve("dataset", data, "data")
    labels = data["labels"]
    if labels not in LABELS:
        raise SpecError(f"data.labels: expected one of {', '.join(LABELS)}, got {short(labels)}")
    resolved = resolve("dataset", {k: v for k, v in data.items() if k != "labels"}, "data")
    return {**resolved, "labels": labels}


def _unique(source: str, field: str, keys: list[str]) -> None:
    seen: set[str] = set()
    for i, key in enumerate(keys):
        if key in seen:
            raise SpecError(f"{source}: {field}.{i}: '{key}' appears twice; give one of them a distinct `label:`")
        seen.add(key)


def load_spec(path: str | Path, overrides: list[str] | None = None) -> Spec:
    """Read, override and validate the spec at `path`."""
    if isinstance(overrides, str):
        raise TypeError(f"overrides is a list of 'KEY=VALUE' strings, e.g. [{overrides!r}], not one string")
    data = parse_yaml(Path(path))
    for assignment in overrides or []:
        apply_override(data, assignment)
    from .plugins import failure_note

    note = failure_note()
    if note:
        warnings.warn(note, stacklevel=2)
    shown = " ".join(o if len(o) <= 60 else f"{o[:57]}..." for o in overrides or [])
    source = str(path) if not overrides else f"{path} (with --set {shown})"
    return validate_spec(data, source=source)


def dump_spec(spec: Spec) -> str:
    """The resolved spec as YAML (loadable again by `load_spec`)."""
    return yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False)
