"""The thread policy (`tracekit.threads`): the pure `policy` over cores, quota and load, reading
the cgroup quota and the machine's load, how a count is chosen (`--threads`, spec, OMP_NUM_THREADS,
auto), the spec field's validation, and `applied` restoring torch's count."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tracekit import threads
from tracekit.errors import SpecError
from tracekit.spec import validate_spec
from tracekit.threads import Choice, choose, parse_cpu_max, policy


@pytest.mark.parametrize(
    ("cores", "quota", "others", "machine", "expected"),
    [
        (2, None, 0.0, None, 2),  # quiet: every usable core
        (8, None, 0.0, None, 8),
        (2, None, 1.0, None, 1),  # one busy process on a 2-core machine
        (2, None, 0.4, None, 2),  # occasional background work rounds away
        (2, None, 0.5, None, 1),  # half a core's worth rounds up
        (2, None, 5.0, None, 1),  # overloaded: never below one
        (8, None, 3.0, None, 5),
        (1, None, 0.0, None, 1),
        (8, 2.0, 0.0, None, 2),  # cgroup quota of 2 cores caps 8 usable ones
        (8, 2.5, 0.0, None, 2),  # a fractional quota rounds down (more threads would be throttled)
        (8, 0.5, 0.0, None, 1),  # below one core: still one thread
        (4, 16.0, 0.0, None, 4),  # a quota above the cores changes nothing
        (64, 2.0, 40.0, 64, 2),  # a container's 2-core quota on a busy 64-core host: cores are free
        (8, None, 16.0, 64, 6),  # affinity to 8 of 64 cores: 16 busy elsewhere, about 2 on ours
        (2, None, 1.0, 64, 2),  # one busy process on a 64-core machine, likely not on our 2 cores
    ],
)
def test_policy(cores, quota, others, machine, expected):
    assert policy(cores, quota, others, machine) == expected


def test_policy_defaults_and_bad_readings():
    assert policy(4) == 4
    assert policy(0) == 1  # a nonsensical reading still gives one thread
    assert policy(4, None, -3.0) == 4  # negative load is none
    assert policy(4, None, 0.0, 2) == 4  # a machine smaller than the affinity: the affinity


@pytest.mark.parametrize(
    ("text", "cores"),
    [
        ("max 100000\n", None),
        ("200000 100000\n", 2.0),
        ("150000 100000", 1.5),
        ("", None),
        ("x y", None),
        ("0 100000", None),
    ],
)
def test_parse_cpu_max(text, cores):
    assert parse_cpu_max(text) == cores


def test_cpu_quota_v2_takes_the_tightest_ancestor(tmp_path):
    root = tmp_path / "cgroup"
    leaf = root / "user.slice" / "job"
    leaf.mkdir(parents=True)
    (leaf / "cpu.max").write_text("max 100000\n")
    (root / "user.slice" / "cpu.max").write_text("300000 100000\n")
    membership = tmp_path / "self-cgroup"
    membership.write_text("0::/user.slice/job\n")
    assert threads.cpu_quota(root, membership) == 3.0
    (leaf / "cpu.max").write_text("50000 100000\n")
    assert threads.cpu_quota(root, membership) == 0.5


def test_cpu_quota_container_root_and_none(tmp_path):
    membership = tmp_path / "self-cgroup"
    membership.write_text("0::/\n")
    assert threads.cpu_quota(tmp_path, membership) is None
    (tmp_path / "cpu.max").write_text("400000 100000\n")  # a container's own cgroup at the mount
    assert threads.cpu_quota(tmp_path, membership) == 4.0
    assert threads.cpu_quota(tmp_path / "absent", tmp_path / "absent-membership") is None


def test_cpu_quota_v1(tmp_path):
    cpu = tmp_path / "cpu,cpuacct"
    cpu.mkdir()
    (cpu / "cpu.cfs_quota_us").write_text("-1\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    membership = tmp_path / "self-cgroup"
    membership.write_text("4:memory:/x\n3:cpu,cpuacct:/\n")
    assert threads.cpu_quota(tmp_path, membership) is None
    (cpu / "cpu.cfs_quota_us").write_text("250000\n")
    assert threads.cpu_quota(tmp_path, membership) == 2.5


def test_reading_the_machine_is_cheap_and_sane():
    import time

    started = time.perf_counter()
    choice = threads.measure()
    assert time.perf_counter() - started < 0.5
    assert choice.by == "auto" and 1 <= choice.threads <= choice.cores
    assert choice.others is not None and choice.others >= 0
    assert threads.usable_cores() >= 1


def test_without_proc_the_load_average_is_used(monkeypatch):
    monkeypatch.setattr(threads, "LOADAVG", threads.CGROUP / "no-such-file")
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.5, 1.0, 1.0))
    assert threads.others_running(samples=2, interval=0) == 1.5


def test_choose_order(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert choose("auto").by == "auto"
    assert choose(3) == Choice(3, "spec")
    assert choose(3, 5) == Choice(5, "--threads")  # --threads beats the spec
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert choose("auto") == Choice(2, "OMP_NUM_THREADS")  # the user's explicit setting is auto's answer
    assert choose(3) == Choice(3, "spec")  # but the spec's number beats it
    assert choose("auto", 1) == Choice(1, "--threads")
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")  # nested levels: the first
    assert choose("auto") == Choice(4, "OMP_NUM_THREADS")
    for junk in ("", "0", "many", "-1"):
        monkeypatch.setenv("OMP_NUM_THREADS", junk)
        assert choose("auto").by == "auto"


@pytest.mark.parametrize("bad", [0, -1, 1025, True, 2.5, "2"])
def test_bad_override_is_a_spec_error(bad):
    with pytest.raises(SpecError, match="--threads: a number of CPU threads from 1 to 1024"):
        choose("auto", bad)


def test_record_keeps_what_applies():
    assert Choice(2, "spec").record() == {"threads": 2, "by": "spec"}
    record = Choice(1, "auto", 2, None, 1.1234, 2).record()
    assert record == {"threads": 1, "by": "auto", "cores": 2, "others": 1.12, "machine": 2}


SPEC = {"name": "t", "model": {"name": "digits-cnn"}, "data": {"name": "digits"}, "attacks": [{"name": "fgsm"}]}


def test_spec_field():
    assert validate_spec(SPEC).threads == "auto"
    assert validate_spec({**SPEC, "threads": 4}).threads == 4
    assert validate_spec({**SPEC, "threads": 1024}).threads == 1024
    for bad in (0, 1025, -2, "four", True, 1.5, None):
        with pytest.raises(SpecError, match=r"threads: a number of CPU threads from 1 to 1024, or 'auto'"):
            validate_spec({**SPEC, "threads": bad})


def test_spec_choose_threads_resolves_and_records(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    spec = validate_spec({**SPEC, "threads": 3})
    assert spec.choose_threads() == 3 and spec.threads == 3
    assert spec.threads_chosen == {"threads": 3, "by": "spec"}
    spec = validate_spec(SPEC)
    assert spec.choose_threads(2) == 2 and spec.threads_chosen["by"] == "--threads"
    spec = validate_spec(SPEC)
    spec.choose_threads()
    assert isinstance(spec.threads, int) and spec.threads_chosen["by"] == "auto"


def test_applied_restores_torch_threads():
    import torch

    before = torch.get_num_threads()
    with threads.applied(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_choosing_does_not_import_torch():
    code = "import sys, json; from tracekit.threads import choose; choose(); print(json.dumps('torch' in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) is False
