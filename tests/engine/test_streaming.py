"""The streaming engine: results independent of how the work is cut, resumable in every stage,
the run directory as the single source of truth, atomic reruns, predicted labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import tracekit
from tracekit import hookimpl, plugins
from tracekit.engine import scoring
from tracekit.engine.run import run
from tracekit.errors import TracekitError
from tracekit.protocols import LoadedModel, Unreadable
from tracekit.testing import testing_plugin, tiny_model


class IndexedImages:
    """Seeded images with random access (so the engine reads them through a DataLoader), labelled
    by a fixed rule; item `broken` cannot be decoded and `odd` has the wrong size."""

    def __init__(self, n: int = 40, broken: int = -1, odd: int = -1) -> None:
        self.n, self.broken, self.odd = n, broken, odd
        self.info: dict = {}

    def __len__(self) -> int:
        return self.n

    def item(self, index: int, model: LoadedModel):
        if index == self.broken:
            return Unreadable(f"img-{index}", "OSError: truncated file")
        gen = torch.Generator().manual_seed(index)
        size = (1, 8, 8) if index == self.odd else tuple(model.input_size)
        return f"img-{index}", torch.rand(size, generator=gen), index % 3

    def samples(self, model: LoadedModel):
        for i in range(self.n):
            item = self.item(i, model)
            if not isinstance(item, Unreadable):
                yield item


class _Plugin:
    @hookimpl
    def tracekit_register_datasets(self, register):
        register("indexed-images", lambda n=40, broken=-1, odd=-1: IndexedImages(n, broken, odd))

    @hookimpl
    def tracekit_register_models(self, register):
        register("trained-tiny", _trained_tiny)


def _trained_tiny() -> LoadedModel:
    """tiny-cnn briefly trained on IndexedImages' labels, so that most images are correct."""
    from tracekit.testing import train_briefly

    model = tiny_model()
    data = IndexedImages(64)
    images = torch.stack([data.item(i, model)[1] for i in range(64)])
    labels = torch.tensor([i % 3 for i in range(64)])
    torch.manual_seed(0)
    train_briefly(model.module.train(), images, labels, steps=60)
    return model


@pytest.fixture(scope="module", autouse=True)
def registered():
    plugins.register_plugin(testing_plugin, "tracekit-testing")
    plugins.register_plugin(_Plugin(), "streaming-test")
    yield
    plugins.unregister_plugin("streaming-test")
    plugins.unregister_plugin("tracekit-testing")


def spec(**extra):
    base = {
        "name": "stream",
        "seed": 3,
        "device": "cpu",
        "model": {"name": "trained-tiny"},
        "data": {"name": "indexed-images", "n": 40},
        "attacks": [{"name": "fgsm", "eps": 0.1, "backend": "native"}],
        "detector": {
            "name": "feature-response",
            "saliency": {"name": "guided-backprop"},
            "score": {"name": "mean-abs"},
        },
        "calibration": {"target_fpr": 0.1},
        "evaluation": {"bootstrap": 50},
        "batch_size": 8,
        "num_workers": 0,
    }
    base.update(extra)
    return base


def _without_timings(metrics: dict) -> dict:
    out = json.loads(json.dumps(metrics))
    out.pop("seconds"), out.pop("cost")
    for m in out["attacks"].values():
        m.pop("seconds"), m.pop("cached_images")
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return run(spec(), out=tmp_path_factory.mktemp("ref") / "run")


def _same_up_to_kernels(first: Path, second: Path, ulps: int = 4) -> None:
    """Two `scores.csv` files alike in every row and field, a score allowed to differ in its last
    `ulps` float32 bits: CPU kernels sum in another order for another batch size (docs/spec.md,
    "Streaming"; torch 2.14's convolutions do for nearly every image, measured on the tiny CNN)."""
    rows = [first.read_text().splitlines(), second.read_text().splitlines()]
    assert len(rows[0]) == len(rows[1])
    for a, b in zip(*rows):
        *fields_a, score_a = a.rsplit(",", 1)
        *fields_b, score_b = b.rsplit(",", 1)
        assert fields_a == fields_b, (a, b)
        if score_a != score_b:
            x, y = float(score_a), float(score_b)
            assert abs(x - y) <= ulps * np.spacing(np.float32(abs(x))), (a, b)


def _close(a, b) -> None:
    """Two metrics documents equal, numbers up to a relative 1e-6 (see `_same_up_to_kernels`)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _close(a[key], b[key])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _close(x, y)
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-6, abs=1e-9)
    else:
        assert a == b


@pytest.mark.slow
@pytest.mark.parametrize("changes", [{"batch_size": 5}, {"batch_size": 64}, {"num_workers": 2, "batch_size": 7}])
def test_scores_and_metrics_do_not_depend_on_batches_or_workers(reference, tmp_path, changes):
    other = run(spec(**changes), out=tmp_path / "run")
    _same_up_to_kernels(other.out_dir / "scores.csv", reference.out_dir / "scores.csv")
    _close(_without_timings(other.metrics), _without_timings(reference.metrics))


@pytest.mark.slow
def test_scores_do_not_depend_on_workers_bit_for_bit(reference, tmp_path):
    """With the same batches, decoding workers change nothing, to the last bit."""
    other = run(spec(num_workers=2), out=tmp_path / "run")
    assert (other.out_dir / "scores.csv").read_bytes() == (reference.out_dir / "scores.csv").read_bytes()
    assert _without_timings(other.metrics) == _without_timings(reference.metrics)


def test_an_images_part_depends_on_its_id_and_the_seed_alone(reference, tmp_path):
    clean = pd.read_parquet(reference.out_dir / "tables" / "clean")
    fewer = run(spec(data={"name": "indexed-images", "n": 25}), out=tmp_path / "fewer")
    subset = pd.read_parquet(fewer.out_dir / "tables" / "clean")
    merged = subset.merge(clean, on="sample_id", suffixes=("", "_all"))
    assert len(merged) == 25 and (merged["part"] == merged["part_all"]).all()
    correct = clean[clean["correct"]]
    assert set(correct["part"]) == {"fit", "test"}
    assert (clean.loc[~clean["correct"], "part"] == "").all()


def test_per_sample_tables_are_typed_and_open_in_one_line(reference):
    attack = pd.read_parquet(reference.out_dir / "tables" / "attack-00")
    assert attack["success"].dtype == bool and attack["l2"].dtype == np.float64
    assert {"pred", "gt_confidence", "target_confidence", "linf", "seconds"} <= set(attack.columns)
    scores = pd.read_csv(reference.out_dir / "scores.csv")
    clean_scores = pd.read_parquet(reference.out_dir / "tables" / "scores-d00-clean")
    assert np.array_equal(scores.loc[scores["attack"] == "clean", "score"].to_numpy(), clean_scores["score"].to_numpy())


def test_a_run_killed_while_scoring_resumes_to_identical_results(reference, tmp_path, monkeypatch):
    real = scoring.score_into
    calls = {"n": 0}

    def dies_in_the_third_scoring_pass(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    import tracekit.engine.evaluating as evaluating
    import tracekit.engine.fitting as fitting

    for module in (evaluating, fitting):
        monkeypatch.setattr(module, "score_into", dies_in_the_third_scoring_pass)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run(spec(), out=out)
    assert not out.exists()  # nothing finished is published
    partial = tmp_path / ".run.partial" / "tables"
    assert (partial / "scores-d00-fit").is_dir() and (partial / "scores-d00-clean").is_dir()
    for module in (evaluating, fitting):
        monkeypatch.setattr(module, "score_into", real)
    written = []
    monkeypatch.setattr(
        scoring.Table,
        "write",
        lambda self, chunk, cols, w=scoring.Table.write: (written.append(self.name), w(self, chunk, cols)),
    )
    resumed = run(spec(), out=out)
    assert "scores-d00-fit" not in written and "clean" not in written  # finished stages are not recomputed
    assert (resumed.out_dir / "scores.csv").read_bytes() == (reference.out_dir / "scores.csv").read_bytes()
    assert not (tmp_path / ".run.partial").exists()


@pytest.mark.slow
def test_report_is_rebuilt_from_the_run_directory_alone(tmp_path):
    first = tracekit.run(spec(), out=tmp_path / "run")
    page = (first.out_dir / "report.html").read_text()
    for figure in first.out_dir.glob("*.png"):
        figure.unlink()
    (first.out_dir / "report.html").unlink()
    tracekit.rebuild_report(first.out_dir)
    assert (first.out_dir / "report.html").read_text().count("<img") == page.count("<img")
    assert {p.name for p in first.out_dir.glob("*.png")} >= {"roc.png", "score_hist.png"}


def test_report_of_a_directory_without_tables_is_bad_input(reference, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from tracekit.cli import build_app

    broken = tmp_path / "broken"
    shutil.copytree(reference.out_dir, broken)
    shutil.rmtree(broken / "tables")
    result = CliRunner().invoke(build_app(), ["report", str(broken)])
    assert result.exit_code == 2
    assert "no per-sample tables" in result.output and "Traceback" not in result.output


def test_a_failed_rerun_leaves_the_earlier_results_intact(reference, tmp_path):
    out = tmp_path / "run"
    run(spec(), out=out)
    before = (out / "scores.csv").read_bytes()
    with pytest.raises(TracekitError, match="img-5"):
        run(spec(data={"name": "indexed-images", "n": 40, "odd": 5}), out=out)
    assert (out / "scores.csv").read_bytes() == before and (out / "metrics.json").is_file()


def test_items_that_disagree_in_size_are_one_clear_error(tmp_path):
    for workers in (0, 2):
        with pytest.raises(TracekitError, match=r"image 'img-7' is 1x8x8 but the model takes 1x16x16"):
            run(spec(data={"name": "indexed-images", "odd": 7}, num_workers=workers), out=tmp_path / f"r{workers}")


def test_an_unreadable_item_in_a_worker_is_skipped_and_reported(tmp_path):
    with pytest.warns(UserWarning, match=r"skipping unreadable image img-4 \(OSError: truncated file\)"):
        result = run(spec(data={"name": "indexed-images", "broken": 4}, num_workers=2), out=tmp_path / "run")
    clean = pd.read_parquet(result.out_dir / "tables" / "clean")
    assert len(clean) == 39 and "img-4" not in set(clean["sample_id"])
    assert result.metrics["data"]["n_images"] == 39


def test_predicted_labels_count_every_image_as_correct(tmp_path):
    result = run(spec(data={"name": "indexed-images", "labels": "predicted"}), out=tmp_path / "run")
    clean = pd.read_parquet(result.out_dir / "tables" / "clean")
    assert clean["correct"].all() and (clean["label"] == clean["pred"]).all()
    attack = pd.read_parquet(result.out_dir / "tables" / "attack-00")
    assert (attack["success"] == (attack["pred"] != attack["label"])).all()


def test_predicted_labels_are_validated():
    with pytest.raises(TracekitError, match="data.labels: expected one of dataset, predicted"):
        from tracekit.spec import validate_spec

        validate_spec(spec(data={"name": "indexed-images", "labels": "guess"}))


@pytest.mark.parametrize(("folds", "fold_sizes"), [(2, [3, 3]), (3, [4, 4, 4]), (20, [5] * 6)])
def test_a_learning_detector_is_fitted_on_a_bounded_subset(tmp_path, monkeypatch, folds, fold_sizes):
    """Its own fit images are scored by copies fitted on all but their fold (as many folds as
    images at most: leave one out), then it is fitted on the whole subset."""
    from tracekit.detectors.mahalanobis import Mahalanobis

    seen = []
    real_fit = Mahalanobis.fit

    def fit(self, model, clean, adversarial=None):
        seen.append(len(clean))
        return real_fit(self, model, clean, adversarial)

    monkeypatch.setattr(Mahalanobis, "fit", fit)
    result = run(
        spec(
            detector={"name": "mahalanobis"},
            calibration={"target_fpr": 0.1, "fit_images": 6, "folds": folds},
            evaluation={"bootstrap": 0, "transfer": False},
        ),
        out=tmp_path / "run",
    )
    assert result.metrics["data"]["n_fit"] > 6 and result.metrics["data"]["n_fit_subset"] == 6
    assert seen == [*fold_sizes, 6]
    held = pd.read_parquet(result.out_dir / "tables" / "scores-d00-fit-subset")
    assert len(held) == 6 and np.isfinite(held["score"]).all()
