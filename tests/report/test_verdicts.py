"""Plain-words verdicts: AUC levels (with and without intervals), the noise and randomized-model
controls, calibration problems, a comparison's grouping, and the rules text."""

import pytest

from tracekit.report import verdicts as v


def entry(auc=0.8, ci=None, n_attacked=100, n_clean=200, recall=0.5, fpr=0.05, **extra):
    return {
        "auc": auc, "auc_ci": ci, "n_attacked": n_attacked, "n_clean": n_clean, "recall": recall, "fpr": fpr,
        "tpr_at_fpr": {"0.01": 0.2, "0.05": 0.41, "0.1": 0.6}, **extra,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("auc", "ci", "level"),
    [
        (0.39, [0.33, 0.47], "below"),  # the whole interval below 0.5
        (0.47, [0.41, 0.52], "chance"),  # contains 0.5
        (0.56, [0.49, 0.63], "chance"),
        (0.62, [0.55, 0.69], "weak"),
        (0.82, [0.75, 0.88], "moderate"),
        (0.98, [0.96, 0.99], "strong"),
        (0.895, [0.85, 0.93], "strong"),  # classified as shown: 0.90
        (0.40, None, "below"),  # no interval: fixed bands around 0.5
        (0.45, None, "chance"),
        (0.55, None, "chance"),
        (0.56, None, "weak"),
        (0.75, None, "moderate"),
        (0.90, None, "strong"),
        (None, None, "none"),
    ],
)
def test_levels(auc, ci, level):
    assert v.level(auc, ci) == level


def test_verdict_sentences_say_what_was_found():
    below = v.verdict("fgsm", entry(0.39, [0.33, 0.47]), 0.05)
    assert below.level == "below"
    assert below.text == "adversarial images score lower than clean ones: AUC 0.39 [0.33, 0.47], below chance"
    assert below.counts == "100 successful adversarials, 200 clean test images"
    chance = v.verdict("fgsm", entry(0.47, [0.41, 0.52]), 0.05)
    assert chance.text == "no better than chance: AUC 0.47 [0.41, 0.52]"
    well = v.verdict("fgsm", entry(0.98, [0.96, 0.99]), 0.05)
    assert (
        well.text == "separates them well: AUC 0.98 [0.96, 0.99]; flagging 5% of clean images would catch 41% of them"
    )
    tenth = v.verdict("fgsm", entry(0.98), 0.1)  # the TPR at the level closest to the target
    assert tenth.text.endswith("flagging 10% of clean images would catch 60% of them")
    none = v.verdict("pixel", entry(None, n_attacked=0), 0.05)
    assert none.level == "none" and none.text == "no successful adversarials to detect"
    assert v.verdict("x", entry(0.9, n_attacked=0), 0.05).level == "none"  # no positives, whatever the AUC says
    assert [x.attack for x in v.verdicts({"a": entry(), "b": entry()}, 0.05)] == ["a", "b"]


def test_noise_control_said_when_noise_is_detected_about_as_well_or_better():
    noise = {"sign": {"auc": 0.94, "flag_rate": 0.5}, "gaussian": {"auc": 0.70, "flag_rate": 0.1}}
    found = v.verdict("fgsm", entry(0.97, [0.95, 0.99], noise=noise), 0.05)
    assert len(found.notes) == 1
    assert found.notes[0] == ("random noise of the same size is detected about as well (sign noise AUC 0.94): "
                              "it flags perturbations of any kind, not specifically attacks")  # fmt: skip
    assert found.short_notes == ("same-size random noise detected about as well (sign noise AUC 0.94)",)
    better = v.verdict("fgsm", entry(0.80, noise={"gaussian": {"auc": 0.90}}), 0.05)
    assert "as well or better (Gaussian noise AUC 0.90)" in better.notes[0]
    far = v.verdict("fgsm", entry(0.97, noise={"sign": {"auc": 0.91}, "gaussian": {"auc": None}}), 0.05)
    assert far.notes == ()  # 0.06 below the attack's AUC
    chance = v.verdict("fgsm", entry(0.5, [0.4, 0.6], noise={"sign": {"auc": 0.54}, "gaussian": {"auc": 0.3}}), 0.05)
    assert chance.notes == ()  # nothing detected, and noise within 0.05 of it: nothing to qualify
    noisier = v.verdict(
        "fgsm", entry(0.47, [0.41, 0.52], noise={"sign": {"auc": 0.563}, "gaussian": {"auc": 0.54}}), 0.05
    )
    assert noisier.notes == (
        (
            "random noise of the same size is separated better (sign noise AUC 0.56): the score reacts to "
            "perturbations, not to what makes these adversarial"
        ),
    )
    assert noisier.short_notes == ("same-size random noise separated better (sign noise AUC 0.56)",)


def test_randomized_model_control():
    same = v.verdict("fgsm", entry(0.9, randomized_model={"auc": 0.87}), 0.05)
    assert same.notes == (
        (
            "with the model's weights randomized it separates them about as well (AUC 0.87): "
            "the score does not depend on what the model learned"
        ),
    )
    assert v.verdict("fgsm", entry(0.9, randomized_model={"auc": 0.6}), 0.05).notes == ()


def test_realized_fpr_far_from_target_needs_enough_clean_images():
    # the case: 0.087 for a 0.05 target on about 150 clean test images
    high = v.fpr_problem(13 / 150, 150, 0.05)
    assert high is not None and high.kind == "fpr"
    assert high.short == "realized FPR 0.087 on 150 clean test images, 1.7x the target 5%"
    assert "flags 13 of the 150 clean test images" in high.text and "more clean images than intended" in high.text
    low = v.fpr_problem(2 / 400, 400, 0.05)
    assert low is not None and "stricter than intended" in low.text and "0.1x the target 5%" in low.short
    assert v.fpr_problem(9 / 272, 272, 0.05) is None  # 0.66x: within [0.5, 1.5]
    assert v.fpr_problem(0.0, 16, 0.05) is None  # 0 of 16 where 0.8 were expected: too few to tell
    assert v.fpr_problem(4 / 40, 40, 0.05) is None  # 2x, but 4 vs 2 expected is within two standard deviations
    assert v.fpr_problem(0.1, 100, 0.0) is None


def test_calibration_problems_once_per_detector():
    per_attack = {"fgsm": entry(fpr=13 / 150, n_clean=150), "gradient": entry(fpr=13 / 150, n_clean=150)}
    problems = v.calibration_problems(per_attack, 0.05)
    assert [p.kind for p in problems] == ["fpr"]  # the attacks share the clean test images: said once
    assert "(" not in problems[0].short
    split = v.calibration_problems({"a": entry(fpr=0.1, n_clean=400), "b": entry(fpr=0.05, n_clean=400)}, 0.05)
    assert [p.short.endswith("(a)") for p in split] == [True]  # differing FPRs: says which attacks
    assert v.calibration_problems({"fgsm": entry()}, 0.05) == []


def test_a_threshold_that_flags_almost_nothing():
    mahalanobis = {
        "fgsm": entry(0.89, recall=0.0, fpr=0.05),
        "gradient": entry(0.74, recall=0.007, fpr=0.05),
        "pixel": entry(0.55, recall=0.0, fpr=0.05),  # AUC too low to expect anything flagged
        "deepfool": entry(0.9, recall=0.3, fpr=0.05),
        "boundary": entry(None, recall=None, n_attacked=0),
    }
    problems = v.calibration_problems(mahalanobis, 0.05)
    assert [p.kind for p in problems] == ["silent"]
    assert problems[0].short == "threshold flags almost no adversarials of fgsm, gradient (recall < 0.02 at AUC > 0.6)"
    assert "fgsm (recall 0.000, AUC 0.890; 41% at 5% FPR on the test part)" in problems[0].text
    assert "gradient (recall 0.007, AUC 0.740; 41% at 5% FPR" in problems[0].text
    assert not v.flags_nothing(entry(0.9, recall=0.02))
    assert v.flags_nothing(entry(0.61, recall=0.019))
    # none flagged where the test part's own ROC catches (almost) none at the target FPR either:
    # a weak detector on few adversarials, not a calibration problem
    weak = {**entry(0.65, recall=0.0, n_attacked=13), "tpr_at_fpr": {"0.01": 0.0, "0.05": 0.0, "0.1": 0.08}}
    assert v.flags_nothing(weak) and not v.flags_nothing(weak, 0.05) and v.flags_nothing(weak, 0.1)
    assert v.calibration_problems({"pixel": weak}, 0.05) == []


def test_compare_summary_groups_detectors_best_first():
    noise = {"sign": {"auc": 0.99}}
    by_attack = {
        "fgsm": {
            "paper": entry(0.47, [0.41, 0.52]),
            "kd-bu": entry(0.98, [0.96, 0.99]),
            "lid": entry(0.99, [0.97, 1.0], noise=noise),
            "gradient": entry(0.39, [0.33, 0.47]),
            "ms": entry(0.8, None),
        },
        "pixel": {"paper": entry(None, n_attacked=0)},
    }
    fgsm, pixel = v.compare_summary(by_attack)
    assert fgsm.attack == "fgsm"
    assert [(level, [label for label, _ in entries]) for level, _, entries in fgsm.groups] == [
        ("strong", ["lid", "kd-bu"]), ("moderate", ["ms"]), ("chance", ["paper"]), ("below", ["gradient"]),
    ]  # fmt: skip
    assert fgsm.groups[0][2] == (("lid", "0.99"), ("kd-bu", "0.98"))
    assert fgsm.noise_alike == ("lid",)
    assert pixel.groups == (("none", "no successful adversarials", (("paper", "–"),)),)


def test_rules_text_names_the_thresholds():
    text = v.rules_text()
    for part in ("0.90", "0.75", "0.45", "0.55", "within 0.05", "0.5x", "1.5x", "2 binomial", "2%", "above 0.6"):
        assert part in text
    assert v.pct(0.05) == "5%" and v.pct(0.025) == "2.5%" and v.pct(0.1) == "10%"


def test_overall_sentence():
    def found(*aucs, **extra):
        return v.verdicts({f"a{i}": entry(auc, None, **extra) for i, auc in enumerate(aucs)}, 0.05)

    assert (
        v.overall(found(0.95, 0.8))
        == "The hypothesis is borne out on every attack here: the adversarials score higher than clean images."
    )
    assert v.overall(found(0.5, 0.3)) == (
        "The hypothesis is not borne out here: "
        "on no attack do the adversarials score higher than clean images beyond chance; "
        "on a1 they even score lower."
    )
    assert v.overall(found(0.95, 0.5)) == "The hypothesis is borne out on a0; not on a1."
    assert v.overall(found(0.95, randomized_model={"auc": 0.94})).endswith("(but see the controls' caveats on a0).")
    assert v.overall(v.verdicts({"x": entry(None, n_attacked=0)}, 0.05)) is None


def test_compare_summary_names_noise_alike_detectors_only_where_they_detect_the_attack():
    noisy = {"sign": {"auc": 0.6}}
    (summary,) = v.compare_summary(
        {"fgsm": {"a": entry(0.47, [0.41, 0.52], noise=noisy), "b": entry(0.6, noise=noisy)}}
    )
    assert summary.noise_alike == ("b",)  # a's attack is not detected: its note says noise is separated better


@pytest.mark.parametrize(
    ("n_attacked", "n_clean", "said"),
    [
        (3, 200, "only 3 successful adversarials (fewer than 20)"),
        (1, 200, "only 1 successful adversarial (fewer than 20)"),
        (100, 12, "only 12 clean test images (fewer than 20)"),
        (5, 8, "only 5 successful adversarials and 8 clean test images (fewer than 20)"),
    ],
)
def test_a_small_sample_is_too_few_to_conclude_whatever_its_interval(n_attacked, n_clean, said):
    """`limit: 3` gave AUC 1.000 [1.00, 1.00]: no claim of separating anything may follow from it."""
    found = v.verdict("fgsm", entry(1.0, [1.0, 1.0], n_attacked=n_attacked, n_clean=n_clean), 0.05)
    assert found.level == "few" and found.level not in v.DETECTED
    assert found.text == f"too few images to conclude: AUC 1.00 [1.00, 1.00], {said}"
    assert "separates" not in found.text and "catch" not in found.text  # neither a verdict nor a TPR claim
    below = v.verdict("fgsm", entry(0.1, [0.0, 0.3], n_attacked=n_attacked, n_clean=n_clean), 0.05)
    assert below.level == "few" and "below chance" not in below.text


def test_enough_images_of_each_class_keep_the_ordinary_verdict():
    assert v.verdict("fgsm", entry(0.98, [0.96, 0.99], n_attacked=20, n_clean=20), 0.05).level == "strong"
    assert v.verdict("fgsm", entry(None, n_attacked=0, n_clean=5), 0.05).level == "none"  # nothing to conclude on


def test_the_recorded_flag_wins_and_older_runs_derive_it_from_the_counts():
    old = entry(0.99, [0.99, 1.0], n_attacked=4)  # metrics.json written before the flag: derived
    assert "small_sample" not in old and v.small_sample(old) and v.verdict("a", old, 0.05).level == "few"
    assert not v.small_sample(entry(0.99, n_attacked=4, small_sample=False))  # the run's own word
    assert v.small_sample(entry(0.99, n_attacked=400, small_sample=True))
    assert v.small_sample({"auc": 0.9})  # no counts at all: nothing to rest a conclusion on
    assert v.small_sample(entry(n_attacked="many"))  # a malformed count is no count
    recorded = entry(0.9, [0.8, 1.0], n_attacked=30, small_sample=True, min_per_class=50)
    assert v.verdict("a", recorded, 0.05).text.endswith("only 30 successful adversarials (fewer than 50)")


def test_small_samples_make_no_control_claims_and_are_set_apart_in_summaries():
    noise = {"sign": {"auc": 0.99}}
    few = entry(0.97, [0.9, 1.0], n_attacked=5, noise=noise, randomized_model={"auc": 0.97})
    assert v.verdict("fgsm", few, 0.05).notes == () and v.control_notes(few, "few") == []
    (summary,) = v.compare_summary({"fgsm": {"paper": few, "lid": entry(0.95, [0.9, 0.99], noise=noise)}})
    assert [(level, [label for label, _ in entries]) for level, _, entries in summary.groups] == [
        ("strong", ["lid"]),
        ("few", ["paper"]),
    ]
    assert summary.groups[1][1] == "too few images to conclude" and summary.noise_alike == ("lid",)


def test_overall_sentence_sets_small_samples_apart():
    few = entry(1.0, [1.0, 1.0], n_attacked=3)
    assert v.overall(v.verdicts({"fgsm": few}, 0.05)) == "Too few images to conclude anything on fgsm."
    assert v.overall(v.verdicts({"fgsm": few, "gradient": entry(0.95), "pixel": few}, 0.05)) == (
        "The hypothesis is borne out on gradient: the adversarials score higher than clean images; "
        "too few images to conclude on fgsm, pixel."
    )
    assert v.overall(v.verdicts({"fgsm": few, "gradient": entry(0.5)}, 0.05)).endswith(
        "beyond chance; too few images to conclude on fgsm."
    )
    assert "20 successful adversarials or clean test images" in v.rules_text()
