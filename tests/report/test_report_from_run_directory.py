"""The report draws from the run directory alone: the example maps the run stored are those of its
own score (a 5x5 local entropy when the spec says `size: 5`), and `tracekit report RUN_DIR` runs
without torch and without the model's weights."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from tracekit import run
from tracekit.layout import RunLayout
from tracekit.report.rundata import read_run
from tracekit.scores import local_entropy_map

pytestmark = pytest.mark.slow  # a digits run and a report in a fresh interpreter


@pytest.fixture(scope="module")
def size5(tmp_path_factory):
    spec = {
        "name": "size5",
        "seed": 0,
        "device": "cpu",
        "model": {"name": "digits-cnn"},
        "data": {"name": "digits", "split": "test", "limit": 60},
        "attacks": [{"name": "fgsm", "eps": 0.1}],
        "detector": {"name": "feature-response", "score": {"name": "local-entropy", "size": 5}},
        "evaluation": {"bootstrap": 0},
        "batch_size": 32,
    }
    return run(spec, out=tmp_path_factory.mktemp("size5") / "run")


def test_the_run_stores_the_map_of_its_own_score(size5):
    saved, classes, title = read_run(size5.out_dir).examples()
    assert title == "local-entropy map (size 5)" and classes == [str(d) for d in range(10)]
    example = saved["fgsm"]
    n = len(example.ids)
    assert n and example.gray.shape == (2 * n, 32, 32) and example.gray.dtype == np.uint8
    gray = torch.from_numpy(example.gray)
    assert np.array_equal(example.score_map, local_entropy_map(gray, 5).float().numpy())
    assert not np.array_equal(example.score_map, local_entropy_map(gray, 3).float().numpy())


def test_report_needs_neither_torch_nor_the_model(size5, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(size5.out_dir, run_dir)
    layout = RunLayout(run_dir)
    for figure in run_dir.glob("*.png"):
        figure.unlink()
    layout.report.unlink()
    code = (
        "import sys\n"
        "class NoTorch:  # any import of torch fails\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ImportError('torch is blocked')\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "from tracekit.cli import build_app\n"
        "try:\n"
        "    build_app()(['report', sys.argv[1]])\n"
        "except SystemExit as stop:\n"
        "    assert 'torch' not in sys.modules\n"
        "    raise\n"
    )
    env = {**os.environ, "TRACEKIT_CACHE": str(tmp_path / "empty-cache")}  # no trained weights there
    done = subprocess.run(
        [sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "report:" in done.stdout
    assert layout.report.is_file() and (run_dir / "examples_fgsm.png").is_file()
    assert not (tmp_path / "empty-cache").exists() or not any((tmp_path / "empty-cache").rglob("*.pt"))
