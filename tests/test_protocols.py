"""The attacks' optional capabilities, as the engine sees them (through the Protocols, by name)."""

from __future__ import annotations

import pytest

import tracekit
from tracekit.protocols import Attack, CacheKeyed, DetectorBound, InputChecked, PerImageAttack, SeededAttack

CAPABILITIES = {
    PerImageAttack: "per-image",
    SeededAttack: "seeded",
    InputChecked: "input-checked",
    DetectorBound: "detector-bound",
    CacheKeyed: "cache-keyed",
}


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"name": "fgsm", "eps": 0.1}, set()),
        ({"name": "pixel"}, {"per-image", "input-checked"}),
        ({"name": "pixel", "backend": "native"}, {"seeded", "input-checked"}),
        ({"name": "boundary"}, {"per-image"}),
        ({"name": "boundary", "backend": "native"}, {"seeded"}),
        ({"name": "adaptive-entropy"}, {"detector-bound", "seeded"}),
        ({"name": "adaptive"}, {"detector-bound", "seeded"}),
    ],
    ids=lambda value: "-".join(map(str, value.values())) if isinstance(value, dict) else None,
)
def test_built_in_attacks_declare_their_capabilities(params: dict, expected: set[str]) -> None:
    attack = tracekit.create("attack", **params)
    assert isinstance(attack, Attack)
    found = {name for protocol, name in CAPABILITIES.items() if isinstance(attack, protocol)}
    assert found == expected
    if "per-image" in found:
        assert attack.per_image is True
    if "detector-bound" in found:
        assert attack.needs_detector is True
