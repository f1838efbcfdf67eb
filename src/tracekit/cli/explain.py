"""`tracekit explain IMAGE... [--model SPEC-or-RUN_DIR] [--out DIR]`: prediction, score and a
panel (image, feature response, local-entropy map) per image."""

from __future__ import annotations

from pathlib import Path

import typer

from .. import progress
from ..explaining import DEFAULT_OUT, explain
from .common import handle_errors
from .detect import DetectorOpt, DeviceOpt, ImagesArg, JsonOpt, ThreadsOpt, TrustCodeOpt, print_results


def register(app: typer.Typer) -> None:
    @app.command("explain")
    @handle_errors
    def explain_command(
        images: list[Path] = ImagesArg,
        model: str = typer.Option(
            None,
            "--model",
            metavar="SPEC | RUN_DIR",
            help="A spec file or a run (or comparison) directory (default: the embedded digits-cnn).",
            show_default=False,
        ),
        out: Path = typer.Option(DEFAULT_OUT, "--out", metavar="DIR", help="Directory for the panel PNGs."),
        device: str = DeviceOpt,
        threads: int = ThreadsOpt,
        detector: str = DetectorOpt,
        as_json: bool = JsonOpt,
        trust_code: bool = TrustCodeOpt,
    ) -> None:
        """Show what the network looks at: prediction, score and a feature-response panel per image."""
        progress.enable()
        results = explain(
            images, model=model, out=out, device=device, detector=detector, threads=threads, trust_code=trust_code
        )
        print_results(results, as_json, f"explain ({model or 'embedded digits-cnn'})")
