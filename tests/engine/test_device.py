"""Device selection: names tracekit runs on, and clear errors for the rest."""

from __future__ import annotations

import pytest
import torch

from tracekit.engine.device import resolve_device
from tracekit.errors import TracekitError


def test_cpu_and_auto() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize(
    "name, message",
    [
        ("mps", r"device 'mps' is not supported: .* float64, which Apple's MPS backend lacks; use cpu"),
        ("tpu", r"device is auto, cpu, cuda or cuda:N, got 'tpu'"),
        ("cuda:x", r"device is auto, cpu, cuda or cuda:N, got 'cuda:x'"),
    ],
)
def test_unknown_and_unsupported_devices_are_bad_input(name: str, message: str, monkeypatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)  # refused even on a Mac with MPS
    with pytest.raises(TracekitError, match=message):
        resolve_device(name)
