"""Plugins are found through the `tracekit` entry-point group, like a third party's."""

import sys

import pytest

import tracekit
from tracekit import plugins
from tracekit.registry import KINDS
from tracekit.testing import install_fake_distribution


def test_builtins_registered_through_entry_points():
    infos = {p.name: p for p in plugins.plugins() if p.distribution == "tracekit"}
    assert {"models", "datasets", "attacks", "saliency", "scores", "detectors"} <= set(infos)
    assert all(p.error is None for p in infos.values()), [p.error for p in infos.values()]
    for kind, name in [("model", "digits-cnn"), ("dataset", "digits"), ("attack", "fgsm"), ("attack", "gradient"),
                       ("saliency", "guided-backprop"), ("score", "local-entropy"), ("detector", "feature-response")]:
        assert name in tracekit.available(kind)
        assert plugins.registry(kind).get(name).source == "tracekit"


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for mod in [m for m in sys.modules if m.startswith("thirdparty")]:
        del sys.modules[mod]
    monkeypatch.undo()
    plugins.reload()


def test_third_party_distribution_found_and_usable(site):
    install_fake_distribution(site, "thirdparty-score", """
        import tracekit

        class Peak:
            def score(self, maps):
                return maps.abs().flatten(1).max(1).values

        def peak(scale: float = 1.0):
            '''Largest absolute map value.'''
            return Peak()

        @tracekit.hookimpl
        def tracekit_register_scores(register):
            register("peak", peak)
    """)
    plugins.reload()
    assert "peak" in tracekit.available("score")
    assert plugins.registry("score").get("peak").source == "thirdparty-score"
    import torch

    maps = torch.tensor([[[[1.0, -3.0]]], [[[0.5, 0.25]]]])
    assert tracekit.create("score", "peak").score(maps).tolist() == [3.0, 0.5]


def test_broken_plugin_reported_not_fatal(site):
    install_fake_distribution(site, "thirdparty-broken", "raise ImportError('needs libfoo')\n")
    plugins.reload()
    broken = [p for p in plugins.plugins() if p.distribution == "thirdparty-broken"]
    assert broken and "needs libfoo" in broken[0].error
    assert "fgsm" in tracekit.available("attack")


def test_duplicate_name_from_plugin_reported(site):
    install_fake_distribution(site, "thirdparty-dup", """
        import tracekit

        @tracekit.hookimpl
        def tracekit_register_attacks(register):
            register("fgsm", lambda: None)
    """)
    plugins.reload()
    dup = [p for p in plugins.plugins() if p.distribution == "thirdparty-dup"][0]
    assert "already registered" in dup.error
    assert plugins.registry("attack").get("fgsm").source == "tracekit"


def test_runtime_plugin_registration(testing_plugin):
    assert "tiny-cnn" in tracekit.available("model")
    assert plugins.registry("model").get("tiny-cnn").source == "<runtime>"


def test_every_kind_has_a_registry():
    for kind in KINDS:
        assert isinstance(tracekit.available(kind), list)
    with pytest.raises(tracekit.TracekitError, match="did you mean 'attack'"):
        tracekit.available("attacks")
