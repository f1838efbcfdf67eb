"""Compute settings (`compute:`) and `batch_size: auto`: what moves, what stays exact, the back-off."""

from __future__ import annotations

import pytest
import torch
import yaml

import tracekit
from tracekit.compute import CPU_BATCH, Compute, apply, largest_fitting

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def model(compute: Compute, device: str = "cpu") -> torch.nn.Module:
    module = tracekit.create("model", "digits-cnn").module.to(device).eval()
    apply(module, compute, torch.device(device))
    return module


@pytest.fixture(scope="module")
def images():
    m = tracekit.create("model", "digits-cnn")
    dataset = tracekit.create("dataset", "digits", split="test", limit=64)
    return torch.stack([x for _, x, _ in dataset.samples(m)])


def scores(module: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return tracekit.create("detector", "feature-response").score(module, images).float().cpu()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_moves_scores_a_little_and_keeps_guided_backprop_working(precision, images):
    exact, reduced = scores(model(Compute()), images), scores(model(Compute(precision=precision)), images)
    difference = (exact - reduced).abs()
    assert 0 < difference.max() < 0.1  # bits of local entropy; docs/spec.md has the measured figures
    with torch.no_grad():
        assert model(Compute(precision=precision))(images).dtype == torch.float32  # logits come back float32
        assert torch.equal(model(Compute())(images).argmax(1), model(Compute(precision=precision))(images).argmax(1))


def test_channels_last_is_exact_up_to_summation_order(images):
    """The maps differ in their last bits (and where an activation is within them of zero, guided
    backprop's ReLU gate may flip: a few of 65536 pixels by more); a gray map's pixel near a
    quantization step may then land on the other step, which moves that image's entropy score by a
    step's worth (torch 2.14: one image in 64, by 9e-4 bits)."""
    layered = tracekit.create("detector", "feature-response")
    plain, last = model(Compute()), model(Compute(channels_last=True))
    a, b = layered.maps(last, images), layered.maps(plain, images)
    assert ((a - b).norm() / b.norm()).item() < 1e-3
    assert ((a - b).abs() > 1e-6 + 1e-4 * b.abs()).float().mean() < 1e-3
    difference = (scores(last, images) - scores(plain, images)).abs()
    assert (difference <= 1e-4).float().mean() >= 0.95 and difference.max() < 0.01


def test_layer_names_survive_reduced_precision():
    plain = [name for name, _ in model(Compute()).named_modules()]
    assert [name for name, _ in model(Compute(precision="bf16")).named_modules()] == plain


def test_the_largest_batch_that_fits_backs_off_on_out_of_memory():
    tried = []

    def attempt(size: int) -> None:
        tried.append(size)
        if size > 256:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    assert largest_fitting(attempt) == 128  # 256 fitted, 512 did not: half of 256 leaves room
    assert tried == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    assert largest_fitting(lambda size: None, cap=64) == 64
    with pytest.raises(torch.cuda.OutOfMemoryError, match="not even a batch of 1"):
        largest_fitting(lambda size: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError("simulated")))


def test_batch_size_auto_is_resolved_and_recorded(tmp_path):
    spec = {
        "name": "auto",
        "model": {"name": "digits-cnn"},
        "data": {"name": "digits", "split": "test", "limit": 40},
        "attacks": [{"name": "fgsm"}],
        "device": "cpu",
        "batch_size": "auto",
        "evaluation": {"bootstrap": 0},
        "compute": {"precision": "bf16"},
    }
    result = tracekit.run(spec, out=tmp_path / "run")
    resolved = yaml.safe_load((result.out_dir / "spec.resolved.yaml").read_text())
    assert resolved["batch_size"] == CPU_BATCH and resolved["compute"]["precision"] == "bf16"
    import json
    import math

    assert json.loads((result.out_dir / "detector.json").read_text())["compute"]["precision"] == "bf16"
    digit = torch.zeros(1, 32, 32)
    digit[0, 8:24, 14:18] = 1.0  # a one
    (verdict,) = tracekit.detect(result.out_dir, digit)  # scored as the run scored: under bf16
    assert math.isfinite(verdict["score"]) and verdict["verdict"] in ("clean", "adversarial")


@cuda
@pytest.mark.parametrize(
    "compute",
    [
        Compute(),
        Compute(precision="bf16"),
        Compute(precision="fp16"),
        Compute(channels_last=True),
        Compute(cudnn_benchmark=True),
        Compute(precision="bf16", channels_last=True, cudnn_benchmark=True),
    ],
)
def test_every_gpu_setting_scores_close_to_the_cpu(compute, images):
    on_gpu = scores(model(compute, "cuda"), images.cuda())
    assert (on_gpu - scores(model(Compute()), images)).abs().max() < 0.1


@cuda
def test_batch_size_auto_on_a_gpu_fits():
    from tracekit.compute import auto_batch_size

    size = auto_batch_size(model(Compute(), "cuda"), (1, 32, 32), torch.device("cuda"))
    assert size >= 1 and size & (size - 1) == 0
