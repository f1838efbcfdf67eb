"""Compute settings for the model's forward passes (`compute:` in the spec) and `batch_size: auto`.

The defaults keep tracekit's exact fp32 results. Each setting applies to the loaded model, in
the driver, in every executor worker and in `detect` alike (`tracekit.engine.context.build_context`):
- `precision: bf16 | fp16`: every forward pass of the model runs under `torch.autocast` (its
  logits come back float32); gradients (attacks, guided backprop) flow through it as usual.
  Results move: docs/spec.md says how much (measured);
- `channels_last`: the model's weights in channels-last memory layout (faster convolutions on
  recent GPUs; exact up to the kernels' summation order);
- `cudnn_benchmark`: cuDNN picks the fastest convolution algorithm per shape (not bit-for-bit
  reproducible across runs).
`batch_size: auto` is the largest batch (a power of two, at most 4096) for which a forward and
backward pass of the model fits on the GPU, found by trying and backing off on out-of-memory,
and recorded in the resolved spec; on a CPU, where memory is not what limits a batch, it is 128.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # torch is imported where it is used: the spec (and `validate`) must not need it
    import torch
    from torch import nn

CPU_BATCH = 128
MAX_BATCH = 4096


class Compute(BaseModel):
    """How the model computes (`compute:` in the spec)."""

    model_config = ConfigDict(extra="forbid")

    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False
    cudnn_benchmark: bool = False


def apply(module: nn.Module, compute: Compute, device: torch.device) -> None:
    """Set `module` (already on `device`) up as `compute` says."""
    import torch

    if compute.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    if compute.channels_last:
        module.to(memory_format=torch.channels_last)
    if compute.precision != "fp32":
        _autocast(module, device.type, {"bf16": torch.bfloat16, "fp16": torch.float16}[compute.precision])


def _autocast(module: nn.Module, device_type: str, dtype: torch.dtype) -> None:
    """Run every forward pass of `module` under autocast, its output cast back to float32 (hooks:
    the module and its layer names stay as they are, which layer-based detectors rely on)."""
    import torch

    contexts: list[Any] = []

    def enter(_: nn.Module, args: Any) -> None:
        context = torch.autocast(device_type, dtype=dtype)
        context.__enter__()
        contexts.append(context)

    def leave(_: nn.Module, args: Any, output: Any) -> Any:
        contexts.pop().__exit__(None, None, None)
        return output.float() if isinstance(output, torch.Tensor) else output

    module.register_forward_pre_hook(enter)
    module.register_forward_hook(leave, always_call=True)


def auto_batch_size(module: nn.Module, input_size: tuple[int, ...], device: torch.device) -> int:
    """The largest power-of-two batch (at most `MAX_BATCH`) whose forward and backward pass fits."""
    import torch

    if device.type != "cuda":
        return CPU_BATCH

    def attempt(size: int) -> None:
        x = torch.rand(size, *input_size, device=device, requires_grad=True)
        (grad,) = torch.autograd.grad(module(x).max(1).values.sum(), x)
        del grad, x

    try:
        return largest_fitting(attempt)
    finally:
        torch.cuda.empty_cache()


def largest_fitting(attempt: Callable[[int], None], start: int = 1, cap: int = MAX_BATCH) -> int:
    """Double the batch from `start` while `attempt(size)` fits; the last size that did. Backs
    off once more (halving) on a first out-of-memory, so that the runs' own extra memory
    (saliency maps, attack state) has room."""
    import torch

    size, fits = start, 0
    while size <= cap:
        try:
            attempt(size)
        except torch.cuda.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            break
        fits = size
        size *= 2
    else:
        return fits
    if not fits:
        raise torch.cuda.OutOfMemoryError(f"not even a batch of {start} fits on the device")
    return max(start, fits // 2)
