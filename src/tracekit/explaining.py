"""`tracekit.explain`: what the network looks at in single images.

For each image: the predicted class, the detector's score (and verdict, when the model comes
from a run directory with a calibrated threshold), and a panel PNG of the image, its feature
response (gray map) and the local-entropy map of that response.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import TracekitError, did_you_mean
from .spec import component_label

if TYPE_CHECKING:  # torch comes with them, imported where used: `tracekit --help` must not need it
    from .detecting import ScoringSetup

DEFAULT_MODEL: dict[str, Any] = {"name": "digits-cnn"}
DEFAULT_DETECTOR: dict[str, Any] = {"name": "feature-response"}
DEFAULT_OUT = Path("explain")


def load_setup(
    model: Any = None, device: str | None = None, detector: str | None = None, trust_code: bool = False
) -> ScoringSetup:
    """`model`: None (the embedded digits-cnn with the feature-response detector), a run
    directory (its model, fitted detector and threshold; a comparison's detector `detector`), or
    a spec (path, dict or `Spec`)."""
    from .detecting import build_setup, load_run, scoring_spec
    from .engine.device import resolve_device
    from .engine.run import as_spec

    if detector is not None and model is None:
        raise TracekitError("--detector picks a detector of a comparison (spec or directory); give one with --model")
    if model is None:
        spec = scoring_spec(DEFAULT_MODEL, DEFAULT_DETECTOR)
        return build_setup(spec, DEFAULT_DETECTOR, resolve_device(device or "auto"))
    if isinstance(model, (str, Path)):
        path = Path(model)
        if path.is_dir():
            return load_run(path, device, detector, trust_code)
        if not path.exists():
            raise TracekitError(f"model {str(model)!r}: no such spec file or run directory")
    spec = as_spec(model)
    return build_setup(spec, _spec_detector(spec, detector), resolve_device(device or spec.device))


def _spec_detector(spec: Any, label: str | None) -> dict[str, Any]:
    """The spec's `detector:`, or the one of its `detectors:` labelled `label`."""
    if spec.detector is not None:
        own = component_label(spec.detector)
        if label is not None and label != own:
            raise TracekitError(f"the spec has one detector, '{own}'; leave out --detector")
        return spec.detector
    labels = [spec.detector_key(i) for i in range(len(spec.detectors))]
    if label is None:
        raise TracekitError(
            f"the spec compares {len(labels)} detectors; pick one with --detector ({', '.join(labels)})"
        )
    if label not in labels:
        raise TracekitError(f"the spec has no detector '{label}'{did_you_mean(label, labels)}")
    return spec.detectors[labels.index(label)]


def explain(
    images: Any,
    model: Any = None,
    out: str | Path | None = None,
    device: str | None = None,
    detector: str | None = None,
    threads: int | None = None,
    trust_code: bool = False,
) -> list[dict[str, Any]]:
    """Predict, score and draw a panel for each of `images` (paths, PIL images, tensors/arrays).

    Returns one dict per image as `tracekit.detect` does, plus `panel` (the PNG written into
    `out`, default `./explain/`; None for unreadable inputs). `threads`: torch's CPU threads
    (default auto, `tracekit.threads`). `trust_code`: import the Python code a run directory's
    model names (as `tracekit.detect`).
    """
    from .threads import applied, choose

    with applied(choose(override=threads).threads):
        return _explain(images, model, out, device, detector, trust_code)


def _explain(
    images: Any, model: Any, out: str | Path | None, device: str | None, detector: str | None, trust_code: bool
) -> list[dict[str, Any]]:
    import torch

    from .engine.summary import map_title, pictures
    from .report.figures import Pictures, explain_panel, file_stem

    setup = load_setup(model, device, detector, trust_code)
    inputs = setup.inputs(images)
    results = setup.results(inputs)
    readable = [(item, row) for item, row in zip(inputs, results) if item.image is not None]
    out_dir = Path(out) if out is not None else DEFAULT_OUT
    taken: set[str] = set()
    if readable:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TracekitError(f"cannot create the output directory {out_dir}: {exc.strerror}") from None
        images = torch.stack([item.image for item, _ in readable])
        drawn = pictures(setup.detector, setup.model.module, images, setup.device)
        shown = None if drawn is None else Pictures(drawn[0], drawn[1], map_title(setup.detector_cfg))
        for i, (item, row) in enumerate(readable):
            path = out_dir / f"{file_stem(Path(item.name).stem, taken)}.explain.png"
            explain_panel(path, item.image.numpy(), None if shown is None else shown.part(slice(i, i + 1)), row)
            row["panel"] = str(path)
    for row in results:
        row.setdefault("panel", None)
    return results
