"""A run's figures and report.html: written, not blank, self-contained, escaped, every metric (intervals,
perturbations, failed adversarials, controls) shown as in metrics.json, and offline in Chromium."""

import base64
import csv
import dataclasses
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

import tracekit
from tracekit import plugins
from tracekit import run
from tracekit.hookspecs import Register
from tracekit.plugins import hookimpl
from tracekit.report.figures import example_figure, write_figures
from tracekit.report.html import render_report
from tracekit.report.rundata import read_run
from tracekit.scores import local_entropy_map, to_gray_u8
from tracekit.testing import testing_plugin, tiny_model

EVIL_LABEL = '<b>&"x'
EVIL_CLASSES = ["<i>zero</i>", "a&b", '"quoted"']


def _evil_model():
    """tiny-cnn whose class names need escaping (tests only)."""
    model = tiny_model()
    model.class_names = list(EVIL_CLASSES)
    return model


class _EvilPlugin:
    @hookimpl
    def tracekit_register_models(self, register: Register) -> None:
        register("evil-names-cnn", _evil_model)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    plugins.register_plugin(testing_plugin, "tracekit-testing")
    plugins.register_plugin(_EvilPlugin(), "tracekit-report-test")
    try:
        spec = {
            "name": "report-test",
            "seed": 3,
            "device": "cpu",
            "model": {"name": "evil-names-cnn"},
            "data": {"name": "random-images", "n": 32},
            "attacks": [{"name": "sign-noise", "eps": 0.3, "label": EVIL_LABEL}, {"name": "sign-noise", "eps": 0.1}],
            "detector": {"name": "feature-response", "score": {"name": "local-entropy"}},
            "calibration": {"fit_fraction": 0.5, "target_fpr": 0.1},
            "evaluation": {"bootstrap": 200, "confidence": 0.9},
            "controls": ["noise", "randomized-model"],
            "batch_size": 8,
        }
        yield run(spec, out=tmp_path_factory.mktemp("run"))
    finally:
        plugins.unregister_plugin("tracekit-report-test")
        plugins.unregister_plugin("tracekit-testing")


FIGURES = ["roc.png", "score_hist.png", "examples_b_x.png", "examples_sign-noise.png"]


@pytest.mark.parametrize("name", FIGURES)
def test_figures_exist_and_are_not_blank(result, name, png_stats):
    shape, std, colors = png_stats(result.out_dir / name)
    assert shape[0] > 300 and shape[1] > 300
    assert std > 20 and colors > 50  # drawn content, not a blank canvas


@pytest.fixture(scope="module")
def figures(result, tmp_path_factory):
    import shutil

    copy = tmp_path_factory.mktemp("figures") / "run"  # the run's own figures stay as the report inlined them
    shutil.copytree(result.out_dir, copy)
    return copy, write_figures(read_run(copy), examples=3)


def test_example_panels_show_test_images_successful_first_with_run_scores(result, figures):
    import pandas as pd

    run_dir, figures = figures
    clean = pd.read_parquet(run_dir / "tables" / "clean")
    test_ids = set(clean.loc[clean["part"] == "test", "sample_id"])
    with open(run_dir / "scores.csv", newline="") as fh:
        scores = {(r["sample_id"], r["attack"]): float(r["score"]) for r in csv.DictReader(fh)}
    assert [e["attack"] for e in figures["examples"]] == [EVIL_LABEL, "sign-noise"]
    for entry in figures["examples"]:
        examples, n_successful = entry["examples"], result.metrics["attacks"][entry["attack"]]["n_attacked"]
        assert len(examples) == 3 and (run_dir / entry["file"]).is_file()
        assert all(e.sample_id in test_ids for e in examples)
        flags = [e.success for e in examples]
        assert flags == sorted(flags, reverse=True) and sum(flags) == min(3, n_successful)
        for e in examples:
            assert e.clean_score == scores[(e.sample_id, "clean")]
            assert e.adv_score == scores[(e.sample_id, entry["attack"])]
            assert e.label in EVIL_CLASSES and e.adv_class in EVIL_CLASSES


def test_stored_pictures_are_the_default_gray_conversion_and_the_scores_map(result):
    """The run stores each example's gray map (tracekit's default conversion) and the map of its
    configured score, computed with the run's model and detector."""
    from tracekit.detecting import load_run

    setup = load_run(result.out_dir)
    saved, _, title = read_run(result.out_dir).examples()
    example = next(iter(saved.values()))
    images = torch.from_numpy(np.concatenate([example.original, example.adversarial]))
    maps = setup.detector.maps(setup.model.module, images)
    expected_gray = to_gray_u8(maps)
    assert np.array_equal(example.gray, expected_gray.numpy())
    assert np.array_equal(example.score_map, local_entropy_map(expected_gray).float().numpy())
    assert title == "local-entropy map (size 3)"


def test_detector_without_maps_gets_no_map_panels(result, figures, tmp_path, png_stats):
    run = read_run(result.out_dir)
    saved, _, _ = run.examples()
    figures_dir, figures = figures
    entry = figures["examples"][0]
    example = saved[entry["attack"]]
    order = [example.ids.index(e.sample_id) for e in entry["examples"]]
    example_figure(tmp_path / "without.png", "no maps", example.original[order], example.adversarial[order],
                   entry["examples"], result.metrics["threshold"], None)  # fmt: skip
    (w_without, _), (w_with, _) = (
        Image.open(path).size for path in (tmp_path / "without.png", figures_dir / entry["file"])
    )
    assert w_without < 0.6 * w_with  # 3 columns instead of 7
    assert png_stats(tmp_path / "without.png")[1] > 20


def shown(value, spec, interval=None):
    """A metric as the page shows it: formatted (None as an en dash), its interval below it."""
    text = ["–" if value is None else format(value, spec)]
    return text + ([f"[{format(interval[0], spec)}, {format(interval[1], spec)}]"] if interval else [])


@pytest.fixture(scope="module")
def metrics(result):
    return json.loads((result.out_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def page(result, parse_page):
    return parse_page((result.out_dir / "report.html").read_text(encoding="utf-8"))


def rerender(result, parse_page, metrics):
    """The report page of `result` with other metrics (figures as written by the run)."""
    figures = {"roc": "roc.png", "score_hist": "score_hist.png", "examples": []}
    run = dataclasses.replace(read_run(result.out_dir), metrics=metrics)
    return parse_page(render_report(run, figures))


def test_report_is_self_contained(result, page):
    assert not re.search(r"https?://|src=\"/|href=|url\(|@import", page.text)
    assert {"script", "link", "iframe", "object"}.isdisjoint(page.tags)
    inlined = {"roc.png", "score_hist.png", "examples_b_x.png", "examples_sign-noise.png"}
    assert len(page.images) == len(inlined)
    prefix = "data:image/png;base64,"
    assert all(src.startswith(prefix) for src in page.images)
    decoded = {base64.b64decode(src[len(prefix) :]) for src in page.images}
    assert decoded == {(result.out_dir / name).read_bytes() for name in inlined}


def test_report_escapes_every_user_string(page):
    for raw in [EVIL_LABEL, *EVIL_CLASSES]:
        assert raw not in page.text
    assert "&lt;b&gt;&amp;&#34;x" in page.text
    assert "b" not in page.tags and "i" not in page.tags  # no markup was injected
    cells = [cell for table in page.tables for row in table["rows"] for cell in row]
    assert EVIL_LABEL in cells  # the label reads back exactly as written
    assert any(name in cell for cell in cells for name in EVIL_CLASSES)  # so do the class names


def test_report_tables_match_metrics_json(page, metrics):
    attacks = page.rows_by_label(page.table_with("L2", "L∞", "success rate"))
    detection = page.rows_by_label(page.table_with("AUC", "TPR@1% FPR", "evasion rate", "flagged"))
    assert list(attacks) == list(detection) == list(metrics["attacks"]) == [EVIL_LABEL, "sign-noise"]
    for attack, m in metrics["attacks"].items():
        assert m["auc_ci"] is not None and m["n_attacked"] > 0
        assert attacks[attack] == [
            *shown(m["n_clean"], "d"), *shown(m["n_attacked"], "d"), *shown(m["success_rate"], ".1%"),
            *shown(m["gt_confidence"], ".3f"), *shown(m["target_confidence"], ".3f"),
            *shown(m["perturbation"]["l2"], ".3g"), *shown(m["perturbation"]["linf"], ".3g"),
            *shown(m["seconds"], ".1f"), *shown(m["cached_images"], "d"),
        ]  # fmt: skip
        tprs = [cell for level in ("0.01", "0.05", "0.1")
                for cell in shown(m["tpr_at_fpr"][level], ".3f", m["tpr_at_fpr_ci"][level])]  # fmt: skip
        assert detection[attack] == [
            *shown(m["auc"], ".3f", m["auc_ci"]), *tprs,
            *shown(m["threshold"], ".4g"), *shown(m["fpr"], ".3f"), *shown(m["precision"], ".3f"),
            *shown(m["recall"], ".3f"), *shown(m["evasion_rate"], ".1%"),
            *shown(m["failed"]["n"], "d"), *shown(m["failed"]["auc"], ".3f"), *shown(m["failed"]["flag_rate"], ".1%"),
        ]  # fmt: skip
    assert "90% bootstrap intervals (200 resamples)" in page.text


def test_controls_section_matches_metrics_json(page, metrics):
    assert "<h2>Controls</h2>" in page.text
    noise = page.rows_by_label(page.table_with("prediction changed", "flagged"))
    randomized = page.rows_by_label(page.table_with("trained", "randomized"))
    assert list(noise) == list(randomized) == list(metrics["attacks"])
    level = str(metrics["target_fpr"])  # the headline level is the calibration's target (10% here)
    assert level == "0.1"
    for attack, m in metrics["attacks"].items():
        expected = [
            *shown(m["auc"], ".3f", m["auc_ci"]),
            *shown(m["tpr_at_fpr"][level], ".3f", m["tpr_at_fpr_ci"][level]),
            *shown(m["recall"], ".1%"),
        ]
        for kind in ("sign", "gaussian"):
            n = m["noise"][kind]
            expected += [*shown(n["auc"], ".3f"), *shown(n["flag_rate"], ".1%"), *shown(n["prediction_changed"], ".1%")]
        assert noise[attack] == expected
        r = m["randomized_model"]
        assert randomized[attack] == [
            *shown(m["auc"], ".3f"),
            *shown(r["auc"], ".3f"),
            *shown(m["tpr_at_fpr"][level], ".3f"),
            *shown(r["tpr_at_fpr"][level], ".3f"),
        ]
    assert metrics["randomized_model"]["layers"] == ["classifier", "features.3", "features.0"]
    assert "classifier, features.3, features.0" in page.text
    assert format(metrics["randomized_model"]["threshold"], ".4g") in page.text


def test_transfer_matrix_is_a_table_of_attacks(result, parse_page, metrics):
    matrix = {EVIL_LABEL: {EVIL_LABEL: 0.91, "sign-noise": 0.62}, "sign-noise": {EVIL_LABEL: None, "sign-noise": 0.875}}
    page = rerender(result, parse_page, {**metrics, "transfer": matrix})
    table = page.table_with("fitted on \\ tested on")
    assert table["head"] == ["fitted on \\ tested on", EVIL_LABEL, "sign-noise"]
    assert page.rows_by_label(table) == {EVIL_LABEL: ["0.910", "0.620"], "sign-noise": ["–", "0.875"]}
    assert [text for tag, cls, text in page.classes if cls == "diag"] == ["0.910", "0.875"]  # the diagonal
    assert EVIL_LABEL not in page.text


def test_no_controls_section_and_no_intervals_when_the_run_has_none(result, parse_page, metrics):
    plain = {key: value for key, value in metrics.items() if key not in ("randomized_model", "transfer")}
    plain["attacks"] = {
        attack: {k: v for k, v in m.items() if k not in ("noise", "randomized_model", "auc_ci", "tpr_at_fpr_ci")}
        for attack, m in metrics["attacks"].items()
    }
    page = rerender(result, parse_page, plain)
    assert "<h2>Controls</h2>" not in page.text
    assert not [
        t for t in page.tables if {"prediction changed", "randomized", "fitted on \\ tested on"} & set(t["head"])
    ]
    assert not [cls for _, cls, _ in page.classes if cls == "ci"]
    detection = page.rows_by_label(page.table_with("AUC", "evasion rate"))
    assert detection["sign-noise"][0] == f"{metrics['attacks']['sign-noise']['auc']:.3f}"
    assert detection["sign-noise"][1] == f"{metrics['attacks']['sign-noise']['tpr_at_fpr']['0.01']:.3f}"


def test_report_renders_offline_in_headless_chromium(result, chromium, png_stats):
    shot, requests = chromium(result.out_dir / "report.html")
    assert requests == []
    shape, std, colors = png_stats(shot)
    assert shape[:2] == (2000, 1200)
    assert std > 30 and colors > 200  # text, tables and figures were drawn
    with Image.open(shot) as image:
        lower = np.asarray(image.convert("RGB"))[1000:]
    assert lower.std() > 30  # the figures below the fold rendered, not just the header


def test_read_tables_names_the_controls_tables_too(result):
    names = set(tracekit.read_tables(result.out_dir))  # the fixture keeps the run's plugins registered
    assert f"attack/{EVIL_LABEL}" in names and "attack/sign-noise" in names
    assert f"scores/feature-response/{EVIL_LABEL}/noise-sign" in names
    assert "scores/feature-response/sign-noise/noise-gaussian" in names
    assert "scores/feature-response (randomized model)/clean" in names
    assert not any(name.startswith(("scores-", "attack-")) for name in names)  # every table has its label
