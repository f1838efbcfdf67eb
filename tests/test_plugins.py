"""Plugins are found through the `tracekit` entry-point group, like a third party's."""

import sys

import pytest

import tracekit
from tracekit import plugins
from tracekit.hookspecs import Components
from tracekit.registry import KINDS
from tracekit.testing import install_fake_distribution


def test_builtins_registered_through_entry_points():
    infos = {p.name: p for p in plugins.plugins() if p.distribution == "tracekit"}
    assert {"models", "datasets", "attacks", "saliency", "scores", "detectors"} <= set(infos)
    assert all(p.error is None for p in infos.values()), [p.error for p in infos.values()]
    for kind, name in [
        ("model", "digits-cnn"),
        ("dataset", "digits"),
        ("attack", "fgsm"),
        ("attack", "gradient"),
        ("saliency", "guided-backprop"),
        ("score", "local-entropy"),
        ("detector", "feature-response"),
    ]:
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
    install_fake_distribution(
        site,
        "thirdparty-score",
        """
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
    """,
    )
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
    install_fake_distribution(
        site,
        "thirdparty-dup",
        """
        import tracekit

        @tracekit.hookimpl
        def tracekit_register_attacks(register):
            register("fgsm", lambda: None)
    """,
    )
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


def test_components_are_registered_where_their_factories_are_defined():
    scores = Components("score")

    def peak(scale: float = 1.0):
        """Largest absolute map value."""

    assert scores.register("peak")(peak) is peak  # unchanged: its signature is the parameter schema
    scores.register("also-peak")(peak)
    registered = []
    scores.into(lambda name, factory: registered.append((name, factory)))
    assert registered == [("peak", peak), ("also-peak", peak)]
    with pytest.raises(ValueError, match="score 'peak' is registered twice"):
        scores.register("peak")(peak)
    with pytest.raises(ValueError, match="unknown kind 'scores'"):
        Components("scores")


def test_a_third_party_can_use_the_decorator(site):
    install_fake_distribution(
        site,
        "thirdparty-decorated",
        """
        import tracekit
        from tracekit.hookspecs import Components

        scores = Components("score")

        class Peak:
            def score(self, maps):
                return maps.abs().flatten(1).max(1).values

        @scores.register("decorated-peak")
        def peak(scale: float = 1.0):
            '''Largest absolute map value.'''
            return Peak()

        @tracekit.hookimpl
        def tracekit_register_scores(register):
            scores.into(register)
    """,
    )
    plugins.reload()
    entry = plugins.registry("score").get("decorated-peak")
    assert entry.source == "thirdparty-decorated" and list(entry.params.model_fields) == ["scale"]
    assert type(tracekit.create("score", "decorated-peak")).__name__ == "Peak"


@pytest.fixture
def two_plugins(site):
    for name in ("one", "two"):
        install_fake_distribution(
            site,
            f"thirdparty-{name}",
            f"""
            import tracekit

            @tracekit.hookimpl
            def tracekit_register_scores(register):
                register("{name}-score", lambda: None)
        """,
            entry_point=name,
        )
    return site


def loaded() -> set[str]:
    return {p.distribution for p in plugins.plugins() if p.distribution.startswith("thirdparty-")}


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, {"thirdparty-one", "thirdparty-two"}),  # unset: every plugin installed
        ("thirdparty-one", {"thirdparty-one"}),
        ("two", {"thirdparty-two"}),  # an entry-point name
        (" Thirdparty_One ,two,", {"thirdparty-one", "thirdparty-two"}),  # names compare as packaging's do
        ("", set()),
    ],
)
def test_load_plugins_names_the_third_party_plugins_to_load(two_plugins, monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv(plugins.LOAD_PLUGINS, raising=False)
    else:
        monkeypatch.setenv(plugins.LOAD_PLUGINS, value)
    plugins.reload()
    assert loaded() == expected
    scores = {n for n in tracekit.available("score") if n.endswith("-score")}
    assert scores == {d.removeprefix("thirdparty-") + "-score" for d in expected}
    assert "local-entropy" in tracekit.available("score")  # built-ins always load
    for dist in ("thirdparty-one", "thirdparty-two"):  # `tracekit plugins` notes those left out
        assert (f"({dist})" in plugins.selection_note()) == (value is not None and dist not in expected)


def test_load_plugins_warns_about_unknown_names_with_the_closest_ones(two_plugins, monkeypatch):
    from typer.testing import CliRunner

    from tracekit.cli import build_app

    monkeypatch.setenv(plugins.LOAD_PLUGINS, "thirdparty-one,thirdparty-tow,models")  # models: tracekit's own
    plugins.reload()
    with pytest.warns(
        UserWarning,
        match=r"no installed tracekit plugin is called 'thirdparty-tow' \(did you mean "
        r"'thirdparty-two'",
    ) as caught:
        assert loaded() == {"thirdparty-one"}
    assert len(caught) == 1
    plugins.reload()
    result = CliRunner().invoke(build_app(), ["plugins"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "warning: TRACEKIT_LOAD_PLUGINS: no installed tracekit plugin is called 'thirdparty-tow'" in output
    assert "note: TRACEKIT_LOAD_PLUGINS='thirdparty-one,thirdparty-tow,models' leaves out" in output
    assert "two (thirdparty-two)" in output
