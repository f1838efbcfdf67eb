"""Shared fixtures. Every test session gets its own empty tracekit cache directory."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_SESSION_CACHE = Path(tempfile.mkdtemp(prefix="tracekit-test-cache-"))
os.environ["TRACEKIT_CACHE"] = str(_SESSION_CACHE)
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def tiny():
    """A tiny random CNN (1x16x16 inputs, 3 classes)."""
    from tracekit.testing import tiny_model

    return tiny_model()


@pytest.fixture
def testing_plugin():
    """Registers tracekit.testing's components (tiny-cnn, random-images, sign-noise, mean-abs)."""
    from tracekit import plugins
    from tracekit.testing import testing_plugin

    plugins.register_plugin(testing_plugin, "tracekit-testing")
    yield
    plugins.unregister_plugin("tracekit-testing")
