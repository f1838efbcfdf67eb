"""End to end on tracekit.testing's tiny components: the run directory and the honest splits."""

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import tracekit
from tracekit.engine.metrics import calibrate_threshold
from tracekit.engine.run import run
from tracekit.errors import TracekitError


def tiny_spec(**extra):
    spec = {
        "name": "tiny",
        "seed": 1,
        "device": "cpu",
        "model": {"name": "tiny-cnn"},
        "data": {"name": "random-images", "n": 48},
        "attacks": [{"name": "sign-noise", "eps": 0.3}, {"name": "sign-noise", "eps": 0.05, "label": "small-noise"}],
        "detector": {
            "name": "feature-response",
            "saliency": {"name": "guided-backprop"},
            "score": {"name": "mean-abs"},
        },
        "calibration": {"fit_fraction": 0.5, "target_fpr": 0.1},
        "batch_size": 16,
    }
    spec.update(extra)
    return spec


@pytest.fixture(scope="module", autouse=True)
def tiny_plugin():
    from tracekit import plugins
    from tracekit.testing import testing_plugin

    plugins.register_plugin(testing_plugin, "tracekit-testing")
    yield
    plugins.unregister_plugin("tracekit-testing")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return run(tiny_spec(), out=tmp_path_factory.mktemp("run"))


def test_run_directory_files(result):
    names = {p.name for p in result.out_dir.iterdir()}
    assert {"spec.resolved.yaml", "metrics.json", "scores.csv"} <= names


def test_metrics_keys_exactly_as_designed(result):
    metrics = json.loads((result.out_dir / "metrics.json").read_text())
    assert set(metrics["attacks"]) == {"sign-noise", "small-noise"}
    for m in metrics["attacks"].values():
        assert set(m) == {
            "n_clean",
            "n_attacked",
            "success_rate",
            "gt_confidence",
            "target_confidence",
            "auc",
            "tpr_at_fpr",
            "threshold",
            "fpr",
            "precision",
            "recall",
            "seconds",  # the paper's keys (docs/method.md, "Metrics keys")
            # added beyond them:
            "cached_images",
            "auc_ci",
            "tpr_at_fpr_ci",
            "perturbation",
            "failed",
            "evasion_rate",
            "small_sample",
            "min_per_class",
        }
        assert set(m["perturbation"]) == {"l2", "linf"} and set(m["failed"]) == {"n", "auc", "flag_rate"}
        assert m["failed"]["n"] + m["n_attacked"] == m["n_clean"]
        if m["auc"] is not None:
            assert m["auc_ci"][0] <= m["auc"] <= m["auc_ci"][1]
        assert set(m["tpr_at_fpr"]) == {"0.01", "0.05", "0.1"}
        assert m["n_clean"] == metrics["data"]["n_test"]


def test_scores_csv_only_test_part(result):
    with open(result.out_dir / "scores.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["sample_id", "attack", "label", "pred", "success", "score"]
    clean = [r for r in rows if r["attack"] == "clean"]
    n_test = result.metrics["data"]["n_test"]
    assert len(clean) == n_test
    assert len(rows) == 3 * n_test  # clean + two attacks of every test image
    clean_ids = {r["sample_id"] for r in clean}
    for attack in ("sign-noise", "small-noise"):
        attacked = [r for r in rows if r["attack"] == attack]
        assert {r["sample_id"] for r in attacked} == clean_ids  # adversarials of test images only
        assert all((r["success"] == "1") == (r["pred"] != r["label"]) for r in attacked)
        ok = sum(r["success"] == "1" for r in attacked)
        assert result.metrics["attacks"][attack]["n_attacked"] == ok
    assert all(r["label"] == r["pred"] for r in clean)  # only correctly classified originals


def test_threshold_calibrated_on_fit_part_not_test(result):
    """Recompute the fit part's scores independently: the threshold comes from them alone."""
    spec = result.spec
    model = tracekit.create("model", "tiny-cnn")
    dataset = tracekit.create("dataset", "random-images", n=48)
    ids, images, labels = zip(*dataset.samples(model))
    images = torch.stack(images)
    preds = model.module(images).argmax(1)
    correct = [i for i in range(len(ids)) if preds[i] == labels[i]]
    with open(result.out_dir / "scores.csv") as fh:
        test_ids = {r["sample_id"] for r in csv.DictReader(fh)}
    fit = [i for i in correct if ids[i] not in test_ids]
    assert len(fit) == result.metrics["data"]["n_fit"] and fit
    detector = tracekit.create("detector", "feature-response", **{k: spec.detector[k] for k in ("saliency", "score")})
    fit_scores = detector.score(model.module, images[fit]).double().numpy()
    assert result.metrics["threshold"] == pytest.approx(calibrate_threshold(fit_scores, 0.1))


def test_resolved_spec_has_provenance_and_reruns(result, tmp_path):
    resolved = yaml.safe_load((result.out_dir / "spec.resolved.yaml").read_text())
    prov = resolved["provenance"]
    assert prov["versions"]["tracekit"] == tracekit.__version__
    assert prov["versions"]["torch"] == torch.__version__
    assert prov["device"] == "cpu" and prov["seed"] == 1
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(tracekit.__file__).parent
    )
    assert prov["git_revision"] == (head.stdout.strip() if head.returncode == 0 else None)  # tracekit's, not the cwd's
    assert resolved["attacks"][0]["seed"] == 0  # defaults filled in
    again = run(result.out_dir / "spec.resolved.yaml", out=tmp_path / "again")
    timing = ("seconds", "cached_images")
    a = {k: {m: v for m, v in d.items() if m not in timing} for k, d in result.metrics["attacks"].items()}
    b = {k: {m: v for m, v in d.items() if m not in timing} for k, d in again.metrics["attacks"].items()}
    assert a == b  # same seed, same results
    assert all(d["cached_images"] > 0 for d in again.metrics["attacks"].values())  # attacks not recomputed


def test_metrics_agree_with_scores_csv(result):
    from sklearn.metrics import roc_auc_score

    with open(result.out_dir / "scores.csv") as fh:
        rows = list(csv.DictReader(fh))
    clean = [float(r["score"]) for r in rows if r["attack"] == "clean"]
    adv = [float(r["score"]) for r in rows if r["attack"] == "sign-noise" and r["success"] == "1"]
    if adv:
        y = np.r_[np.zeros(len(clean)), np.ones(len(adv))]
        assert result.metrics["attacks"]["sign-noise"]["auc"] == pytest.approx(roc_auc_score(y, clean + adv))


def test_no_gpu_device_is_bad_input(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(tracekit.TracekitError, match="no CUDA GPU"):
        run(tiny_spec(), out=tmp_path / "r", device="cuda")


def test_perturbation_sizes_measured(result):
    m = result.metrics["attacks"]["sign-noise"]
    if m["n_attacked"]:
        assert m["perturbation"]["linf"] == pytest.approx(0.3, abs=1e-5)  # sign noise of eps 0.3
        assert 0 < m["perturbation"]["l2"] <= 0.3 * 16 + 1e-5  # sqrt(256 pixels) * eps


def test_an_earlier_run_is_replaced_whole_and_a_foreign_directory_is_refused(tmp_path):
    from tracekit.engine.rundir import finish, make_run_dir

    final, work = make_run_dir(tmp_path / "run", "x")
    assert work == tmp_path / ".run.partial" and not final.exists()
    (work / "spec.resolved.yaml").write_text("new")
    final.mkdir()
    for name in ("spec.resolved.yaml", "examples_old-attack.png", "detector_state.pt"):
        (final / name).write_text("an earlier run")
    finish(work, final, scratch=())
    assert [p.name for p in final.iterdir()] == ["spec.resolved.yaml"]  # nothing of the earlier run outlives it
    assert not work.exists() and [p.name for p in tmp_path.iterdir()] == ["run"]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(TracekitError, match=r"--out .*mine holds files that are not a tracekit run \(notes.txt\)"):
        make_run_dir(foreign, "x")
    assert (foreign / "notes.txt").read_text() == "mine"


class _Memorizer:
    """A learned detector that overfits completely: 0 for the images it was fitted on, else 1."""

    needs_adversarial_fit = False

    def fit(self, model, clean_fit_images, adversarial_fit_images=None):
        self.seen = clean_fit_images.flatten(1).clone()

    def score(self, model, images):
        same = (images.flatten(1)[:, None, :] == self.seen[None]).all(2).any(1)
        return (~same).float() + 0.01 * images.flatten(1).mean(1)  # ties broken by brightness

    def state_dict(self):
        return {"seen": self.seen}

    def load_state_dict(self, state):
        self.seen = state["seen"]


def test_a_learned_detector_is_calibrated_on_images_it_was_not_fitted_on(tmp_path):
    from tracekit import hookimpl, plugins

    class Plugin:
        @hookimpl
        def tracekit_register_detectors(self, register):
            register("memorizer", lambda: _Memorizer())

    plugins.register_plugin(Plugin(), "memorizer-test")
    try:
        out = run(tiny_spec(detector={"name": "memorizer"}, data={"name": "random-images", "n": 96}), out=tmp_path)
    finally:
        plugins.unregister_plugin("memorizer-test")
    # Calibrated on its own fit images (all scored ~0) the threshold would flag every test image;
    # on held-out images it sits among the unseen ones' scores, near the target FPR of 0.1.
    for metrics in out.metrics["attacks"].values():
        assert metrics["fpr"] <= 0.25
        assert metrics["threshold"] > 0.5


def test_too_few_clean_scores_for_the_target_fpr_are_warned(tmp_path):
    with pytest.warns(UserWarning, match=r"a 5% FPR comes from only \d+ clean fit scores.*use at least 20"):
        run(tiny_spec(calibration={"fit_fraction": 0.2, "target_fpr": 0.05}, data={"name": "random-images", "n": 48}),
            out=tmp_path)  # fmt: skip
