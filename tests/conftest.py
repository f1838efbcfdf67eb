"""Shared fixtures. Every test session gets its own empty tracekit cache directory."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_SESSION_CACHE = Path(tempfile.mkdtemp(prefix="tracekit-test-cache-"))
os.environ["TRACEKIT_CACHE"] = str(_SESSION_CACHE)
os.environ.setdefault("MPLBACKEND", "Agg")
# Tests compare runs bit for bit, and some CPU kernels' float results depend on the thread count;
# `threads: auto` follows the machine's load from run to run, so the session fixes it (auto takes
# OMP_NUM_THREADS) at torch's own default, one per usable core. Tests of auto remove the variable.
os.environ.setdefault(
    "OMP_NUM_THREADS", str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
)


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


@pytest.fixture(scope="session")
def trained_models() -> Path:
    """The session cache's `models/` folder, with `digits-cnn` trained in it (once per session)."""
    from tracekit.models import digits_cnn

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRACEKIT_CACHE", str(_SESSION_CACHE))  # whatever cache the requesting test set
        digits_cnn.load_model(None)
    return _SESSION_CACHE / "models"


@pytest.fixture
def cache_with_models(tmp_path: Path, trained_models: Path) -> Path:
    """`tmp_path / "cache"`: a cache of the test's own (no attack cached, nothing else there) that
    holds the session's trained model files, so that a run pointed at it, in this process or a
    subprocess, loads `digits-cnn` instead of training it again. The files are hard links (copies
    where links fail): a model retrained over one replaces the link, never the session's file."""
    models = tmp_path / "cache" / "models"
    models.mkdir(parents=True)
    for file in trained_models.glob("*.pt"):
        try:
            os.link(file, models / file.name)
        except OSError:
            shutil.copy2(file, models / file.name)
    return tmp_path / "cache"
