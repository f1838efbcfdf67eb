"""What a run's numbers say, in plain words: a verdict per attack, the controls that qualify it,
and calibration problems. Pure functions of `metrics.json` entries (no numpy, no I/O), shared by
the report and the terminal so that both say the same thing.

The rules (also in docs/method.md, "What the report and the terminal say"):

- Small samples first: with fewer than `MIN_PER_CLASS` (20) successful adversarials or clean test
  images the verdict is "too few images to conclude", whatever the AUC and its interval say (a
  bootstrap of three adversarials can give [1.00, 1.00]). `metrics.json` flags such an attack
  (`small_sample`); for runs written before the flag it is derived from `n_clean` and `n_attacked`.
- Otherwise the verdict reads the ROC AUC of the successful adversarials against the clean test
  images, rounded to two decimals as it is shown. With a bootstrap interval: "below chance" when the
  whole interval lies below 0.5, "no better than chance" when it contains 0.5; without one: below
  0.45, and 0.45 to 0.55. Otherwise "separates them well" from 0.90, "partly" from 0.75, "weakly" below.
- Controls, said only of an attack with enough images separated better than chance: random noise of
  the attack's size whose AUC is within 0.05 of the attack's (or higher) means the detector "flags
  perturbations of any kind, not specifically attacks"; a randomized model within 0.05 means the
  score does not depend on what the model learned.
- Calibration: the realized FPR on the clean test images below 0.5x or above 1.5x the target,
  when it is also more than two binomial standard deviations away from it (enough clean images to
  tell); a threshold that flags under 2% of an attack's successful adversarials while their AUC is
  above 0.6 and the test part's own ROC catches at least 4% of them at the target FPR (the scores
  rank them higher, but the threshold sits above nearly all of them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..engine.metrics import MIN_PER_CLASS

STRONG, MODERATE = 0.90, 0.75  # AUC from which a detector separates "well", "partly"
CHANCE, CHANCE_BAND = 0.5, 0.05  # without an interval, |AUC - 0.5| <= 0.05 is chance
CONTROL_MARGIN = 0.05  # a control within this much of the attack's AUC detects it "about as well"
FPR_LOW, FPR_HIGH, FPR_SIGMAS = 0.5, 1.5, 2.0
SILENT_RECALL, SILENT_AUC = 0.02, 0.6

LEVELS = ("strong", "moderate", "weak", "chance", "below", "few", "none")  # best first
DETECTED = ("strong", "moderate", "weak")
PHRASES = {
    "strong": "separates them well",
    "moderate": "separates them partly",
    "weak": "separates them weakly",
    "chance": "no better than chance",
    "below": "adversarial images score lower than clean ones",
    "few": "too few images to conclude",
    "none": "no successful adversarials to detect",
}
GROUP_PHRASES = {  # a comparison: which detectors ...
    "strong": "separate them well",
    "moderate": "partly",
    "weak": "weakly",
    "chance": "no better than chance",
    "below": "below chance (adversarials score lower)",
    "few": "too few images to conclude",
    "none": "no successful adversarials",
}
NOISE_NAMES = {"sign": "sign noise", "gaussian": "Gaussian noise"}


@dataclass(frozen=True)
class Verdict:
    """One attack's verdict: `level` (one of `LEVELS`), `text` ("no better than chance: AUC 0.47
    [0.41, 0.52]"), `counts` (what it rests on) and `notes` (controls that qualify it)."""

    attack: str
    level: str
    text: str
    counts: str
    notes: tuple[str, ...] = ()
    short_notes: tuple[str, ...] = ()  # the notes in a few words, for the terminal


@dataclass(frozen=True)
class Problem:
    """A calibration problem of one detector: `text` for the report, `short` for the terminal."""

    kind: str  # "fpr" or "silent"
    text: str
    short: str


@dataclass(frozen=True)
class AttackSummary:
    """A comparison on one attack: `groups` of `(level, phrase, [(detector, "0.98"), ...])`, best
    level first and the best detector first within each; `noise_alike`: detectors that detect
    same-size random noise about as well."""

    attack: str
    groups: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...]
    noise_alike: tuple[str, ...] = ()


def pct(value: float) -> str:
    """0.05 -> '5%', 0.025 -> '2.5%'."""
    return f"{round(value * 100, 4):g}%"


def auc_text(auc: float, ci: list[float] | None = None) -> str:
    """`AUC 0.47 [0.41, 0.52]` (two decimals, the interval where there is one)."""
    return f"AUC {auc:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def level(auc: float | None, ci: list[float] | None = None) -> str:
    """The verdict level of an AUC and its interval (see the module's rules)."""
    if auc is None:
        return "none"
    shown = round(auc, 2)
    if ci:
        if ci[1] < CHANCE:
            return "below"
        if ci[0] <= CHANCE:
            return "chance"
    elif shown < CHANCE - CHANCE_BAND:
        return "below"
    elif shown <= CHANCE + CHANCE_BAND:
        return "chance"
    return "strong" if shown >= STRONG else "moderate" if shown >= MODERATE else "weak"


def _count(value: Any) -> int:
    """A count from `metrics.json` (missing or malformed: 0)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def min_per_class(m: Mapping[str, Any]) -> int:
    """The fewest images per class an entry's numbers may rest on (as the run recorded it)."""
    recorded = m.get("min_per_class")
    return recorded if isinstance(recorded, int) and not isinstance(recorded, bool) else MIN_PER_CLASS


def small_sample(m: Mapping[str, Any]) -> bool:
    """Whether an attack's numbers rest on too few images to conclude from: its `small_sample`
    flag, or for a run written without one, fewer than `MIN_PER_CLASS` clean test images
    (`n_clean`) or successful adversarials (`n_attacked`)."""
    flag = m.get("small_sample")
    if isinstance(flag, bool):
        return flag
    return min(_count(m.get("n_clean")), _count(m.get("n_attacked"))) < MIN_PER_CLASS


def few_text(m: Mapping[str, Any]) -> str:
    """What a small sample is short of: `only 3 successful adversarials (fewer than 20)`."""
    n_adv, n_clean, least = _count(m.get("n_attacked")), _count(m.get("n_clean")), min_per_class(m)
    short = []
    if n_adv < least:
        short.append(f"{n_adv} successful adversarial{'s' if n_adv != 1 else ''}")
    if n_clean < least:
        short.append(f"{n_clean} clean test image{'s' if n_clean != 1 else ''}")
    return f"only {' and '.join(short)} (fewer than {least})" if short else f"fewer than {least} images per class"


def verdict_level(m: Mapping[str, Any]) -> str:
    """The verdict level of one `metrics.json` entry: `level` of its AUC and interval, "none"
    without successful adversarials, and "few" where the AUC rests on a small sample."""
    lvl = level(m.get("auc") if m.get("n_attacked") else None, m.get("auc_ci"))
    return "few" if lvl != "none" and small_sample(m) else lvl


def headline_key(m: Mapping[str, Any], target_fpr: float) -> str | None:
    """The `tpr_at_fpr` key closest to the target FPR (the lower one on a tie)."""
    keys = list(m.get("tpr_at_fpr") or {})
    return min(keys, key=lambda k: (abs(float(k) - target_fpr), float(k))) if keys else None


def verdict(attack: str, m: Mapping[str, Any], target_fpr: float) -> Verdict:
    """The verdict on one attack from its `metrics.json` entry."""
    auc, n_adv, n_clean = m.get("auc"), m.get("n_attacked") or 0, m.get("n_clean") or 0
    lvl = verdict_level(m)
    counts = f"{n_adv} successful adversarial{'s' if n_adv != 1 else ''}, {n_clean} clean test images"
    if lvl == "none":
        return Verdict(attack, lvl, PHRASES[lvl], counts)
    text = f"{PHRASES[lvl]}: {auc_text(auc, m.get('auc_ci'))}"
    if lvl == "few":
        return Verdict(attack, lvl, f"{text}, {few_text(m)}", counts)  # no control or TPR claims either
    if lvl == "below":
        text += ", below chance"
    key = headline_key(m, target_fpr)
    tpr = (m.get("tpr_at_fpr") or {}).get(key) if key else None
    if lvl in DETECTED and tpr is not None:
        text += f"; flagging {pct(float(key))} of clean images would catch {tpr:.0%} of them"
    notes = control_notes(m, lvl)
    return Verdict(attack, lvl, text, counts, tuple(n for n, _ in notes), tuple(s for _, s in notes))


def verdicts(per_attack: Mapping[str, Mapping[str, Any]], target_fpr: float) -> list[Verdict]:
    """A verdict per attack, in the run's order."""
    return [verdict(attack, m, target_fpr) for attack, m in per_attack.items()]


def control_notes(m: Mapping[str, Any], lvl: str) -> list[tuple[str, str]]:
    """What the noise and randomized-model controls say about an attack: `(sentence, the same in a
    few words)` each. Separated above chance: whether noise of its size, or a randomized model,
    does about as well. Not separated: whether noise of its size is separated better."""
    if lvl in ("none", "few"):
        return []
    auc = m["auc"]
    noise = [
        (NOISE_NAMES.get(kind, f"{kind} noise"), n["auc"])
        for kind, n in (m.get("noise") or {}).items()
        if isinstance(n, Mapping) and n.get("auc") is not None
    ]
    if lvl not in DETECTED:  # the adversarials are not told apart: is plain noise?
        better = [(name, a) for name, a in noise if a >= auc + CONTROL_MARGIN and level(a) in DETECTED]
        if not better:
            return []
        found = ", ".join(f"{name} AUC {a:.2f}" for name, a in better)
        return [(
            (f"random noise of the same size is separated better ({found}): the score reacts to "
             "perturbations, not to what makes these adversarial"),
            f"same-size random noise separated better ({found})",
        )]  # fmt: skip
    notes = []
    close = [(name, a) for name, a in noise if a >= auc - CONTROL_MARGIN]
    if close:
        how = "as well or better" if any(a > auc + CONTROL_MARGIN for _, a in close) else "about as well"
        found = ", ".join(f"{name} AUC {a:.2f}" for name, a in close)
        notes.append((
            (f"random noise of the same size is detected {how} ({found}): it flags perturbations of any "
             "kind, not specifically attacks"),
            f"same-size random noise detected {how} ({found})",
        ))  # fmt: skip
    randomized = (m.get("randomized_model") or {}).get("auc")
    if randomized is not None and randomized >= auc - CONTROL_MARGIN:
        notes.append((
            (f"with the model's weights randomized it separates them about as well (AUC {randomized:.2f}): "
             "the score does not depend on what the model learned"),
            f"randomized model about as good (AUC {randomized:.2f})",
        ))  # fmt: skip
    return notes


def fpr_problem(fpr: float, n_clean: int, target_fpr: float) -> Problem | None:
    """The realized FPR far from the target, with enough clean images to tell; else None."""
    if target_fpr <= 0 or n_clean <= 0:
        return None
    ratio = fpr / target_fpr
    spread = math.sqrt(n_clean * target_fpr * (1 - target_fpr))  # binomial standard deviation, in images
    if FPR_LOW <= ratio <= FPR_HIGH or abs(fpr - target_fpr) * n_clean <= FPR_SIGMAS * spread:
        return None
    flagged = round(fpr * n_clean)
    realized = f"the threshold flags {flagged} of the {n_clean} clean test images (FPR {fpr:.3f})"
    if ratio > FPR_HIGH:
        text = (f"{realized}, {ratio:.1f}x the target {pct(target_fpr)}: calibrated on the fit part, it flags more "
                "clean images than intended, and its detection rates are correspondingly higher")  # fmt: skip
        short = f"realized FPR {fpr:.3f} on {n_clean} clean test images, {ratio:.1f}x the target {pct(target_fpr)}"
    else:
        text = (f"{realized}, {ratio:.1f}x the target {pct(target_fpr)}: calibrated on the fit part, it is stricter "
                "than intended, and flags correspondingly fewer adversarials")  # fmt: skip
        short = f"realized FPR {fpr:.3f} on {n_clean} clean test images, {ratio:.1f}x the target {pct(target_fpr)}"
    return Problem("fpr", text, short)


def flags_nothing(m: Mapping[str, Any], target_fpr: float | None = None) -> bool:
    """The threshold flags (almost) none of the successful adversarials that the scores do rank
    higher; with `target_fpr`, only where the test part's own ROC catches at least twice as many
    at that FPR (else flagging none is what the scores allow, not a calibration problem)."""
    auc, recall = m.get("auc"), m.get("recall")
    if not m.get("n_attacked") or auc is None or recall is None or recall >= SILENT_RECALL or auc <= SILENT_AUC:
        return False
    key = headline_key(m, target_fpr) if target_fpr is not None else None
    tpr = (m.get("tpr_at_fpr") or {}).get(key) if key else None
    return tpr is None or tpr >= 2 * SILENT_RECALL


def calibration_problems(per_attack: Mapping[str, Mapping[str, Any]], target_fpr: float) -> list[Problem]:
    """One detector's calibration problems over its attacks (`{attack: metrics}`): the realized FPR
    far from the target (once per distinct FPR: every attack shares the clean test images), and a
    threshold that flags almost nothing."""
    problems = []
    by_fpr: dict[tuple[float, int], list[str]] = {}
    for attack, m in per_attack.items():
        if m.get("fpr") is not None and m.get("n_clean"):
            by_fpr.setdefault((float(m["fpr"]), int(m["n_clean"])), []).append(attack)
    for (fpr, n_clean), attacks in by_fpr.items():
        problem = fpr_problem(fpr, n_clean, target_fpr)
        if problem is not None:
            where = "" if len(by_fpr) == 1 else f" ({', '.join(attacks)})"
            problems.append(Problem("fpr", problem.text + where, problem.short + where))
    silent = [(attack, m) for attack, m in per_attack.items() if flags_nothing(m, target_fpr)]
    if silent:
        details = []
        for attack, m in silent:
            key = headline_key(m, target_fpr)
            tpr = (m.get("tpr_at_fpr") or {}).get(key) if key else None
            would = f"; {tpr:.0%} at {pct(float(key))} FPR on the test part" if tpr else ""
            details.append(f"{attack} (recall {m['recall']:.3f}, AUC {m['auc']:.3f}{would})")
        names = ", ".join(attack for attack, _ in silent)
        problems.append(Problem(
            "silent",
            f"the threshold flags almost none of the successful adversarials of {', '.join(details)}: the scores "
            "rank them above clean images, but the threshold calibrated on the fit part sits above nearly all of them",
            f"threshold flags almost no adversarials of {names} (recall < {SILENT_RECALL} at AUC > {SILENT_AUC})",
        ))  # fmt: skip
    return problems


def compare_summary(by_attack: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[AttackSummary]:
    """Per attack (`{attack: {detector: metrics}}`), the detectors grouped by verdict level."""
    out = []
    for attack, entries in by_attack.items():
        grouped: dict[str, list[tuple[float, str, str]]] = {}
        noise_alike = []
        for label, m in entries.items():
            lvl = verdict_level(m)
            auc = m.get("auc") if lvl != "none" else None
            grouped.setdefault(lvl, []).append(
                (-1.0 if auc is None else auc, label, "–" if auc is None else f"{auc:.2f}")
            )
            if lvl in DETECTED and any("random noise" in note for note, _ in control_notes(m, lvl)):
                noise_alike.append(label)
        groups = tuple(
            (
                lvl,
                GROUP_PHRASES[lvl],
                tuple((label, shown) for _, label, shown in sorted(grouped[lvl], key=lambda e: -e[0])),
            )
            for lvl in LEVELS
            if lvl in grouped
        )
        out.append(AttackSummary(attack, groups, tuple(noise_alike)))
    return out


def rules_text() -> str:
    """How the verdicts are worded, for the report (from this module's constants)."""
    return (
        "Each verdict reads the ROC AUC of the attack's successful adversarials against the clean test images, "
        f'rounded to two decimals: "below chance" when the whole bootstrap interval lies below {CHANCE}, "no '
        f'better than chance" when it contains {CHANCE} (without intervals: AUC below {CHANCE - CHANCE_BAND:.2f}, '
        f'and {CHANCE - CHANCE_BAND:.2f} to {CHANCE + CHANCE_BAND:.2f}); otherwise "well" from {STRONG:.2f}, '
        f'"partly" from {MODERATE:.2f}, "weakly" below. A control is mentioned when random noise of the '
        f"attack's size, or the detector on a randomized model, reaches an AUC within {CONTROL_MARGIN} of the "
        f"attack's or higher. With fewer than {MIN_PER_CLASS} successful adversarials or clean test images the "
        'verdict is "too few images to conclude", whatever the AUC and its interval (a bootstrap of a handful '
        "of images can give an interval such as [1.00, 1.00]); such numbers are marked in the tables. "
        "Calibration is called out when the realized FPR on the clean test images is below "
        f"{FPR_LOW}x or above {FPR_HIGH}x the target and more than {FPR_SIGMAS:g} binomial standard deviations "
        f"from it, or when the threshold flags under {pct(SILENT_RECALL)} of an attack's successful adversarials "
        f"although their AUC is above {SILENT_AUC} and the test part's ROC catches at least {pct(2 * SILENT_RECALL)} "
        "of them at the target FPR."
    )


def overall(found: list[Verdict]) -> str | None:
    """One sentence over a run's verdicts: on which attacks the hypothesis (adversarials score
    higher) is borne out, on which not; None where no attack had successful adversarials."""
    few = [v.attack for v in found if v.level == "few"]
    measured = [v for v in found if v.level not in ("none", "few")]
    if not measured:
        return f"Too few images to conclude anything on {', '.join(few)}." if few else None
    higher = [v.attack for v in measured if v.level in DETECTED]
    lower = [v.attack for v in measured if v.level == "below"]
    if len(higher) == len(measured) and not few:
        sentence = "The hypothesis is borne out on every attack here: the adversarials score higher than clean images"
    elif len(higher) == len(measured):
        sentence = (
            f"The hypothesis is borne out on {', '.join(higher)}: the adversarials score higher than clean images"
        )
    elif not higher:
        sentence = (
            "The hypothesis is not borne out here: "
            "on no attack do the adversarials score higher than clean images beyond chance"
        )
    else:
        others = [v.attack for v in measured if v.level not in DETECTED]
        sentence = f"The hypothesis is borne out on {', '.join(higher)}; not on {', '.join(others)}"
    if lower:
        sentence += f"; on {', '.join(lower)} they even score lower"
    caveats = [v.attack for v in measured if v.notes and v.level in DETECTED]
    if caveats:
        sentence += f" (but see the controls' caveats on {', '.join(caveats)})"
    if few:
        sentence += f"; too few images to conclude on {', '.join(few)}"
    return sentence + "."
