"""Guided backpropagation (Springenberg et al. 2015), the paper's feature response map.

The map is the gradient of the target class's logit with respect to the input pixels, where
every ReLU's backward pass lets through only positive gradients where its input was positive:
`grad_in = relu(grad_out) * (x > 0)`. It agrees with Captum's `GuidedBackprop` wherever Captum
sees every ReLU.

How: the forward pass runs as it is; then the autograd graph of the target logits is walked,
and the backward node of every ReLU in it (`ReluBackward0`, whatever spelling made it) gets a
hook that lets only positive values through (the node's native backward applies the `x > 0`
mask). No model mutation, no module hooks, no monkey patching; the model, its weights, hooks,
train/eval mode and parameters' `.grad` stay as they were, and `torch.autograd.grad` leaves
`.grad` untouched. The walk costs about a microsecond per node, once per batch; intercepting
the forward's calls instead (`GuidedReLUMode`, below) costs every torch call of the forward
a detour through Python (`benchmarks/saliency.py` times the maps).

Supported: `nn.ReLU` modules (in place or not) and every ReLU spelling, which Captum misses:
`F.relu` (including `inplace=True`, as torchvision's DenseNet uses), `F.relu_`, `torch.relu`,
`torch.relu_`, `Tensor.relu`, `Tensor.relu_`, `torch.ops.aten.relu`, also in TorchScript modules
and on other threads. One case hides its node: an in-place op on a view (`h[:, :2].relu_()`) is
recorded inside a node of the whole base tensor, out of reach. A graph with such a node is
computed again under `GuidedReLUMode`, which runs those ReLUs out of place; the model is
remembered, and its later batches go that way at once. Not supported: ReLUs inside compiled
graphs or custom autograd functions; their gradient passes unguided. Other activations (ReLU6,
LeakyReLU, GELU, ...) pass the plain gradient by design. A target whose graph has no ReLU emits
a warning naming the model class.

Call it on eval-mode models (the engine hands those): the maps are batched, which is exact only
when samples do not interact (no batch statistics).
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any

import torch
from torch import nn

from .relu_calls import ReLUCalls
from .targets import check_images, target_classes


def _clamp_input_gradient(grad_inputs: tuple, grad_outputs: tuple) -> None:
    """Post-hook of a ReLU's backward node: its input's gradient, fresh from the native
    `threshold_backward`, clamped at zero in place (masking by `x > 0` commutes with the clamp)."""
    if grad_inputs[0] is not None:
        grad_inputs[0].clamp_(min=0)


def _guided_relu(x: torch.Tensor, inplace: bool) -> torch.Tensor:
    """ReLU (the native op, in place or not) whose backward also clamps the gradient at zero.

    `grad_in = relu(grad_out) * (x > 0)` costs one extra in-place pass over the native backward's
    output, through a post-hook on the ReLU's own backward node: no new tensor, no Python
    autograd function (a hook on the output's gradient would allocate one per ReLU).

    In place on a view (`h[:, :2].relu_()`), autograd records the ReLU inside a node of the
    whole base tensor, out of reach, and the view itself may never be used again (so a hook on
    it would never run): there the ReLU runs out of place and is copied back into the view.
    """
    if inplace and x.requires_grad and x._is_view():
        return x.copy_(_guided_relu(x, inplace=False))
    out = x.relu_() if inplace else x.relu()
    if out.requires_grad:
        out.grad_fn.register_hook(_clamp_input_gradient)
    return out


class GuidedReLUMode(ReLUCalls):
    """While active (on this thread), every ReLU call is the exact guided ReLU; `calls` counts them."""

    def __init__(self) -> None:
        super().__init__(_guided_relu)


# Models whose graphs hid ReLUs inside in-place ops on views: their maps are computed under the
# mode at once (a cache: either way gives the same maps). Keyed by id, not by the model, which may
# be unhashable (a class with `__eq__`); the weak reference tells a reused id apart.
_INTERCEPTED: dict[int, weakref.ref[nn.Module]] = {}


def _intercepted(model: nn.Module) -> bool:
    known = _INTERCEPTED.get(id(model))
    return known is not None and known() is model


def _relu_nodes(root: torch.autograd.graph.Node | None) -> list[torch.autograd.graph.Node] | None:
    """The ReLU backward nodes of the autograd graph below `root`, or None where an in-place op
    on a view (`CopySlices`) may hide one."""
    stack = [root] if root is not None else []
    seen = set(stack)
    relus = []
    while stack:
        node = stack.pop()
        kind = type(node).__name__
        if kind == "ReluBackward0":
            relus.append(node)
        elif kind == "CopySlices":
            return None
        for child, _ in node.next_functions:
            if child is not None and child not in seen:
                seen.add(child)
                stack.append(child)
    return relus


def _target_logits(logits: Any, target: torch.Tensor | None, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The sum of each image's logit for its target class (checked; None = predicted), and the targets."""
    target = target_classes(logits, target, "guided-backprop", type(model).__name__)
    return logits.gather(1, target[:, None]).sum(), target


class GuidedBackprop:
    """Guided-backpropagation maps of a classifier's logits, batched, on the images' device."""

    def maps(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """Maps `[N,C,H,W]` (detached) for class `target[i]` of image i; None = predicted class."""
        check_images(images, "guided-backprop")
        # Grad on even under no_grad/inference_mode callers; the leaf is the images detached (a
        # copy of inference tensors, which cannot require grad) and the model gets a non-leaf
        # copy, so it may modify its input in place.
        with torch.inference_mode(False), torch.enable_grad():
            x = (images.clone() if images.is_inference() else images.detach()).requires_grad_(True)
            relus = None
            if not _intercepted(model):
                selected, target = _target_logits(model(x.clone()), target, model)
                relus = _relu_nodes(selected.grad_fn)
                if relus is None:
                    _INTERCEPTED[id(model)] = weakref.ref(model)
            if relus is None:
                with GuidedReLUMode() as mode:
                    logits = model(x.clone())
                selected, target = _target_logits(logits, target, model)
                seen = mode.calls
            else:
                for node in relus:
                    node.register_hook(_clamp_input_gradient)
                seen = len(relus)
            if seen == 0:
                warnings.warn(
                    f"guided-backprop: no ReLU was seen in {type(model).__name__}'s forward pass; "
                    "guided backprop equals the plain gradient",
                    stacklevel=2,
                )
            (grad,) = torch.autograd.grad(selected, x)
        return grad.detach()

    def maps_for_attack(
        self, model: nn.Module, images: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Guided-backprop maps of the softplus-smoothed model, differentiable in `images`
        (`DifferentiableMaps`, `tracekit.saliency.smoothed`)."""
        from .smoothed import smooth_gradients

        return smooth_gradients(model, images, target, guided=True, method="guided-backprop")
