"""`--threads` on run, compare, detect and explain: it beats the spec's `threads:`, the choice is
recorded in spec.resolved.yaml, bad values are one clear error, and results do not depend on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from tracekit.cli import build_app

QUICKSTART = Path(__file__).parents[2] / "examples" / "quickstart.yaml"
SMALL = ("--set", "data.limit=60", "--set", "evaluation.bootstrap=20")
runner = CliRunner()


def invoke(*args):
    return runner.invoke(build_app(), [str(a) for a in args])


def resolved(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "spec.resolved.yaml").read_text())


@pytest.fixture(scope="module")
def one_thread_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("threads") / "run"
    result = invoke("run", QUICKSTART, "--threads", 1, "--out", out, *SMALL)
    assert result.exit_code == 0, result.output
    return out


def test_run_records_the_threads_it_was_given(one_thread_run):
    spec = resolved(one_thread_run)
    assert spec["threads"] == 1
    assert spec["provenance"]["threads"] == {"threads": 1, "by": "--threads"}


@pytest.mark.slow
def test_threads_option_beats_the_spec_and_the_spec_beats_auto(tmp_path):
    before = torch.get_num_threads()
    result = invoke("run", QUICKSTART, "--threads", 1, "--set", "threads=2", "--out", tmp_path / "a", *SMALL)
    assert result.exit_code == 0, result.output
    assert resolved(tmp_path / "a")["provenance"]["threads"] == {"threads": 1, "by": "--threads"}
    result = invoke("run", QUICKSTART, "--set", "threads=2", "--out", tmp_path / "b", *SMALL)
    assert result.exit_code == 0, result.output
    assert resolved(tmp_path / "b")["provenance"]["threads"] == {"threads": 2, "by": "spec"}
    assert torch.get_num_threads() == before  # a run leaves torch's count as it found it


@pytest.mark.slow
def test_auto_is_resolved_to_a_number_and_says_how(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    result = invoke("run", QUICKSTART, "--out", tmp_path / "auto", *SMALL)
    assert result.exit_code == 0, result.output
    spec = resolved(tmp_path / "auto")
    chosen = spec["provenance"]["threads"]
    assert isinstance(spec["threads"], int) and spec["threads"] == chosen["threads"] >= 1
    assert chosen["by"] == "auto" and {"cores", "others", "machine"} <= set(chosen)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = invoke("run", QUICKSTART, "--out", tmp_path / "omp", *SMALL)
    assert result.exit_code == 0, result.output
    assert resolved(tmp_path / "omp")["provenance"]["threads"] == {"threads": 1, "by": "OMP_NUM_THREADS"}


@pytest.mark.slow
def test_scores_do_not_depend_on_the_thread_count(tmp_path):
    for n in (1, 2):
        result = invoke("run", QUICKSTART, "--threads", n, "--no-cache", "--out", tmp_path / f"t{n}", *SMALL)
        assert result.exit_code == 0, result.output
    assert (tmp_path / "t1" / "scores.csv").read_bytes() == (tmp_path / "t2" / "scores.csv").read_bytes()


@pytest.mark.parametrize("value", ["0", "1025", "-3"])
def test_bad_threads_is_one_clear_error(tmp_path, value):
    result = invoke("run", QUICKSTART, "--threads", value, "--out", tmp_path / "x")
    assert result.exit_code == 2, result.output
    assert "--threads: a number of CPU threads from 1 to 1024" in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_compare_of_run_directories_refuses_threads(one_thread_run):
    result = invoke("compare", one_thread_run, one_thread_run, "--threads", 1)
    assert result.exit_code == 2, result.output
    assert "--threads" in result.output


def test_detect_and_explain_take_threads(one_thread_run, tmp_path):
    image = tmp_path / "digit.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)).save(image)
    before = torch.get_num_threads()
    result = invoke("detect", "--run", one_thread_run, "--threads", 1, "--json", image)
    assert result.exit_code == 0, result.output
    result = invoke("explain", image, "--threads", 1, "--out", tmp_path / "explain", "--json")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "explain" / "digit.explain.png").is_file()
    assert torch.get_num_threads() == before
    for command in ("run", "compare", "detect", "explain"):
        assert "--threads" in invoke(command, "--help").output
