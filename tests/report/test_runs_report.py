"""`tracekit compare RUN_DIR...` writes a comparison directory with a report: the side-by-side
table as the runs measured it, ROC curves from the runs' score rows, verdicts, warnings; escaped,
self-contained, rebuilt by `tracekit report`, named like a comparison's directory."""

import base64
import csv
import json
import re

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from tracekit import compare, run
from tracekit.cli import build_app

EVIL_LABEL = '<b>&"x'


def base(**extra):
    spec = {
        "name": "runs-report",
        "seed": 4,
        "device": "cpu",
        "model": {"name": "tiny-cnn"},
        "data": {"name": "random-images", "n": 32},
        "attacks": [{"name": "sign-noise", "eps": 0.3}, {"name": "sign-noise", "eps": 0.1, "label": "weak"}],
        "evaluation": {"bootstrap": 50},
        "batch_size": 16,
    }
    spec.update(extra)
    return spec


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from tracekit import plugins
    from tracekit.testing import testing_plugin

    plugins.register_plugin(testing_plugin, "tracekit-testing")
    root = tmp_path_factory.mktemp("runs")
    try:
        first = run(base(detector={"name": "feature-response", "label": EVIL_LABEL}), out=root / "first")
        other = run(base(detector={"name": "feature-response", "score": {"name": "mean-abs"}},
                         data={"name": "random-images", "n": 28}), out=root / "other")  # fmt: skip
        both = compare(base(detectors=[{"name": "feature-response", "label": "paper"},
                                       {"name": "feature-response", "score": {"name": "mean-abs"}, "label": "m"}]),
                       out=root / "both")  # fmt: skip
        yield root, [first, other, both]
    finally:
        plugins.unregister_plugin("tracekit-testing")


def invoke(*args, **kwargs):
    return CliRunner().invoke(build_app(), [str(a) for a in args], **kwargs)


@pytest.fixture(scope="module")
def written(runs):
    root, results = runs
    result = invoke("compare", *(r.out_dir for r in results), "--out", root / "side-by-side")
    assert result.exit_code == 0, result.output
    return root / "side-by-side", result.output


@pytest.fixture(scope="module")
def page(written, parse_page):
    return parse_page((written[0] / "report.html").read_text(encoding="utf-8"))


LABELS = [f"first: {EVIL_LABEL}", "other: feature-response", "both: paper", "both: m"]
FIGURES = ["auc_heatmap.png", "roc_sign-noise.png", "roc_weak.png"]


def test_the_directory_holds_the_comparison_scores_figures_and_report(written):
    directory, output = written
    assert f"report: {directory / 'report.html'}" in " ".join(output.split())
    document = json.loads((directory / "comparison.json").read_text())
    assert list(document["detectors"]) == LABELS
    assert document["runs"]["both: m"]["detector"] == "m" and document["runs"]["both: m"]["run_dir"].endswith("both")
    assert any("different clean images" in w for w in document["warnings"])
    for name in (*FIGURES, "scores.csv", "report.html"):
        assert (directory / name).is_file(), name
    assert not list(directory.parent.glob(".side-by-side*"))  # no work directory left behind


def test_scores_are_the_runs_rows_labelled_as_compared(runs, written):
    _, results = runs
    with open(written[0] / "scores.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    with open(results[1].out_dir / "scores.csv", newline="") as fh:
        other = list(csv.DictReader(fh))
    assert [{k: v for k, v in r.items() if k != "detector"} for r in rows if r["detector"] == LABELS[1]] == other
    # the ROC of a detector from these rows gives its run's AUC
    mine = [r for r in rows if r["detector"] == "both: paper"]
    clean = [float(r["score"]) for r in mine if r["attack"] == "clean"]
    adv = [float(r["score"]) for r in mine if r["attack"] == "weak" and r["success"] == "1"]
    auc = results[2].metrics["detectors"]["paper"]["attacks"]["weak"]["auc"]
    assert roc_auc_score(np.r_[np.zeros(len(clean)), np.ones(len(adv))], np.r_[clean, adv]) == pytest.approx(auc)


def test_runs_report_table_matches_the_runs_metrics(runs, page):
    _, (first, other, both) = runs
    table = page.table_with("detector", "sign-noise", "weak")
    rows = page.rows_by_label(table)
    assert list(rows) == LABELS  # the evil label reads back exactly as written
    measured = {
        LABELS[0]: first.metrics["attacks"], LABELS[1]: other.metrics["attacks"],
        LABELS[2]: both.metrics["detectors"]["paper"]["attacks"], LABELS[3]: both.metrics["detectors"]["m"]["attacks"],
    }  # fmt: skip
    for label, per_attack in measured.items():
        expected = []
        for attack in ("sign-noise", "weak"):
            m = per_attack[attack]
            for value, (lo, hi) in [(m["auc"], m["auc_ci"]), (m["tpr_at_fpr"]["0.05"], m["tpr_at_fpr_ci"]["0.05"])]:
                expected += [f"{value:.3f}", f"[{lo:.3f}, {hi:.3f}]"]
        assert rows[label] == expected
    runs_table = page.rows_by_label(page.table_with("run directory", "threshold"))
    assert runs_table["both: m"][1:3] == ["m", format(both.metrics["detectors"]["m"]["threshold"], ".4g")]
    assert runs_table[LABELS[0]][2] == format(first.metrics["threshold"], ".4g")


def test_runs_report_is_escaped_self_contained_and_says_what_it_found(written, page):
    directory, _ = written
    assert EVIL_LABEL not in page.text and "&lt;b&gt;&amp;&#34;x" in page.text
    assert "b" not in page.tags
    assert not re.search(r"https?://|src=\"/|href=|url\(|@import", page.text)
    assert {"script", "link", "iframe", "object"}.isdisjoint(page.tags)
    prefix = "data:image/png;base64,"
    decoded = {base64.b64decode(src[len(prefix) :]) for src in page.images}
    assert decoded == {(directory / name).read_bytes() for name in FIGURES}
    assert "Verdict per attack" in page.text and "How these verdicts are worded" in page.text
    assert "Not directly comparable" in page.text and "different clean images" in page.text


def test_report_command_rebuilds_it(written):
    directory, _ = written
    before = (directory / "report.html").read_text()
    (directory / "report.html").unlink()
    (directory / "roc_weak.png").unlink()
    result = invoke("report", directory)
    assert result.exit_code == 0, result.output
    assert (directory / "report.html").read_text() == before


def test_default_directory_and_out_rules(runs, tmp_path, monkeypatch):
    _, results = runs
    monkeypatch.chdir(tmp_path)
    result = invoke("compare", results[0].out_dir, results[1].out_dir)
    assert result.exit_code == 0, result.output
    (made,) = (tmp_path / "runs").iterdir()
    assert made.name.startswith("compare-runs-") and (made / "report.html").is_file()
    again = invoke("compare", results[0].out_dir, "--out", made)  # an earlier comparison is replaced
    assert again.exit_code == 0, again.output
    assert list(json.loads((made / "comparison.json").read_text())["detectors"]) == [LABELS[0]]
    refused = invoke("compare", results[0].out_dir, "--out", results[1].out_dir)  # a run is not replaced
    assert refused.exit_code == 2 and "not a tracekit run" in refused.output
    assert (results[1].out_dir / "metrics.json").is_file()
    bad = invoke("compare", results[0].out_dir, results[1].out_dir, "--set", "seed=1")
    assert bad.exit_code == 2 and "--set, --device, --threads and --no-cache apply to a comparison spec" in " ".join(
        bad.output.split()
    )
