"""tracekit: trace and detect adversarial attacks through feature response maps.

The stable Python API: `load_spec`, `run`, `create(kind, name, **params)`, `available(kind)`,
`compare`, `rebuild_report(run_dir)`, `explain(images)` and `detect(run_dir, images)`.
`import tracekit` is light; torch, ART and friends load when a component is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import TracekitError
from .plugins import hookimpl
from .version import __version__

if TYPE_CHECKING:
    from .engine.compare import CompareResult
    from .engine.run import RunResult
    from .spec import Spec


def create(kind: str, name: str, **params: Any) -> Any:
    """Build the component `name` of `kind` with `params` (validated against its signature)."""
    from .plugins import registry

    return registry(kind).create(name, **params)


def available(kind: str, pattern: str = "*") -> list[str]:
    """Names of the installed components of `kind` matching a shell-style `pattern`."""
    from .plugins import registry

    return registry(kind).names(pattern)


def load_spec(path: Any, overrides: list[str] | None = None) -> Spec:
    """Load, override (`a.b=value`) and fully validate a run spec."""
    from .spec import load_spec as _load

    return _load(path, overrides or [])


def run(
    spec: Any, out: Any = None, device: str | None = None, use_cache: bool = True, threads: int | None = None
) -> RunResult:
    """Run a detection spec (a `Spec`, a path, or a dict) and write its run directory, report
    included. `threads` (torch's CPU threads) overrides the spec's `threads:`."""
    from .engine.run import run as _run
    from .report import write_report

    return _run(spec, out=out, device=device, use_cache=use_cache, finish=write_report, threads=threads)


def compare(
    spec: Any, out: Any = None, device: str | None = None, use_cache: bool = True, threads: int | None = None
) -> CompareResult:
    """Evaluate every detector of a comparison spec on the same images; write its run directory,
    report included. `threads` (torch's CPU threads) overrides the spec's `threads:`."""
    from .engine.compare import compare as _compare
    from .report import write_report

    return _compare(spec, out=out, device=device, use_cache=use_cache, finish=write_report, threads=threads)


def rebuild_report(run_dir: Any) -> Any:
    """Rebuild the figures and `report.html` of a finished run (or comparison) from its directory."""
    from .report import write_report

    return write_report(run_dir)


def explain(
    images: Any,
    model: Any = None,
    out: Any = None,
    device: str | None = None,
    detector: str | None = None,
    threads: int | None = None,
    trust_code: bool = False,
) -> list[dict[str, Any]]:
    """Predicted class, score and a panel PNG (image, feature response, its score's map) per image.

    `model`: None (the embedded digits-cnn with the feature-response detector), a run directory
    (a comparison's: with `detector`, a label) or a spec. Images: paths, PIL images, or
    tensors/arrays `[C,H,W]`/`[N,C,H,W]` in [0, 1]. `trust_code`: as `detect`'s.
    """
    from .explaining import explain as _explain

    return _explain(
        images, model=model, out=out, device=device, detector=detector, threads=threads, trust_code=trust_code
    )


def detect(
    run_dir: Any,
    images: Any,
    device: str | None = None,
    detector: str | None = None,
    threads: int | None = None,
    trust_code: bool = False,
) -> list[dict[str, Any]]:
    """Score images with a finished run's model, detector and calibrated threshold (one dict each);
    for a comparison's directory, with its detector labelled `detector`. `threads`: torch's CPU
    threads (default auto). `trust_code`: import the Python code the run's model names
    (`checkpoint` with `source: python`), only for run directories you trust."""
    from .detecting import detect as _detect

    return _detect(run_dir, images, device=device, detector=detector, threads=threads, trust_code=trust_code)


def export(
    run_dir: Any,
    out: Any,
    attack: str | None = None,
    fmt: str = "npz",
    device: str | None = None,
    trust_code: bool = False,
) -> Any:
    """Write a finished run's adversarials (with originals, perturbations and `index.csv`) into
    `out` as `npz` arrays or 8-bit `png` files; `attack`: only the one with this label."""
    from .exporting import export as _export

    return _export(run_dir, out, attack, fmt, device, trust_code)


def read_tables(run_dir: Any) -> dict[str, Any]:
    """A finished run's per-sample tables as pandas DataFrames, named by attack and detector label
    (`attack/fgsm`, `scores/paper/fgsm`, `clean`); needs `pip install 'tracekit[pandas]'`."""
    from .frames import read_tables as _read

    return _read(run_dir)


__all__ = [
    "TracekitError",
    "available",
    "compare",
    "create",
    "detect",
    "explain",
    "export",
    "hookimpl",
    "load_spec",
    "read_tables",
    "rebuild_report",
    "run",
    "__version__",
]
