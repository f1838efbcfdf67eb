"""Detectors compared on identical images; finished runs side by side."""

import csv
import shutil

import pytest
from typer.testing import CliRunner

from tracekit.cli import build_app
from tracekit.engine.compare import compare, compare_runs
from tracekit.engine.run import run
from tracekit.errors import SpecError, TracekitError


@pytest.fixture(scope="module", autouse=True)
def tiny_plugin():
    from tracekit import plugins
    from tracekit.testing import testing_plugin

    plugins.register_plugin(testing_plugin, "tracekit-testing")
    yield
    plugins.unregister_plugin("tracekit-testing")


def base(**extra):
    spec = {
        "name": "cmp",
        "device": "cpu",
        "model": {"name": "tiny-cnn"},
        "data": {"name": "random-images", "n": 40},
        "attacks": [{"name": "sign-noise", "eps": 0.3}],
        "batch_size": 16,
    }
    spec.update(extra)
    return spec


DETECTORS = [
    {"name": "feature-response", "score": {"name": "mean-abs"}, "label": "gbp-mean-abs"},
    {"name": "feature-response", "label": "paper"},
]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return compare(base(detectors=DETECTORS), out=tmp_path_factory.mktemp("cmp"))


def test_metrics_keyed_by_detector_then_attack(result):
    assert set(result.metrics["detectors"]) == {"gbp-mean-abs", "paper"}
    for entry in result.metrics["detectors"].values():
        assert set(entry["attacks"]) == {"sign-noise"}
        assert entry["attacks"]["sign-noise"]["n_clean"] == result.metrics["data"]["n_test"]


def test_every_detector_scored_on_identical_images(result):
    with open(result.out_dir / "scores.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[0] == "detector"
    by_detector = {}
    for row in rows:
        by_detector.setdefault(row["detector"], set()).add((row["sample_id"], row["attack"], row["pred"]))
    assert by_detector["paper"] == by_detector["gbp-mean-abs"] and by_detector["paper"]


def test_same_detector_as_run_gives_same_metrics(result, tmp_path):
    single = run(base(detector=DETECTORS[1]), out=tmp_path / "single")
    a = {k: v for k, v in single.metrics["attacks"]["sign-noise"].items() if k not in ("seconds", "cached_images")}
    b = result.metrics["detectors"]["paper"]["attacks"]["sign-noise"]
    assert a == {k: v for k, v in b.items() if k not in ("seconds", "cached_images")}


def test_duplicate_labels_rejected():
    with pytest.raises(SpecError, match="appears twice"):
        compare(base(detectors=[{"name": "feature-response"}, {"name": "feature-response"}]))


def test_compare_needs_detectors_list():
    with pytest.raises(SpecError, match="needs a spec with `detectors:`"):
        compare(base(detector={"name": "feature-response"}))


def test_compare_runs_warns_on_different_images(result, tmp_path):
    other = run(base(detector=DETECTORS[1], data={"name": "random-images", "n": 30}), out=tmp_path / "o")
    comparison = compare_runs([result.out_dir, other.out_dir])
    assert len(comparison.detectors) == 3
    assert any("different clean images" in w for w in comparison.warnings)
    same = compare_runs([result.out_dir])
    assert same.warnings == []


def test_compare_runs_warns_once_per_run_when_adversarials_differ(result, tmp_path):
    """Same images and attack names, other adversarials (here a stronger eps): said once per run
    pair, not once per detector of the comparison."""
    same = run(base(detector=DETECTORS[1]), out=tmp_path / "same")
    assert compare_runs([result.out_dir, same.out_dir]).warnings == []
    stronger = run(base(detector=DETECTORS[1], attacks=[{"name": "sign-noise", "eps": 0.5}]), out=tmp_path / "strong")
    warnings = compare_runs([result.out_dir, stronger.out_dir]).warnings
    assert len(warnings) == 1
    assert "and 'strong' ran attacks of the same name differently: sign-noise: eps 0.3 vs 0.5" in warnings[0]


def test_compare_runs_bad_dirs(tmp_path, result):
    with pytest.raises(TracekitError, match="does not exist"):
        compare_runs([tmp_path / "nope"])
    with pytest.raises(TracekitError, match="metrics.json is a file, not a run directory"):
        compare_runs([result.out_dir, result.out_dir / "metrics.json"])
    broken = tmp_path / "broken"
    shutil.copytree(result.out_dir, broken)
    (broken / "metrics.json").write_text('{"attacks": 3}')
    with pytest.raises(TracekitError, match=r"broken/metrics.json: .attacks.: input should be an object \(found 3\)"):
        compare_runs([result.out_dir, broken])
    (tmp_path / "empty").mkdir()
    with pytest.raises(TracekitError, match="metrics.json is missing"):
        compare_runs([tmp_path / "empty"])


def test_cli_compare_table(result, tmp_path):
    out = CliRunner().invoke(
        build_app(), ["compare", str(result.out_dir), str(result.out_dir), "--out", str(tmp_path / "side")]
    )
    assert out.exit_code == 0, out.output
    assert "paper" in out.output and "AUC" in out.output
    assert (tmp_path / "side" / "report.html").is_file()
    bad = CliRunner().invoke(build_app(), ["compare", str(tmp_path / "missing.yaml")])
    assert bad.exit_code == 2 and "does not exist" in bad.output


def test_detect_with_a_compared_detector_reproduces_its_scores(result):
    """Every compared detector is kept (detectors/<NN>-<label>/); `detect --detector` picks one."""
    import torch

    import tracekit

    assert sorted(p.name for p in (result.out_dir / "detectors").iterdir()) == ["00-gbp-mean-abs", "01-paper"]
    model = tracekit.create("model", "tiny-cnn")
    images = {i: x for i, x, _ in tracekit.create("dataset", "random-images", n=40).samples(model)}
    with open(result.out_dir / "scores.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["attack"] == "clean"]
    for label in ("gbp-mean-abs", "paper"):
        mine = [r for r in rows if r["detector"] == label]
        found = tracekit.detect(result.out_dir, torch.stack([images[r["sample_id"]] for r in mine]), detector=label)
        assert [f["score"] for f in found] == [float(r["score"]) for r in mine]
        assert {f["threshold"] for f in found} == {result.metrics["detectors"][label]["threshold"]}


def test_detect_on_a_comparison_needs_a_known_detector_label(result, tmp_path):
    from PIL import Image

    image = tmp_path / "x.png"
    Image.new("L", (16, 16), 100).save(image)
    runner = CliRunner()
    missing = runner.invoke(build_app(), ["detect", "--run", str(result.out_dir), str(image)])
    assert missing.exit_code == 2 and "choose one with --detector LABEL (one of: gbp-mean-abs, paper)" in missing.output
    typo = runner.invoke(build_app(), ["detect", "--run", str(result.out_dir), "--detector", "papr", str(image)])
    assert typo.exit_code == 2 and "did you mean 'paper'" in typo.output
    chosen = runner.invoke(
        build_app(), ["detect", "--run", str(result.out_dir), "--detector", "paper", "--json", str(image)]
    )
    assert chosen.exit_code == 0, chosen.output
