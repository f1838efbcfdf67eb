"""A comparison's figures and report.html: ROC overlays from the score rows, AUC heatmap, a
self-contained and escaped page whose tables read back as metrics.json."""

import base64
import csv
import json
import re

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tracekit import hookimpl, plugins
from tracekit import compare
from tracekit.report.distributions import roc
from tracekit.report.rundata import read_run
from tracekit.testing import testing_plugin

EVIL_LABEL = '<b>&"x'
ATTACKS = ["sign-noise", "weak"]


class _Distance:
    """A learned detector: the distance to the clean fit images' mean (needs adversarial fit data)."""

    needs_adversarial_fit = True

    def fit(self, model, clean_fit_images, adversarial_fit_images=None):
        self.center = clean_fit_images.mean(0)

    def score(self, model, images):
        return (images - self.center).flatten(1).norm(dim=1)


class _Plugin:
    @hookimpl
    def tracekit_register_detectors(self, register):
        register("test-distance", _Distance)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    plugins.register_plugin(testing_plugin, "tracekit-testing")
    plugins.register_plugin(_Plugin(), "compare-report-test")
    try:
        spec = {
            "name": "compare-report",
            "seed": 2,
            "device": "cpu",
            "model": {"name": "tiny-cnn"},
            "data": {"name": "random-images", "n": 32},
            "attacks": [{"name": "sign-noise", "eps": 0.3}, {"name": "sign-noise", "eps": 0.1, "label": "weak"}],
            "detectors": [
                {"name": "feature-response", "label": EVIL_LABEL},
                {"name": "test-distance"},
            ],
            "evaluation": {"bootstrap": 100},
            "controls": ["noise"],
            "batch_size": 16,
        }
        yield compare(spec, out=tmp_path_factory.mktemp("compare"))
    finally:
        plugins.unregister_plugin("compare-report-test")
        plugins.unregister_plugin("tracekit-testing")


@pytest.fixture(scope="module")
def page(result, parse_page):
    return parse_page((result.out_dir / "report.html").read_text(encoding="utf-8"))


FIGURES = ["auc_heatmap.png", "roc_sign-noise.png", "roc_weak.png"]


@pytest.mark.parametrize("name", FIGURES)
def test_compare_figures_exist_and_are_not_blank(result, name, png_stats):
    shape, std, colors = png_stats(result.out_dir / name)
    assert shape[0] > 250 and shape[1] > 300
    assert std > 20 and colors > 50  # drawn content, not a blank canvas


def test_roc_overlays_differ_per_attack(result):
    first, second = ((result.out_dir / f"roc_{attack}.png").read_bytes() for attack in ATTACKS)
    assert first != second


def test_roc_curves_are_each_detectors_clean_vs_successful_rows(result):
    with open(result.out_dir / "scores.csv", newline="") as fh:
        csv_rows = list(csv.DictReader(fh))
    run = read_run(result.out_dir)
    for index, (label, entry) in enumerate(result.metrics["detectors"].items()):
        clean, adversarial = run.distributions(f"d{index:02d}")
        mine = [r for r in csv_rows if r["detector"] == label]
        from_csv = [float(r["score"]) for r in mine if r["attack"] == "clean"]
        assert clean.n == len(from_csv) == result.metrics["data"]["n_test"]
        assert np.array_equal(clean.counts, np.histogram(from_csv, clean.edges)[0])
        for attack, m in entry["attacks"].items():
            successful = [float(r["score"]) for r in mine if r["attack"] == attack and r["success"] == "1"]
            assert adversarial[attack].n == len(successful) == m["n_attacked"]
            assert np.array_equal(adversarial[attack].counts, np.histogram(successful, clean.edges)[0])
            if successful:  # the curve drawn is the exact one at the bins' resolution
                fpr, tpr = roc(clean, adversarial[attack])
                y = np.r_[np.zeros(len(from_csv)), np.ones(len(successful))]
                assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(y, np.r_[from_csv, successful]), abs=0.01)
                assert roc_auc_score(y, np.r_[from_csv, successful]) == pytest.approx(m["auc"])


def test_compare_report_is_self_contained(result, page):
    assert not re.search(r"https?://|src=\"/|href=|url\(|@import", page.text)
    assert {"script", "link", "iframe", "object"}.isdisjoint(page.tags)
    prefix = "data:image/png;base64,"
    assert len(page.images) == len(FIGURES) and all(src.startswith(prefix) for src in page.images)
    decoded = {base64.b64decode(src[len(prefix) :]) for src in page.images}
    assert decoded == {(result.out_dir / name).read_bytes() for name in FIGURES}


def test_compare_report_escapes_labels(page):
    assert EVIL_LABEL not in page.text and "&lt;b&gt;&amp;&#34;x" in page.text
    assert "b" not in page.tags  # no markup was injected
    summary = page.table_with("detector", "component", *ATTACKS)
    assert summary["rows"][0][0] == EVIL_LABEL  # reads back exactly as written


def test_compare_table_matches_metrics_json(result, page):
    metrics = json.loads((result.out_dir / "metrics.json").read_text())
    rows = page.rows_by_label(page.table_with("detector", "component", *ATTACKS))
    assert list(rows) == list(metrics["detectors"]) == [EVIL_LABEL, "test-distance"]
    for label, entry in metrics["detectors"].items():
        cost = entry["cost"]
        expected = [entry["name"] + (" (learned)" if entry["needs_adversarial_fit"] else ""),
                    format(entry["threshold"], ".4g"), format(cost["fit_seconds"], ".1f"),
                    format(1000 * cost["score_seconds"] / cost["scored_images"], ".2f"),
                    format(entry["seconds"], ".1f")]  # fmt: skip
        for attack in ATTACKS:
            m = entry["attacks"][attack]
            for value, (lo, hi) in [(m["auc"], m["auc_ci"]), (m["tpr_at_fpr"]["0.05"], m["tpr_at_fpr_ci"]["0.05"])]:
                expected += [f"{value:.3f}", f"[{lo:.3f}, {hi:.3f}]"]
            expected.append(f"{m['evasion_rate']:.1%}")
        assert rows[label] == expected
    assert metrics["detectors"]["test-distance"]["needs_adversarial_fit"]


def test_a_comparison_written_before_costs_were_recorded_still_reports(result, tmp_path, parse_page):
    import shutil

    from tracekit.report import write_report

    old = tmp_path / "old"
    shutil.copytree(result.out_dir, old)
    metrics = json.loads((old / "metrics.json").read_text())
    for entry in metrics["detectors"].values():
        del entry["cost"]
    (old / "metrics.json").write_text(json.dumps(metrics))
    write_report(old)
    rows = parse_page((old / "report.html").read_text(encoding="utf-8"))
    table = rows.rows_by_label(rows.table_with("detector", "component", *ATTACKS))
    assert all(row[2:4] == ["–", "–"] for row in table.values())


def test_details_and_controls_per_detector(result, page):
    detectors = result.metrics["detectors"]
    details = [t for t in page.tables if "evasion rate" in t["head"]]
    assert len(details) == len(ATTACKS)
    for table, attack in zip(details, ATTACKS):
        rows = page.rows_by_label(table)
        assert list(rows) == list(detectors)
        for label, row in rows.items():
            m = detectors[label]["attacks"][attack]
            assert row[:2] == [str(m["n_attacked"]), f"{m['success_rate']:.1%}"]
            assert row[-3:] == [str(m["failed"]["n"]), f"{m['failed']['auc']:.3f}", f"{m['failed']['flag_rate']:.1%}"]
    noise_tables = [t for t in page.tables if "prediction changed" in t["head"]]
    assert len(noise_tables) == len(detectors)  # one per detector, in order
    for table, entry in zip(noise_tables, detectors.values()):
        for attack, row in page.rows_by_label(table).items():
            sign = entry["attacks"][attack]["noise"]["sign"]
            assert row[-6:-3] == [f"{sign['auc']:.3f}", f"{sign['flag_rate']:.1%}", f"{sign['prediction_changed']:.1%}"]
    transfer = detectors["test-distance"]["transfer"]  # the learned detector's
    table = page.table_with("fitted on \\ tested on")
    assert page.rows_by_label(table) == {
        source: ["–" if transfer[source][t] is None else f"{transfer[source][t]:.3f}" for t in ATTACKS]
        for source in ATTACKS
    }


def test_compare_report_renders_offline_in_headless_chromium(result, chromium, png_stats):
    shot, requests = chromium(result.out_dir / "report.html")
    assert requests == []
    _, std, colors = png_stats(shot)
    assert std > 30 and colors > 200
