"""Hostile stops and hostile plugins (issue 25, items 4 and 5), one class of input or timing per
case: a stop that lands where Python cannot raise it or where a library swallows it, a stop before
or after a command's body, a second stop, a stop turned into `SystemExit` by a library, stops in
forked workers; plugins that exit, close generators or raise bare `BaseException`s from every
place a component runs. Each ends with its exit code (130/143/129 for a stop, 1 for a plugin's
bug) and one line, never a traceback nor "Exception ignored", and the run's `.partial` directory
keeps what finished.

The stops are real signals, raised in this process with tracekit's handlers installed (as the
`tracekit` command installs them); the end-to-end stops of a real `tracekit run` subprocess are
in tests/cli/test_signals.py.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from tracekit import hookimpl, plugins, stopping
from tracekit.cli import build_app
from tracekit.testing import tiny_model

QUICKSTART = str(Path(__file__).parents[1] / "examples" / "quickstart.yaml")
LIMIT_S = 60


# The minimal helpers of tests/test_hostile_inputs.py (a test module cannot import another here).
def invoke(*args: object):
    started = time.monotonic()
    result = CliRunner().invoke(build_app(), [str(a) for a in args])
    assert time.monotonic() - started < LIMIT_S, f"took {time.monotonic() - started:.0f} s"
    return result


def spec_file(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def one_line(result, marker: str, code: int) -> str:
    """The output holds exactly one line with `marker`, no traceback and nothing Python printed
    for an exception it could not raise; the exit code is `code`. The output, on one line."""
    output = result.output
    assert result.exit_code == code, output
    assert "Traceback" not in output and "Exception ignored" not in output, output
    lines = [line for line in output.splitlines() if marker in line]
    assert len(lines) == 1, output
    assert len(lines[0]) < 1000, f"a line of {len(lines[0])} characters"
    return " ".join(output.split())


def kept(tmp_path: Path) -> set[str]:
    tables = tmp_path / ".run.partial" / "tables"
    return {t.name for t in tables.iterdir() if list(t.glob("*.parquet"))} if tables.is_dir() else set()


@pytest.fixture
def stops():
    """tracekit's stop handlers installed in this process, as the `tracekit` command installs
    them; the test's own handlers (and unraisable hook) back afterwards."""
    saved = {signum: signal.getsignal(signum) for signum in stopping.STOPS}
    hook = sys.unraisablehook
    stopping.reset()
    for signum in stopping.STOPS:  # as a terminal starts a program (a background test run ignores SIGINT)
        signal.signal(signum, signal.SIG_DFL if signum != signal.SIGINT else signal.default_int_handler)
    stopping.install()
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)
    sys.unraisablehook = hook
    stopping.reset()


# A plugin registered at run time, as a notebook would: a saliency that misbehaves on its second call
# (so the clean predictions, the attack and the first scores are written first), a model, a dataset
# and a score that exit.


class _Finalized:
    def __del__(self) -> None:
        signal.raise_signal(signal.SIGTERM)  # the stop lands in a finalizer: Python cannot raise it here


def _misbehave(how: str) -> None:
    if how == "stop-in-finalizer":
        item = _Finalized()
        del item
    elif how == "stop-swallowed":
        try:
            signal.raise_signal(signal.SIGINT)
            time.sleep(0.5)
        except KeyboardInterrupt:  # a library that catches Ctrl-C and goes on
            pass
    elif how == "second-stop":
        try:
            signal.raise_signal(signal.SIGINT)
            time.sleep(0.5)
        finally:  # the second Ctrl-C lands while the first unwinds
            signal.raise_signal(signal.SIGINT)
            time.sleep(0.01)
    elif how == "stop-as-exit":
        try:
            signal.raise_signal(signal.SIGTERM)
            time.sleep(0.5)
        except KeyboardInterrupt:  # a library that turns a stop into an exit (as Ray's SIGTERM handler)
            sys.exit(0)
    elif how == "generator-exit":
        raise GeneratorExit
    elif how == "huge-exit":
        sys.exit("line one\n" + "x" * 100_000 + "\x1b[2J")


class _Saliency:
    def __init__(self, how: str, after: int) -> None:
        self.how, self.after, self.calls = how, after, 0

    def maps(self, model, images, target=None):
        self.calls += 1
        if self.calls > self.after:
            _misbehave(self.how)
        return images.abs()


class _ExitingModule(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = tiny_model().module

    def forward(self, x):
        raise SystemExit(7)


class _ExitingDataset:
    info: dict = {}

    def samples(self, model):
        for i in range(4):
            yield f"s{i}", torch.rand(model.input_size), 0
        sys.exit(0)


class _ClosingScore:
    def score(self, maps):
        raise GeneratorExit("score closed")


class _HostilePlugin:
    @hookimpl
    def tracekit_register_saliency(self, register):
        def hostile(how: str = "stop-swallowed", after: int = 1) -> _Saliency:
            return _Saliency(how, after)

        register("hostile", hostile)

    @hookimpl
    def tracekit_register_models(self, register):
        def exiting_model():
            model = tiny_model()
            model.module = _ExitingModule().eval()
            return model

        register("exiting-model", exiting_model)

    @hookimpl
    def tracekit_register_datasets(self, register):
        register("exiting-data", _ExitingDataset)

    @hookimpl
    def tracekit_register_scores(self, register):
        register("closing-score", _ClosingScore)


@pytest.fixture
def hostile(testing_plugin):
    plugins.register_plugin(_HostilePlugin(), "hostile-stops")
    yield
    plugins.unregister_plugin("hostile-stops")


SPEC = {
    "name": "hostile-stops",
    "model": {"name": "tiny-cnn"},
    "data": {"name": "random-images", "n": 32},
    "attacks": [{"name": "sign-noise", "eps": 0.1}],
    "device": "cpu",
    "batch_size": 8,
    "evaluation": {"bootstrap": 0},
    "detector": {"name": "feature-response", "saliency": {"name": "hostile"}, "score": {"name": "mean-abs"}},
}


def run(tmp_path: Path, **changes):
    return invoke("run", spec_file(tmp_path, {**SPEC, **changes}), "--out", tmp_path / "run")


def with_saliency(how: str) -> dict:
    return {"detector": {**SPEC["detector"], "saliency": {"name": "hostile", "how": how}}}


# Stops.


@pytest.mark.parametrize(
    "how, code, signame",
    [
        ("stop-in-finalizer", 143, "(SIGTERM)"),  # "Exception ignored in ... KeyboardInterrupt", went on to exit 0
        ("stop-swallowed", 130, ""),  # caught by a library: recorded, raised again at the next progress step
        ("second-stop", 130, ""),  # a second Ctrl-C while the first unwinds: still one line
        ("stop-as-exit", 143, "(SIGTERM)"),  # a library's SystemExit after the stop: the stop wins
    ],
)
def test_a_stop_wherever_it_lands_ends_the_run_with_its_code_and_one_line(stops, hostile, tmp_path, how, code, signame):
    result = run(tmp_path, **with_saliency(how))
    text = one_line(result, "interrupted", code)
    assert f"interrupted {signame}".strip() in text
    assert not (tmp_path / "run").exists()
    assert {"clean", "attack-00"} <= kept(tmp_path)  # finished work kept for the rerun


def test_a_stop_swallowed_in_the_last_step_still_never_exits_0(stops):
    """After the last progress step nothing checks but the command's end: it does."""
    import typer

    from tracekit.cli.common import handle_errors

    @handle_errors
    def body() -> str:
        try:
            signal.raise_signal(signal.SIGTERM)
            time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        return "done"

    with pytest.raises(typer.Exit) as stopped:
        body()
    assert stopped.value.exit_code == 143


def test_a_stop_while_the_arguments_are_parsed_stops_the_command_before_it_starts(stops, tmp_path):
    os.kill(os.getpid(), signal.SIGHUP)  # no command body runs yet: recorded only
    time.sleep(0.05)
    assert stopping.requested() == signal.SIGHUP
    result = invoke("validate", QUICKSTART)
    assert "valid spec" not in result.output
    assert "interrupted (SIGHUP)" in one_line(result, "interrupted", 129)


def test_a_stop_as_the_command_ends_turns_exit_0_into_its_code(stops, monkeypatch, capsys):
    import tracekit.cli as cli

    def app():
        stopping._handler(signal.SIGTERM, None)  # after the body: recorded only
        sys.exit(0)

    monkeypatch.setattr(cli, "build_app", lambda: app)
    with pytest.raises(SystemExit) as ended:
        cli.main()
    assert ended.value.code == 143
    lines = [line for line in capsys.readouterr().err.splitlines() if "interrupted" in line]
    assert len(lines) == 1 and "the stop came as the command ended" in lines[0]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN  # the interpreter's shutdown cannot be killed half-way


def _in_child(body) -> int:
    """Run `body` in a forked child; its wait status."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # forking a process with threads
        pid = os.fork()
    if pid == 0:
        code = 0
        try:
            body()
        except BaseException:
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def test_a_forked_child_ignores_ctrl_c_before_its_worker_init_and_ends_quietly_on_sigterm(stops):
    """The handlers a DataLoader worker inherits: Ctrl-C and SIGHUP (sent to the whole process
    group) do nothing in it; SIGTERM (torch's terminate of a stuck worker) ends it at once."""

    def ctrl_c_and_hangup():
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGHUP)
        time.sleep(0.05)

    assert os.waitstatus_to_exitcode(_in_child(ctrl_c_and_hangup)) == 0
    assert stopping.requested() is None  # the child's stops are not the parent's

    def sigterm():
        signal.raise_signal(signal.SIGTERM)
        time.sleep(5)

    assert os.waitstatus_to_exitcode(_in_child(sigterm)) == -signal.SIGTERM


def test_a_dataloader_worker_ignores_group_stops_after_its_init(stops):
    from tracekit.engine.reading import _worker_init

    def worker():
        _worker_init(0)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        os.kill(os.getpid(), signal.SIGINT)  # as a terminal's Ctrl-C to the process group
        time.sleep(0.05)

    assert os.waitstatus_to_exitcode(_in_child(worker)) == 0


def test_a_stop_ignored_on_purpose_stays_ignored(stops):
    """`nohup tracekit run ...` ignores SIGHUP: closing the terminal must not stop the run."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    stopping.install()
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    signal.raise_signal(signal.SIGHUP)
    assert stopping.requested() is None


def test_exceptions_python_cannot_raise_are_reported_unless_the_command_stops(stops):
    """The unraisable hook silences only what comes while a stop is under way."""
    shown: list[object] = []

    class Args:
        exc_type, exc_value, exc_traceback, err_msg, object = ValueError, ValueError("x"), None, None, None

    hook = stopping._quiet_unraisable(shown.append)
    hook(Args())
    assert len(shown) == 1  # no stop: reported as Python would
    stopping._handler(signal.SIGINT, None)
    hook(Args())
    assert len(shown) == 1


def test_ray_keeps_the_commands_stop_handlers(stops):
    """`ray.init` makes SIGTERM a `sys.exit` in the driver; tracekit puts its own handler back."""
    from tracekit.executors.ray_executor import _own_stops

    ours = signal.getsignal(signal.SIGTERM)
    with _own_stops():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
    assert signal.getsignal(signal.SIGTERM) is ours


# Plugins that exit, close generators or raise bare BaseExceptions, from each place a component runs.


@pytest.mark.parametrize(
    "changes, said",
    [
        (
            {"model": {"name": "exiting-model"}},
            r"plugin 'hostile-stops' raised SystemExit\(7\) in its model 'exiting-model'",
        ),
        (
            {"data": {"name": "exiting-data"}},
            r"plugin 'hostile-stops' raised SystemExit\(0\) in its dataset 'exiting-data'",
        ),
        (
            {"detector": {**SPEC["detector"], "score": {"name": "closing-score"}}},
            r"plugin 'hostile-stops' raised GeneratorExit\('score closed'\) in its score 'closing-score'",
        ),
        (with_saliency("generator-exit"), r"plugin 'hostile-stops' raised GeneratorExit\(\) in its saliency 'hostile'"),
    ],
    ids=["model-forward-exits", "dataset-generator-exits", "score-closes", "saliency-closes"],
)
def test_a_plugin_that_exits_anywhere_is_named_exit_1(hostile, tmp_path, changes, said):
    result = run(tmp_path, **changes)
    text = one_line(result, "error:", 1)
    assert re.search(said, text), text
    assert "bug in the plugin" in text


def test_a_plugin_exit_with_a_huge_hostile_message_is_one_bounded_line(hostile, tmp_path):
    result = run(tmp_path, **with_saliency("huge-exit"))
    text = one_line(result, "error:", 1)
    assert "plugin 'hostile-stops' raised SystemExit('line one\\nxxx" in text
    assert "\x1b" not in result.output
    assert "clean" in kept(tmp_path)


PEER_GONE = """
import os, socket, sys, threading, time
from multiprocessing import resource_sharer
from tracekit import stopping

if sys.argv[1] == "quiet":
    stopping.quiet_threads()
fd = os.open(os.devnull, os.O_RDONLY)
resource_sharer.DupFd(fd)  # starts multiprocessing's fd server thread, as a batch's tensors do
peer = socket.socket(socket.AF_UNIX)
peer.connect(resource_sharer._resource_sharer._address)
peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00")
peer.recv(1)  # the server's challenge has begun: the peer goes away in the middle (a reset)
peer.close()
time.sleep(1)
def other():
    raise OSError("another thread's error")
threading.Thread(target=other).start()
"""


@pytest.mark.parametrize("quiet", [True, False])
def test_the_fd_servers_error_when_its_peer_is_gone_is_not_printed(quiet):
    """A DataLoader worker's multiprocessing thread that hands the main process a batch reports a
    connection the stopped main process dropped through `sys.excepthook` itself; with
    `quiet_threads` nothing of it is printed, while another thread's error still is."""
    import subprocess

    run = subprocess.run(
        [sys.executable, "-c", PEER_GONE, "quiet" if quiet else "loud"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert ("resource_sharer" in run.stderr) is not quiet, run.stderr  # the control: printed without it
    assert "another thread's error" in run.stderr
