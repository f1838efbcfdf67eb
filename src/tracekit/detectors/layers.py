"""Intermediate features of any torch model, by module name, for the feature-based detectors.

A layer is named by its module's name in `model.named_modules()` (for the embedded model, for
example `model.features.12`); its feature is the module's output (of its last call, when a module
runs several times in one forward pass, like torchvision ResNet's shared `relu`). Hooks are
registered only for the duration of a forward pass and always removed.

Default layers: a probe forward pass records the order in which leaf modules run. A *layer
output* is the output of the last module in each run of parameter-free modules (activations,
pooling, dropout, flatten) that is followed by a weighted module (conv, linear, norm); so
`conv-relu-pool-conv` gives the pool's output, and runs after the last weighted module (a final
softmax) are not hidden layers. The *last hidden* layer is the last of them: the input of the
final linear layer in the usual classifier. Models whose activations are all functional (no
parameter-free modules) fall back to the outputs of their weighted modules except the last.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import TracekitError, did_you_mean

Reduce = Callable[[torch.Tensor], torch.Tensor]


def flatten(output: torch.Tensor) -> torch.Tensor:
    """`[N, ...] -> [N, D]` (a copy: later in-place ops of the model cannot change it)."""
    return output.flatten(1).clone()


def spatial_mean(output: torch.Tensor) -> torch.Tensor:
    """Global average pooling of `[N,C,H,W]` maps to `[N,C]`; other shapes are flattened."""
    return output.mean(dim=(2, 3)) if output.dim() == 4 else flatten(output)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for tensor in [*model.parameters(), *model.buffers()]:
        return tensor.device
    return torch.device("cpu")


def check_hookable(model: nn.Module, layers: Sequence[str] | None) -> None:
    """Refuse, before any work, a model whose layers cannot take forward hooks (a TorchScript
    module: `register_forward_hook` is not supported on ScriptModules) or that lacks a layer named
    in `layers`."""
    scripted = next((name for name, m in model.named_modules() if isinstance(m, torch.jit.ScriptModule)), None)
    if scripted is not None:
        raise TracekitError(
            "it reads the model's layers through forward hooks, which a TorchScript model does not allow; "
            "load the model as an eager nn.Module (`checkpoint` with the weights of a torchvision or timm "
            "architecture, or a plugin's model)"
        )
    if layers is not None:
        check_layers(model, layers, "layers")


def check_layers(model: nn.Module, layers: Sequence[str], where: str) -> list[str]:
    """`layers` as a list, or a `TracekitError` naming an unknown one and the closest module names."""
    known = [name for name, _ in model.named_modules() if name]
    for name in layers:
        if name not in known:
            raise TracekitError(
                f"{where}: model {type(model).__name__} has no layer '{name}'{did_you_mean(name, known)}; "
                "layer names are module names as listed by `model.named_modules()`"
            )
    return list(layers)


@contextmanager
def forward_hooks(model: nn.Module, hooks: Mapping[str, Callable[..., Any]]) -> Iterator[None]:
    """Register `hooks` (module name -> forward hook) for the duration of the block; always removed."""
    modules = dict(model.named_modules())
    handles = []
    try:
        for name, hook in hooks.items():
            handles.append(modules[name].register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def layer_features(
    model: nn.Module, images: torch.Tensor, layers: Sequence[str], reduce: Reduce, where: str
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """`(features, logits)`: `reduce` of each layer's output (in `layers` order) in one forward pass.

    Runs under the caller's grad mode (gradients flow to `images` where enabled).
    """
    captured: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Callable[..., None]:
        def store(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                captured[name] = reduce(output)

        return store

    with forward_hooks(model, {name: hook(name) for name in layers}):
        logits = model(images)
    missing = [name for name in layers if name not in captured]
    if missing:
        raise TracekitError(
            f"{where}: layer(s) {', '.join(repr(m) for m in missing)} gave no tensor output in the forward "
            "pass (never called, or returning a tuple); choose other layers"
        )
    return [captured[name] for name in layers], logits


def layer_outputs_in_order(model: nn.Module, sample: torch.Tensor) -> list[str]:
    """Names of the model's hidden layer outputs, in forward order (see the module docstring)."""
    calls: list[tuple[str, bool]] = []  # (leaf module name, weighted?) per call with a tensor output

    def hook(name: str, weighted: bool) -> Callable[..., None]:
        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                calls.append((name, weighted))

        return record

    leaves = {
        name: hook(name, any(True for _ in [*m.parameters(recurse=False), *m.buffers(recurse=False)]))
        for name, m in model.named_modules()
        if name and not any(True for _ in m.children())
    }
    with torch.no_grad(), forward_hooks(model, leaves):
        model(sample)
    points: list[str] = []
    pending: str | None = None
    for name, weighted in calls:
        if not weighted:
            pending = name
        elif pending is not None:
            points.append(pending)
            pending = None
    if not points:
        points = [name for name, weighted in calls if weighted][:-1]
    return list(reversed(dict.fromkeys(reversed(points))))  # each name once, at its last position


def default_layers(model: nn.Module, sample: torch.Tensor, count: int, where: str) -> list[str]:
    """The last `count` hidden layer outputs of the model (fewer if it has fewer)."""
    points = layer_outputs_in_order(model, sample)
    if not points:
        raise TracekitError(
            f"{where}: cannot find hidden layers in model {type(model).__name__}; give `layers` "
            "(module names as listed by `model.named_modules()`)"
        )
    return points[-count:]


def resolve_layers(
    model: nn.Module, layers: Sequence[str] | None, sample: torch.Tensor, count: int, where: str
) -> list[str]:
    """The user's `layers` (checked), or the model's last `count` hidden layer outputs."""
    if layers is not None:
        return check_layers(model, layers, where)
    return default_layers(model, sample, count, where)


def batches(images: torch.Tensor, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
    """`images` in chunks of `batch_size`, each moved to `device`."""
    for start in range(0, len(images), batch_size):
        yield images[start : start + batch_size].to(device)


def features_in_batches(
    model: nn.Module, images: torch.Tensor, layers: Sequence[str], reduce: Reduce, batch_size: int, where: str
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """`layer_features` over device batches of `images`, without autograd: each layer's features
    concatenated (float64) and the logits."""
    with torch.no_grad():
        parts = [
            layer_features(model, b, layers, reduce, where) for b in batches(images, batch_size, model_device(model))
        ]
    return [torch.cat([p[0][i] for p in parts]).double() for i in range(len(layers))], torch.cat([p[1] for p in parts])


def scores_in_batches(
    score: Callable[[nn.Module, torch.Tensor], torch.Tensor], model: nn.Module, images: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """`score(model, batch)` over device batches of `images`, without autograd, concatenated: a
    detector's `score` where its `score_for_attack` is the same function on the whole batch."""
    with torch.no_grad():
        return torch.cat([score(model, b) for b in batches(images, batch_size, model_device(model))])


def map_batches(
    fn: Callable[[torch.Tensor, int], torch.Tensor], images: torch.Tensor, batch_size: int, device: torch.device
) -> np.ndarray:
    """`fn(batch, start)` over device batches of `images` (`start`: the batch's first index),
    concatenated into one array on the CPU."""
    out = [fn(images[s : s + batch_size].to(device), s) for s in range(0, len(images), batch_size)]
    return torch.cat(out).cpu().numpy()
