"""No silent preprocessing: the same pixels score the same as an npz, as an imagefolder of PNGs and
through `detect` on those PNGs, for a model that declares no ImageNet-style preprocessing (a
TorchScript file, a plugin's module): it gets the whole frame, and a file already at its input
size is taken pixel for pixel."""

import dataclasses

import numpy as np
import pytest
from PIL import Image

import tracekit
from tracekit import plugins
from tracekit.hookspecs import Components
from tracekit.plugins import hookimpl
from tracekit.testing import testing_plugin, tiny_model

pytestmark = pytest.mark.slow

_models = Components("model")


@_models.register("bare-cnn")
def _bare_cnn():
    """tiny-cnn recording no preprocessing at all, as a plugin's or a TorchScript model does."""
    return dataclasses.replace(tiny_model(), info={})


class _BarePlugin:
    @hookimpl
    def tracekit_register_models(self, register):
        _models.into(register)


@pytest.fixture(scope="module")
def pixels(tmp_path_factory):
    """40 gray 16x16 images (tiny-cnn's input) as an npz and as PNG files of one class folder."""
    root = tmp_path_factory.mktemp("pixels")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 16, 16), dtype=np.uint8)
    ids = np.array([f"class0/img-{i:03d}.png" for i in range(len(images))])
    (root / "folder" / "class0").mkdir(parents=True)
    for image, sample_id in zip(images, ids):
        Image.fromarray(image, "L").save(root / "folder" / sample_id)
    np.savez(root / "pixels.npz", images=images, labels=np.zeros(len(images), dtype=np.int64), ids=ids)
    return root


@pytest.fixture(scope="module")
def runs(pixels, tmp_path_factory):
    plugins.register_plugin(testing_plugin, "tracekit-testing")
    plugins.register_plugin(_BarePlugin(), "tracekit-bare")
    try:
        spec = {
            "name": "pixels",
            "device": "cpu",
            "model": {"name": "bare-cnn"},
            "attacks": [{"name": "sign-noise", "eps": 0.1}],
            "evaluation": {"bootstrap": 0},
            "batch_size": 16,
        }
        data = {
            "npz": {"name": "npz", "path": str(pixels / "pixels.npz"), "ids_key": "ids", "labels": "predicted"},
            "folder": {"name": "imagefolder", "root": str(pixels / "folder"), "labels": "predicted"},
        }
        out = tmp_path_factory.mktemp("runs")
        yield {key: tracekit.run({**spec, "data": d}, out=out / key) for key, d in data.items()}
    finally:
        plugins.unregister_plugin("tracekit-bare")
        plugins.unregister_plugin("tracekit-testing")


def test_the_same_pixels_as_npz_and_as_png_files_score_the_same(runs):
    npz, folder = ((r.out_dir / "scores.csv").read_bytes() for r in runs.values())
    assert npz == folder
    assert runs["folder"].spec.provenance["data"]["crop_pct"] == 1.0


def test_detect_on_the_png_files_gives_the_runs_scores(runs, pixels):
    import csv

    with open(runs["folder"].out_dir / "scores.csv", newline="") as fh:
        clean = {r["sample_id"]: float(r["score"]) for r in csv.DictReader(fh) if r["attack"] == "clean"}
    plugins.register_plugin(_BarePlugin(), "tracekit-bare")
    try:
        found = tracekit.detect(runs["folder"].out_dir, [pixels / "folder" / sample_id for sample_id in clean])
    finally:
        plugins.unregister_plugin("tracekit-bare")
    assert len(found) == len(clean) > 5
    for row, expected in zip(found, clean.values()):
        assert row["error"] is None and abs(row["score"] - expected) <= 1e-6


def test_detect_prepares_files_as_the_run_recorded_and_checks_the_record(runs, pixels, tmp_path):
    import json
    import shutil

    import torch

    from tracekit.detecting import load_run
    from tracekit.errors import TracekitError
    from tracekit.images import Preparation

    run_dir = tmp_path / "run"
    shutil.copytree(runs["folder"].out_dir, run_dir)
    state = json.loads((run_dir / "detector.json").read_text())
    assert state["preparation"] == {"channels": 1, "crop": [16, 16], "crop_pct": 1.0, "interpolation": "bilinear"}
    big = tmp_path / "big.png"  # not the model's input size: resized and cropped as recorded
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 30), dtype=np.uint8), "L").save(big)
    plugins.register_plugin(_BarePlugin(), "tracekit-bare")
    try:
        state["preparation"]["crop_pct"] = 0.5
        (run_dir / "detector.json").write_text(json.dumps(state))
        setup = load_run(run_dir)
        (read,) = setup.inputs([big])
        assert torch.equal(read.image, Preparation(1, (16, 16), 0.5, "bilinear").load(big))
        assert not torch.equal(read.image, Preparation(1, (16, 16), 1.0, "bilinear").load(big))
        for bad in ({"crop_pct": 3}, {"interpolation": "sinc"}, {"crop": [8, 8]}, {"crop_pct": "0.5"}):
            broken = {**state, "preparation": {**state["preparation"], **bad}}
            (run_dir / "detector.json").write_text(json.dumps(broken))
            with pytest.raises(TracekitError, match=r"detector.json: 'preparation.*broken run directory"):
                load_run(run_dir)
    finally:
        plugins.unregister_plugin("tracekit-bare")
