from typing import Annotated

import pytest
from pydantic import Field

from tracekit.errors import PluginError, SpecError, UnknownComponentError
from tracekit.registry import Registry


class _FakeAttack:
    def __init__(self, eps: float, steps: int, norm: str) -> None:
        self.params = (eps, steps, norm)

    def generate(self, model, images, labels):
        return images


def _attack(eps: Annotated[float, Field(gt=0, le=1)] = 0.1, steps: int = 10, norm: str = "inf"):
    """A fake attack."""
    return _FakeAttack(eps, steps, norm)


@pytest.fixture
def reg():
    r = Registry("attack")
    r.register("fake-fgsm", _attack, source="dist-a")
    r.register("fake-pgd", _attack, source="dist-a")
    return r


def test_resolve_fills_defaults_and_coerces(reg):
    out = reg.resolve({"name": "fake-fgsm", "steps": "5"})
    assert out == {"name": "fake-fgsm", "eps": 0.1, "steps": 5, "norm": "inf"}


def test_create_builds_with_params(reg):
    assert reg.create("fake-pgd", eps=0.5).params == (0.5, 10, "inf")


def test_duplicate_names_refused(reg):
    with pytest.raises(PluginError, match="already registered by dist-a"):
        reg.register("fake-fgsm", _attack, source="dist-b")


def test_unknown_name_suggests_closest(reg):
    with pytest.raises(UnknownComponentError, match="did you mean 'fake-fgsm'"):
        reg.get("fake-fgsn")


def test_unknown_parameter_suggests_closest(reg):
    with pytest.raises(SpecError, match=r"epz: unknown parameter .*did you mean 'eps'"):
        reg.resolve({"name": "fake-fgsm", "epz": 0.1}, where="attacks.0")


@pytest.mark.parametrize("eps", [-0.1, 0, 1.5, "big"])
def test_bad_values_rejected(reg, eps):
    with pytest.raises(SpecError, match=r"attacks\.0\.eps"):
        reg.resolve({"name": "fake-fgsm", "eps": eps}, where="attacks.0")


def test_names_by_pattern(reg):
    assert reg.names() == ["fake-fgsm", "fake-pgd"]
    assert reg.names("*pgd") == ["fake-pgd"]


def test_unknown_kind():
    with pytest.raises(ValueError):
        Registry("widget")


def test_unknown_component_of_a_known_plugin_names_the_plugin():
    with pytest.raises(UnknownComponentError, match=r"plugin 'tracekit-gradcam', which is not installed.*pip install"):
        Registry("saliency").get("grad-cam")


@pytest.mark.parametrize("key", ["eps", "steps"])
def test_a_boolean_is_not_a_number(reg, key):
    with pytest.raises(SpecError, match=rf"^attacks.0.{key}: a number, not true"):
        reg.resolve({"name": "fake-fgsm", key: True}, where="attacks.0")


def test_optional_and_constrained_numbers_refuse_booleans_too():
    from tracekit.plugins import registry

    for params in ({"decay": True}, {"max_iter": False}, {"eps": True}):
        with pytest.raises(SpecError, match="a number, not"):
            registry("attack").resolve({"name": "pgd", **params})
    assert registry("attack").resolve({"name": "pgd", "random_eps": True})["random_eps"] is True
