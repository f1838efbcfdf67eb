"""The plugin's factories, each registered under its name by the decorator above it: each one's
parameters (its signature, checked when a spec loads) and summary (its docstring's first line).
Light: a factory imports its implementation (torch) in its body, so that `tracekit validate` and
`tracekit plugins` never import torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tracekit.hookspecs import Components

if TYPE_CHECKING:
    from .gradcam import GradCam
    from .spread import CamSpread

saliency, scores = Components("saliency"), Components("score")


@saliency.register("grad-cam")
def grad_cam(layer: str | None = None) -> GradCam:
    """Grad-CAM (Selvaraju et al.) at `layer` (default: the last feature map), upsampled."""
    from .gradcam import GradCam

    return GradCam(layer)


@scores.register("cam-spread")
def cam_spread() -> CamSpread:
    """Normalized entropy of the map's mass over pixels: 0 = one pixel, 1 = uniform."""
    from .spread import CamSpread

    return CamSpread()
