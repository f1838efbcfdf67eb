from pathlib import Path

import pytest
import yaml

from tracekit.errors import SpecError, UnknownComponentError
from tracekit.spec import dump_spec, load_spec, validate_spec

QUICKSTART = Path(__file__).parent.parent / "examples" / "quickstart.yaml"


def write(tmp_path, data, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def base():
    return {
        "name": "t",
        "model": {"name": "digits-cnn"},
        "data": {"name": "digits"},
        "attacks": [{"name": "fgsm", "eps": 0.1}],
    }


def test_quickstart_resolves_with_defaults():
    spec = load_spec(QUICKSTART)
    assert spec.detector["saliency"] == {"name": "guided-backprop"}
    assert spec.detector["score"] == {"name": "local-entropy", "size": 3}
    assert spec.attacks[0]["name"] == "fgsm" and spec.attacks[0]["eps"] == 0.1
    assert set(spec.attacks[0]) > {"name", "eps"}  # every default filled in
    assert spec.calibration.target_fpr == 0.05


def test_default_detector_is_the_papers(tmp_path):
    spec = load_spec(write(tmp_path, base()))
    assert spec.detector["name"] == "feature-response"


def test_resolved_spec_round_trips(tmp_path):
    spec = load_spec(QUICKSTART)
    again = load_spec(write(tmp_path, dump_spec(spec)))
    assert again.model_dump() == spec.model_dump()


def test_overrides_coerce_types(tmp_path):
    spec = load_spec(
        QUICKSTART, ["attacks.0.eps=0.05", "seed=3", "calibration.target_fpr=0.01", "data.limit=20", "device=cpu"]
    )
    assert spec.attacks[0]["eps"] == 0.05 and isinstance(spec.attacks[0]["eps"], float)
    assert spec.seed == 3 and spec.calibration.target_fpr == 0.01
    assert spec.data["limit"] == 20 and spec.device == "cpu"


def test_override_creates_default_section(tmp_path):
    spec = load_spec(write(tmp_path, base()), ["calibration.fit_fraction=0.3"])
    assert spec.calibration.fit_fraction == 0.3


@pytest.mark.parametrize(
    "override, message",
    [
        ("attacks.0.epz=0.1", r"attacks\.0\.epz: unknown parameter .*did you mean 'eps'"),
        ("attacks.5.eps=0.1", r"index 5 out of range"),
        ("attacks.x.eps=0.1", r"is a list"),
        ("seeed=1", r"seeed: unknown key \(did you mean 'seed'\?\)"),
        ("calibratio.target_fpr=0.1", r"no field 'calibratio' \(did you mean 'calibration'\?\)"),
        ("calibration.target_fp=0.1", r"calibration\.target_fp: unknown key \(did you mean 'target_fpr'\?\)"),
        ("attacks.0.eps=abc", r"attacks\.0\.eps: .*number"),
        ("noequals", r"expected KEY=VALUE"),
        ("seed.x=1", r"is a value"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(SpecError, match=message):
        load_spec(QUICKSTART, [override])


def test_unknown_top_level_key_suggests(tmp_path):
    with pytest.raises(SpecError, match=r"atacks: unknown key \(did you mean 'attacks'\?\)"):
        load_spec(write(tmp_path, {**base(), "atacks": []}))


def test_unknown_component_suggests(tmp_path):
    data = base()
    data["attacks"] = [{"name": "fgms"}]
    with pytest.raises(UnknownComponentError, match=r"attacks\.0\.name: unknown attack 'fgms' \(did you mean 'fgsm'"):
        load_spec(write(tmp_path, data))


def test_unknown_nested_component(tmp_path):
    data = {**base(), "detector": {"name": "feature-response", "saliency": {"name": "guided-backprob"}}}
    with pytest.raises(SpecError, match=r"detector\.saliency: .*unknown saliency 'guided-backprob'.*guided-backprop"):
        load_spec(write(tmp_path, data))


def test_wrong_parameter_type(tmp_path):
    data = base()
    data["attacks"][0]["eps"] = "large"
    with pytest.raises(SpecError, match=r"attacks\.0\.eps"):
        load_spec(write(tmp_path, data))


def test_invalid_yaml_names_line(tmp_path):
    with pytest.raises(SpecError, match=r"spec.yaml:\d+:\d+: invalid YAML"):
        load_spec(write(tmp_path, "name: x\nmodel: {name: digits-cnn}\nattacks: [ {name: fgsm\n"))


def test_missing_file():
    with pytest.raises(SpecError, match="does not exist"):
        load_spec("no/such/spec.yaml")


def test_not_a_mapping(tmp_path):
    with pytest.raises(SpecError, match="a spec is a YAML mapping"):
        load_spec(write(tmp_path, "- just\n- a list\n"))


def test_missing_required_keys(tmp_path):
    with pytest.raises(SpecError, match=r"model: required key is missing"):
        load_spec(write(tmp_path, {"name": "x", "data": {"name": "digits"}, "attacks": [{"name": "fgsm"}]}))


def test_duplicate_attacks_need_labels(tmp_path):
    data = base()
    data["attacks"] = [{"name": "fgsm", "eps": 0.1}, {"name": "fgsm", "eps": 0.2}]
    with pytest.raises(SpecError, match=r"attacks\.1: 'fgsm' appears twice.*label"):
        load_spec(write(tmp_path, data))
    data["attacks"][1]["label"] = "fgsm-0.2"
    assert load_spec(write(tmp_path, data)).attack_key(1) == "fgsm-0.2"


def test_detector_and_detectors_exclusive(tmp_path):
    data = {**base(), "detector": {"name": "feature-response"}, "detectors": [{"name": "feature-response"}]}
    with pytest.raises(SpecError, match="not both"):
        load_spec(write(tmp_path, data))


@pytest.mark.parametrize("field, value", [("device", "gpu"), ("batch_size", 0), ("name", "bad name/")])
def test_bad_values(tmp_path, field, value):
    with pytest.raises(SpecError, match=field):
        load_spec(write(tmp_path, {**base(), field: value}))


def test_every_component_error_is_reported_at_once():
    data = {
        "name": "t",
        "model": {"name": "digits-cnn"},
        "data": {"name": "digits"},
        "attacks": [{"name": "fgsm", "eps": -0.1}, {"name": "pgd", "norm": 3}, {"name": "fgsm", "eps": 0.1}],
        "detector": {"name": "feature-response", "score": {"name": "local-entropy", "size": 0}},
    }
    with pytest.raises(SpecError) as info:
        validate_spec(data, source="s.yaml")
    message = str(info.value)
    assert message.startswith("s.yaml: attacks.0.eps:")
    assert "attacks.1.norm: norm must be inf" in message
    assert "attacks.2" not in message
    assert "size" in message and message.count("s.yaml") == 1


@pytest.mark.parametrize(
    "label,message",
    [
        ("clean", "'clean' names the clean images"),
        ("", "non-empty string"),
        (" fgsm", "without surrounding spaces"),
        (["a"], "non-empty string"),
        ("a/b", "slash"),
    ],
)
def test_bad_attack_labels_are_refused(label, message):
    data = {"name": "t", "model": {"name": "digits-cnn"}, "data": {"name": "digits"},
            "attacks": [{"name": "fgsm", "label": label}]}  # fmt: skip
    with pytest.raises(SpecError, match=message):
        validate_spec(data)


@pytest.mark.parametrize("eps", [float("inf"), float("nan")])
def test_non_finite_parameters_are_refused(eps):
    data = {"name": "t", "model": {"name": "digits-cnn"}, "data": {"name": "digits"},
            "attacks": [{"name": "gradient", "eps": eps}]}  # fmt: skip
    with pytest.raises(SpecError, match="attacks.0.eps: Input should be a finite number"):
        validate_spec(data)


def test_errors_from_overrides_say_so():
    with pytest.raises(SpecError, match=r"quickstart.yaml \(with --set attacks.0.esp=0.05\): attacks.0.esp: unknown"):
        load_spec(QUICKSTART, ["attacks.0.esp=0.05"])


def test_a_key_given_twice_is_refused(tmp_path):
    path = write(
        tmp_path, "name: a\nname: b\nmodel: {name: digits-cnn}\ndata: {name: digits}\nattacks: [{name: fgsm}]\n"
    )
    with pytest.raises(SpecError, match=r"spec.yaml:2:1: invalid YAML: key 'name' is given twice"):
        load_spec(path)


def test_a_negative_seed_is_refused():
    data = {"name": "t", "seed": -1, "model": {"name": "digits-cnn"}, "data": {"name": "digits"},
            "attacks": [{"name": "fgsm"}]}  # fmt: skip
    with pytest.raises(SpecError, match="seed: Input should be greater than or equal to 0"):
        validate_spec(data)


def test_overrides_are_a_list():
    with pytest.raises(TypeError, match=r"a list of 'KEY=VALUE' strings, e.g. \['attacks.0.eps=0.05'\]"):
        load_spec(QUICKSTART, "attacks.0.eps=0.05")


def test_overriding_a_defaulted_component_keeps_its_default_name(tmp_path):
    spec = load_spec(QUICKSTART, ["detector.score.size=5"])
    assert spec.detector["score"] == {"name": "local-entropy", "size": 5}
    bare = write(tmp_path, {"name": "t", "model": {"name": "digits-cnn"}, "data": {"name": "digits"},
                            "attacks": [{"name": "fgsm"}]})  # fmt: skip
    spec = load_spec(bare, ["detector.score.size=7"])
    assert spec.detector["name"] == "feature-response" and spec.detector["score"]["size"] == 7


def test_structure_and_component_errors_come_together():
    from tracekit.errors import SpecError
    from tracekit.spec import validate_spec

    data = {
        "name": "x",
        "model": {"name": "digits-cnn"},
        "data": {"name": "digits"},
        "attacks": [{"name": "fgsn"}, {"name": "fgsm", "esp": 0.1}],
        "atacks": [],
    }
    with pytest.raises(SpecError) as caught:
        validate_spec(data, source="spec.yaml")
    message = str(caught.value)
    assert message.startswith("spec.yaml: atacks: unknown key (did you mean 'attacks'?); ")
    assert "attacks.0.name: unknown attack 'fgsn' (did you mean 'fgsm'" in message
    assert "attacks.1.esp: unknown parameter of attack 'fgsm' (did you mean 'eps'?)" in message
    assert message.count("spec.yaml") == 1
