"""The classifier's head, for the post-hoc detectors that read penultimate features (`knn`, `vim`):
the `nn.Linear` module whose output IS the model's logits, and its input, the penultimate feature.

Found by a probe forward pass: among the linear modules called, the last whose output equals the
logits (so a wrapper that only adds a normalization in front, or a `Sequential` ending in the
head, is found; a model whose logits come after a further operation, such as a temperature or an
ensemble average, is refused with the way out, rather than read at the wrong place).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import TracekitError
from .layers import forward_hooks


def find_head(model: nn.Module, sample: torch.Tensor, where: str) -> str:
    """The module name of the linear layer whose output is the logits of `sample`."""
    outputs: list[tuple[str, torch.Tensor]] = []

    def record(name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                outputs.append((name, output))

        return hook

    linear = {name: record(name) for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    with torch.no_grad(), forward_hooks(model, linear):
        logits = model(sample)
    for name, output in reversed(outputs):
        if output.shape == logits.shape and torch.equal(output, logits):
            return name
    raise TracekitError(
        f"{where}: model {type(model).__name__}'s logits are not the output of a linear layer (nn.Linear"
        f"{', it has: ' + ', '.join(linear) if linear else ', it has none'}); this detector reads the penultimate "
        "features as the input of that final linear layer: use a model whose last module is its classifier head"
    )


def penultimate(model: nn.Module, images: torch.Tensor, head: str, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """`(features [N,D], logits [N,C])` of one forward pass: the head's input, flattened (under the
    caller's grad mode, so gradients reach `images` where enabled)."""
    captured: list[torch.Tensor] = []

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        captured.append(inputs[0].flatten(1))

    with forward_hooks(model, {head: hook}):
        logits = model(images)
    if not captured:
        raise TracekitError(f"{where}: the model's head '{head}' was not called in the forward pass")
    return captured[-1], logits


def head_weights(model: nn.Module, head: str, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's weight `[C,D]` and bias `[C]` (zeros without one), detached."""
    module = dict(model.named_modules()).get(head)
    if not isinstance(module, nn.Linear):
        raise TracekitError(f"{where}: the model has no linear layer '{head}' (the head it was fitted with)")
    bias = module.bias if module.bias is not None else torch.zeros(module.out_features, device=module.weight.device)
    return module.weight.detach(), bias.detach()
