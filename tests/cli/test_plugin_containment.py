"""Plugins are contained: whatever a plugin's component raises (`SystemExit`, `GeneratorExit`, a
bare `BaseException`, a bug) ends the command with one line naming the plugin, its distribution
and the component, exit 1 (its bug) or 2 (bad input it reports), never a traceback; the run's
`.partial` directory keeps what finished; `KeyboardInterrupt` stays a stop (exit 130)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tracekit import plugins
from tracekit.cli import build_app
from tracekit.testing import install_fake_distribution

PLUGIN = '''
import sys

import torch
import tracekit
from tracekit.errors import TracekitError


class Bomb(BaseException):
    """Neither an Exception nor a stop."""


def _blow(what):
    if what == "exit0":
        sys.exit(0)
    if what == "exit3":
        raise SystemExit(3)
    if what == "generator-exit":
        raise GeneratorExit("closing")
    if what == "base":
        raise Bomb("boom")
    if what == "keyboard":
        raise KeyboardInterrupt
    if what == "value":
        raise ValueError("the plugin's own bug")
    if what == "bad-input":
        raise TracekitError("saliency 'bomb': the model has no layer 'conv9' (the plugin says)")


class BombSaliency:
    def __init__(self, what, after):
        self.what, self.after, self.calls = what, after, 0

    def maps(self, model, images, target=None):
        self.calls += 1
        if self.calls > self.after:
            _blow(self.what)
        return images.abs()


class QuietScore:
    def score(self, maps):
        return maps.flatten(1).mean(1)


def bomb(what: str = "exit0", after: int = 1, at_build: bool = False):
    """A saliency that raises `what` after `after` calls (or when it is built)."""
    if at_build:
        _blow(what)
    return BombSaliency(what, after)


def quiet():
    """A harmless score of the same plugin."""
    return QuietScore()


@tracekit.hookimpl
def tracekit_register_saliency(register):
    register("bomb", bomb)


@tracekit.hookimpl
def tracekit_register_scores(register):
    register("quiet", quiet)
'''

SPEC = {
    "name": "contained",
    "model": {"name": "tiny-cnn"},
    "data": {"name": "random-images", "n": 32},
    "attacks": [{"name": "sign-noise", "eps": 0.1}],
    "device": "cpu",
    "batch_size": 8,
    "num_workers": 0,
    "evaluation": {"bootstrap": 0},
    "detector": {"name": "feature-response", "saliency": {"name": "bomb"}, "score": {"name": "quiet"}},
}


@pytest.fixture
def bomb_plugin(tmp_path, monkeypatch, testing_plugin):
    """The distribution `tracekit-bomb` (entry point `bomb`) installed, with its saliency `bomb`."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    install_fake_distribution(site, "tracekit-bomb", PLUGIN, entry_point="bomb")
    plugins.reload()
    yield
    sys.modules.pop("tracekit_bomb", None)
    monkeypatch.undo()
    plugins.reload()


def run(tmp_path: Path, **saliency: object):
    spec = {**SPEC, "detector": {**SPEC["detector"], "saliency": {"name": "bomb", **saliency}}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return CliRunner().invoke(build_app(), ["run", str(path), "--out", str(tmp_path / "run")])


def one_line(result, prefix: str) -> str:
    output = result.output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, output
    return " ".join(output.split())


def kept(tmp_path: Path) -> list[str]:
    """The tables the `.partial` directory kept, with at least one chunk each."""
    tables = tmp_path / ".run.partial" / "tables"
    return sorted(t.name for t in tables.iterdir() if list(t.glob("*.parquet"))) if tables.is_dir() else []


@pytest.mark.parametrize(
    "what, shown",
    [
        ("exit0", "SystemExit(0)"),
        ("exit3", "SystemExit(3)"),
        ("generator-exit", "GeneratorExit('closing')"),
        ("base", "Bomb('boom')"),
    ],
)
def test_a_plugin_that_exits_or_raises_a_base_exception_is_its_bug_named_on_one_line(
    bomb_plugin, tmp_path, what, shown
):
    result = run(tmp_path, what=what)
    assert result.exit_code == 1, result.output
    text = one_line(result, "error:")
    assert f"plugin 'bomb' (distribution tracekit-bomb) raised {shown} in its saliency 'bomb'" in text, text
    assert "bug in the plugin" in text
    assert not (tmp_path / "run").exists()  # nothing published
    assert {"clean", "attack-00", "scores-d00-fit"} <= set(kept(tmp_path))  # what finished is kept


def test_a_plugin_that_exits_while_its_component_is_built_is_named(bomb_plugin, tmp_path):
    result = run(tmp_path, what="exit3", at_build=True)
    assert result.exit_code == 1, result.output
    text = one_line(result, "error:")
    assert "plugin 'bomb' (distribution tracekit-bomb) raised SystemExit(3) in its saliency 'bomb'" in text, text


def test_a_plugin_bug_names_the_plugin(bomb_plugin, tmp_path):
    result = run(tmp_path, what="value")
    assert result.exit_code == 1, result.output
    text = one_line(result, "unexpected error:")
    assert "ValueError: the plugin's own bug" in text
    assert "raised by plugin 'bomb' (distribution tracekit-bomb) in its saliency 'bomb'" in text, text
    assert "clean" in kept(tmp_path)


def test_bad_input_a_plugin_reports_stays_exit_2(bomb_plugin, tmp_path):
    result = run(tmp_path, what="bad-input")
    assert result.exit_code == 2, result.output
    text = one_line(result, "error:")
    assert "the model has no layer 'conv9' (the plugin says)" in text
    assert "(raised by plugin 'bomb' (distribution tracekit-bomb) in its saliency 'bomb')" in text, text


def test_keyboard_interrupt_from_a_plugin_is_a_stop(bomb_plugin, tmp_path):
    result = run(tmp_path, what="keyboard")
    assert result.exit_code == 130, result.output
    text = one_line(result, "interrupted")
    assert "error" not in text and "clean" in kept(tmp_path)


def test_the_run_resumes_once_the_plugin_behaves(bomb_plugin, tmp_path):
    assert run(tmp_path, what="exit0").exit_code == 1
    again = run(tmp_path, what="exit0", after=10**6)
    assert again.exit_code == 0, again.output
    assert (tmp_path / "run" / "scores.csv").is_file()


def test_a_base_exception_in_a_ray_workers_shard_comes_back_as_the_plugins_error(bomb_plugin):
    """In a Ray actor a `SystemExit` would end the worker (and read as a crash); the actor turns it
    into an ordinary error naming the plugin, which the driver re-raises as it is (no Ray needed)."""
    from tracekit.errors import PluginFault
    from tracekit.executors.ray_executor import ShardWorker

    plugins.registry("saliency").get("bomb")  # loaded, as in a worker
    saliency = plugins.registry("saliency").create("bomb", what="exit0", after=0)

    class Stage:
        def run(self, context, shard):
            yield len(saliency.maps(None, __import__("torch").zeros(1, 1, 2, 2)))

    worker = ShardWorker(job=None, decoders=0)  # type: ignore[arg-type]
    worker.context = object()
    with pytest.raises(PluginFault, match=r"plugin 'bomb' \(distribution tracekit-bomb\) raised SystemExit\(0\)"):
        worker.run(Stage(), [])  # type: ignore[arg-type]
