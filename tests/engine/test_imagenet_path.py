"""The path the README gives for testing the paper's claim at its scale, end to end: a torchvision
ImageNet classifier by weights name (from the local torch cache), real photos in class folders
named by WordNet id, ART's FGSM, guided backprop and local entropy at 224x224, the run directory,
and `detect` on the photo files reproducing the run's scores (the same resize and centre crop).

The weights are a seeded random initialization saved where torchvision's cache keeps
`IMAGENET1K_V1` (nothing is downloaded); the photos are the ones scikit-image ships. Folders are
named for the classes the model predicts, so every photo is correctly classified and attacked.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import torchvision
import yaml
from PIL import Image

import tracekit
from tracekit.images import Preparation
from tracekit.models.torchvision_models import cached_weights_file

pytestmark = pytest.mark.slow

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field", "immunohistochemistry", "cat"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    import skimage.data

    root = tmp_path_factory.mktemp("imagenet")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(root / "torch"))
        weights = cached_weights_file(torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
        weights.parent.mkdir(parents=True)
        torch.manual_seed(0)
        torch.save(torchvision.models.resnet18().state_dict(), weights)
        model = tracekit.create("model", "torchvision", arch="resnet18", weights="IMAGENET1K_V1")
        photos = root / "photos"
        photos.mkdir()
        for name in PHOTOS:
            Image.fromarray(getattr(skimage.data, name)()).save(photos / f"{name}.jpg", quality=95)
        prepare = Preparation.for_model(model)
        with torch.no_grad():
            preds = model.module(torch.stack([prepare.load(photos / f"{n}.jpg") for n in PHOTOS])).argmax(1)
        data = root / "data"
        for name, pred in zip(PHOTOS, preds.tolist()):
            (data / model.wnids[pred]).mkdir(parents=True, exist_ok=True)
            (photos / f"{name}.jpg").rename(data / model.wnids[pred] / f"{name}.jpg")
        spec = {
            "name": "imagenet-path", "seed": 0, "device": "cpu",
            "model": {"name": "torchvision", "arch": "resnet18", "weights": "IMAGENET1K_V1"},
            "data": {"name": "imagefolder", "root": str(data)},
            "attacks": [{"name": "fgsm", "eps": 0.03}],
            "detector": {"name": "feature-response"},
            "calibration": {"fit_fraction": 0.5, "target_fpr": 0.25},
            "batch_size": 4,
        }  # fmt: skip
        result = tracekit.run(spec, out=root / "run")
        yield result, data, {n: model.class_names[p] for n, p in zip(PHOTOS, preds.tolist())}


def test_the_run_attacks_and_scores_real_photos_at_224(finished):
    result, _, _ = finished
    m = result.metrics["attacks"]["fgsm"]
    assert result.metrics["data"]["n_correct"] == len(PHOTOS)
    assert m["n_clean"] == result.metrics["data"]["n_test"] and m["n_attacked"] >= 1  # a random network flips easily
    assert 0 <= m["auc"] <= 1 and m["perturbation"]["linf"] == pytest.approx(0.03, abs=1e-6)
    provenance = yaml.safe_load((result.out_dir / "spec.resolved.yaml").read_text())["provenance"]
    assert provenance["data"]["crop_pct"] == pytest.approx(224 / 256) and provenance["data"]["mapping"] == "wnid"
    assert provenance["model"]["weights"] == "IMAGENET1K_V1"
    assert (result.out_dir / "report.html").stat().st_size > 10_000


def test_detect_on_the_photo_files_reproduces_the_runs_clean_scores(finished):
    result, data, classes = finished
    with open(result.out_dir / "scores.csv", newline="") as fh:
        clean = {r["sample_id"]: float(r["score"]) for r in csv.DictReader(fh) if r["attack"] == "clean"}
    assert len(clean) == result.metrics["data"]["n_test"]
    rows = tracekit.detect(result.out_dir, [data / sample_id for sample_id in clean])
    for row, (sample_id, score) in zip(rows, clean.items()):
        assert row["class"] == classes[sample_id.rsplit("/", 1)[1].removesuffix(".jpg")]
        np.testing.assert_allclose(row["score"], score, rtol=1e-6)
