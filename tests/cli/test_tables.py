"""The terminal's tables fit 80 columns: no cell cut to '…', every number shown whole (run summary,
controls, a comparison of 11 detectors on 5 attacks), and the verdict and calibration lines."""

import io
import re

import pytest
from rich.console import Console
from typer.testing import CliRunner

from tracekit.cli import build_app
from tracekit.cli.compare import calibration_lines, compare_tables
from tracekit.cli.run import (
    controls_table,
    percent,
    short_ci,
    summary_table,
    verdict_lines,
)

ATTACKS = ["fgsm", "gradient", "pixel", "deepfool", "boundary"]
DETECTORS = [
    "paper", "local-entropy-5", "local-entropy-7", "global-entropy", "gradient", "smoothgrad",
    "integrated-gradients", "feature-squeezing", "lid", "mahalanobis", "kd-bu",
]  # fmt: skip


def attack_metrics(i, intervals=True):
    auc = 0.39 + 0.12 * i
    m = {
        "n_clean": 272, "n_attacked": 172 - 30 * i, "success_rate": 0.632 - 0.1 * i, "auc": auc,
        "tpr_at_fpr": {"0.01": 0.0 + 0.2 * i, "0.05": 0.012 + 0.2 * i, "0.1": 0.058 + 0.2 * i},
        "fpr": 0.0331, "recall": 0.0116 + 0.2 * i, "evasion_rate": 0.625 - 0.1 * i, "seconds": 1234.5,
        "perturbation": {"l2": 2.86, "linf": 0.1},
        "noise": {"sign": {"auc": auc - 0.01, "flag_rate": 0.4}, "gaussian": {"auc": 0.52, "flag_rate": 0.05}},
        "randomized_model": {"auc": 0.61},
    }  # fmt: skip
    if intervals:
        m["auc_ci"] = [auc - 0.05, min(auc + 0.05, 1.0)]
        m["tpr_at_fpr_ci"] = {level: [max(v - 0.05, 0.0), v + 0.05] for level, v in m["tpr_at_fpr"].items()}
        if i == 4:  # the widest interval there is
            m["tpr_at_fpr_ci"]["0.1"] = [1.0, 1.0]
    return m


def metrics(names=ATTACKS, intervals=True):
    return {"attacks": {name: attack_metrics(i, intervals) for i, name in enumerate(names)}, "target_fpr": 0.05}


def render(*renderables, width=80):
    console = Console(width=width, record=True, file=io.StringIO())
    for renderable in renderables:
        console.print(renderable)
    return console.export_text()


def assert_fits(text, width=80):
    assert "…" not in text
    assert max(len(line.rstrip()) for line in text.splitlines()) <= width


@pytest.mark.parametrize("intervals", [True, False])
def test_summary_table_fits_80_columns_with_every_number(intervals):
    m = metrics(["fgsm", "gradient", "pixel", "deepfool", "adaptive-feature-response"], intervals)
    text = render(summary_table(m, "quickstart: 536/540 clean correct, 264 fit / 272 test, threshold 2.9521"))
    assert_fits(text)
    for a in m["attacks"].values():
        expected = [f"{a['n_attacked']} ({percent(a['success_rate'])})", f"{a['auc']:.3f}", f"{a['fpr']:.3f}",
                    percent(a["evasion_rate"]), *(f"{v:.3f}" for v in a["tpr_at_fpr"].values())]  # fmt: skip
        if intervals:
            expected += [short_ci(a["auc_ci"]), *(short_ci(ci) for ci in a["tpr_at_fpr_ci"].values())]
        for value in expected:
            assert value in text, value
    assert "1.00-1.00" in text if intervals else "bootstrap" not in text
    assert "adaptive-feat" in text  # a long name wraps onto a second line


def test_short_intervals():
    assert short_ci([0.4103, 0.5218]) == ".41-.52"
    assert short_ci([0.95, 1.0]) == ".95-1.00"


def test_controls_table_fits_80_columns():
    m = metrics()
    text = render(controls_table(m))
    assert_fits(text)
    for a in m["attacks"].values():
        for value in (f"{a['auc']:.3f}", f"{a['noise']['sign']['auc']:.3f}", "0.520", "40%", "5%", "0.610"):
            assert value in text


def test_verdict_lines_and_calibration_problems():
    m = metrics()
    m["attacks"]["boundary"].update(fpr=0.1, recall=0.0, auc=0.89, auc_ci=[0.85, 0.93])
    text = " ".join(render(verdict_lines(m)).split())
    assert "fgsm adversarial images score lower than clean ones: AUC 0.39 [0.34, 0.44], below chance" in text
    assert "same-size random noise detected about as well (sign noise AUC" in text
    assert "calibration realized FPR 0.100 on 272 clean test images, 2.0x the target 5% (boundary)" in text
    assert "calibration threshold flags almost no adversarials of boundary" in text


def test_comparison_tables_fit_80_columns():
    per_detector = {label: metrics()["attacks"] for label in DETECTORS}
    tables = compare_tables(per_detector, "compare: 148 fit / 149 test images, same for every detector", 0.05)
    assert len(tables) == 3  # AUC, TPR, evasion: five attacks fit beside the longest label
    text = render(*tables)
    assert_fits(text)
    assert "ROC AUC" in text and "TPR at 5% FPR" in text and "evasion rate" in text
    rows = [line for line in text.splitlines() if line.startswith("integrated-gradients")]
    assert len(rows) == 3 and all(len(re.findall(r"\d\.\d{3}", row)) == 5 for row in rows)


def test_comparison_tables_split_attacks_that_do_not_fit():
    many = [f"attack-number-{i}" for i in range(9)]
    per_detector = {f"run-20250101-120000: {label}": metrics(many, False)["attacks"] for label in DETECTORS[:3]}
    tables = compare_tables(per_detector, "finished runs", 0.05)
    assert len(tables) > 3
    text = render(*tables)
    assert_fits(text)
    assert all(name in text for name in many)
    assert "(1/" in text


def test_comparison_calibration_lines_name_the_detector():
    per_detector = {
        "mahalanobis": {a: {**attack_metrics(3), "recall": 0.0} for a in ATTACKS},
        "paper": metrics()["attacks"],
    }
    lines = calibration_lines(per_detector, 0.05)
    expected = (
        "[yellow]calibration:[/] mahalanobis: threshold flags almost no adversarials of fgsm, gradient, pixel, "
        "deepfool, boundary (recall < 0.02 at AUC > 0.6)"
    )
    assert lines == [expected]


def test_cli_run_output_fits_80_columns(testing_plugin, tmp_path, monkeypatch):
    """`tracekit run` in an 80-column terminal: the whole output, controls included."""
    import yaml

    import tracekit.cli.run as run_cli

    console = Console(width=80, record=True, file=io.StringIO())
    monkeypatch.setattr(run_cli, "console", console)
    spec = {
        "name": "narrow", "seed": 1, "device": "cpu", "model": {"name": "tiny-cnn"},
        "data": {"name": "random-images", "n": 32},
        "attacks": [{"name": "sign-noise", "eps": 0.3}, {"name": "sign-noise", "eps": 0.1, "label": "weak-sign-noise"}],
        "detector": {"name": "feature-response", "score": {"name": "mean-abs"}},
        "evaluation": {"bootstrap": 50}, "controls": ["noise"], "batch_size": 16,
    }  # fmt: skip
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(build_app(), ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    text = console.export_text()
    assert "weak-sign-noise" in text and "controls" in text
    lines = [line for line in text.splitlines() if not line.startswith(("run directory:", "report:"))]
    assert_fits("\n".join(lines))
    import json

    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for a in m["attacks"].values():
        assert f"{a['auc']:.3f}" in text and f"{a['fpr']:.3f}" in text and short_ci(a["auc_ci"]) in text
