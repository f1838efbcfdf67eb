"""SIGTERM and SIGHUP stop a run like Ctrl-C: one message, finished work kept, no empty run
directory, and the same command resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SPEC = {
    "name": "signals",
    "model": {"name": "digits-cnn"},
    "device": "cpu",
    "batch_size": 2,
    "data": {"name": "digits", "split": "test", "limit": 24},
    "evaluation": {"bootstrap": 0},
    "attacks": [{"name": "pixel", "scale": 4, "max_iter": 6}],  # ART's, image by image: slow enough to stop
}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_stopped_run_says_so_keeps_its_work_and_resumes(signum, tmp_path, cache_with_models):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    out = tmp_path / "run"
    command = [str(Path(sys.executable).parent / "tracekit"), "run", str(spec), "--out", str(out)]
    # no attack cached, so the run has work to stop; the session's trained model, so it does not retrain
    env = {**os.environ, "TRACEKIT_CACHE": str(cache_with_models)}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    table = tmp_path / ".run.partial" / "tables" / "attack-00"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(table.glob("*.parquet"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "run the same command again" in err and "Traceback" not in err
    assert not out.exists() and len(list(table.glob("*.parquet"))) >= 2  # nothing published, work kept
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert (out / "scores.csv").is_file()
