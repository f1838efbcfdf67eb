"""Grad-CAM (Selvaraju et al. 2017) as a tracekit saliency method.

For a convolutional layer with activations `A[k]` (shape `[N,K,h,w]`) and the target logit
`y`, the channel weights are the spatially averaged gradients `w_k = mean_{i,j} dy/dA[k,i,j]`
and the map is `ReLU(sum_k w_k A[k])`, upsampled to the input size with bilinear
interpolation (`align_corners=False`). This equals Captum's `LayerGradCam(...,
relu_attributions=True)` followed by `LayerAttribution.interpolate(..., "bilinear")`.

The layer is a module name from `model.named_modules()` (e.g. `features.34` for torchvision's
VGG19; tracekit's folded normalization may add a prefix, which the error for an unknown name
suggests). By default it is the model's last spatial feature map: the last module, in forward
order, that runs once and outputs `[N,K,h,w]` with `h*w > 1` (VGG: `avgpool`, ResNet: `layer4`),
found by a forward pass on one image. That is the rectified output of the last convolutional
stage, which Grad-CAM uses: the raw output of the last `nn.Conv2d` (before its ReLU) can make
`sum_k w_k A[k]` negative everywhere (on tracekit's `digits-cnn` it does for 9 in 10 clean test
images, whose maps are then all zero). The maps have one channel,
`[N,1,H,W]`, non-negative: Grad-CAM has no colour channels, and tracekit's gray conversion
(sum of absolute channel values) reads one channel as is; broadcast with `maps.expand(-1, C,
-1, -1)` where a picture needs C channels.

A forward hook on the layer records its output and hands on a copy (so later in-place
operations, e.g. `ReLU(inplace=True)`, leave the recorded activations intact); the hook is
removed whatever happens, and gradients come from `torch.autograd.grad`, so the model, its
weights, hooks and parameters' `.grad` stay as they were.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tracekit.errors import TracekitError, did_you_mean
from tracekit.saliency import check_images, target_classes

METHOD = "grad-cam"


def last_feature_map(model: nn.Module, image: torch.Tensor) -> str:
    """Name of the last module, in forward order, that runs once and outputs `[N,K,h,w]`, h*w > 1."""
    calls: list[tuple[str, bool]] = []
    handles = [
        module.register_forward_hook(
            lambda m, i, out, name=name: calls.append(
                (name, isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[2] * out.shape[3] > 1)
            )
        )
        for name, module in model.named_modules()
        if name
    ]
    try:
        with torch.no_grad():
            model(image.detach().clone())
    finally:
        for handle in handles:
            handle.remove()
    runs = Counter(name for name, _ in calls)
    spatial = [name for name, is_map in calls if is_map and runs[name] == 1]
    if not spatial:
        raise TracekitError(
            f"{METHOD}: no layer of {type(model).__name__} outputs a spatial feature map [N, K, h, w]; "
            "name a convolutional layer in the saliency's `layer` parameter"
        )
    return spatial[-1]


def find_layer(model: nn.Module, name: str | None, image: torch.Tensor) -> tuple[str, nn.Module]:
    """The module called `name` in `model`, or its last feature map's module when None."""
    modules = dict(model.named_modules())
    if name is None:
        name = last_feature_map(model, image)
    if name not in modules or not name:
        raise TracekitError(
            f"{METHOD}: {type(model).__name__} has no layer '{name}'"
            f"{did_you_mean(name, [n for n in modules if n])}; `layer` takes a module name "
            "from model.named_modules()"
        )
    return name, modules[name]


class GradCam:
    """Grad-CAM maps `[N,1,H,W]` of a classifier's logits at one convolutional layer."""

    def __init__(self, layer: str | None = None) -> None:
        self.layer = layer

    def maps(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """Maps `[N,1,H,W]` (detached, >= 0) for class `target[i]` of image i; None = predicted class."""
        check_images(images, METHOD)
        name, layer = find_layer(model, self.layer, images[:1])
        outputs: list[Any] = []

        def record(module: nn.Module, inputs: Any, output: Any) -> Any:
            outputs.append(output)
            return output.clone() if isinstance(output, torch.Tensor) else output

        with torch.inference_mode(False), torch.enable_grad():
            x = images.detach().clone().requires_grad_(True)  # a graph even if the weights are frozen
            handle = layer.register_forward_hook(record)
            try:
                logits = model(x.clone())
            finally:
                handle.remove()
            activations = _single_activation(outputs, name)
            target = target_classes(logits, target, METHOD, type(model).__name__)
            (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), activations, allow_unused=True)
        if grad is None:
            raise TracekitError(f"{METHOD}: layer '{name}' does not influence the logits; choose a layer on their path")
        weights = grad.mean(dim=(2, 3), keepdim=True)
        cam = (weights * activations.detach()).sum(dim=1, keepdim=True).clamp(min=0)
        return F.interpolate(cam, size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False)


def _single_activation(outputs: list[Any], name: str) -> torch.Tensor:
    """The layer's one output of the forward pass, checked to be a `[N,K,h,w]` tensor."""
    if len(outputs) != 1:
        raise TracekitError(
            f"{METHOD}: layer '{name}' ran {len(outputs)} times in one forward pass; Grad-CAM needs a "
            "layer that runs exactly once"
        )
    (output,) = outputs
    if not isinstance(output, torch.Tensor) or output.ndim != 4:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise TracekitError(
            f"{METHOD}: layer '{name}' outputs {shape}; Grad-CAM needs a convolutional layer with [N, K, h, w] outputs"
        )
    return output
