"""`ReLUCalls`: while active (on this thread), every ReLU call of any spelling (`F.relu`, in place
or not, `torch.relu`, `torch.relu_`, `Tensor.relu`, `Tensor.relu_`; `nn.ReLU` calls `F.relu`) is
replaced by a function of the caller's. Guided backprop runs the exact guided ReLU this way where
the autograd graph hides a ReLU node (`tracekit.saliency.guided_backprop`); the smoothed maps of
adaptive attacks run softplus (`tracekit.saliency.smoothed`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_OUT_OF_PLACE = frozenset({F.relu, torch.relu, torch.Tensor.relu})
_IN_PLACE = frozenset({torch.relu_, torch.Tensor.relu_})  # F.relu_ is torch.relu_


class ReLUCalls(TorchFunctionMode):
    """Every ReLU call becomes `relu(x, inplace)`; `calls` counts them."""

    def __init__(self, relu: Callable[[torch.Tensor, bool], torch.Tensor]) -> None:
        super().__init__()
        self.relu = relu
        self.calls = 0

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func not in _OUT_OF_PLACE and func not in _IN_PLACE:
            return func(*args, **kwargs)
        x = args[0] if args else kwargs["input"]
        inplace = func in _IN_PLACE or (
            func is F.relu and bool(args[1] if len(args) > 1 else kwargs.get("inplace", False))
        )
        self.calls += 1
        return self.relu(x, inplace)
