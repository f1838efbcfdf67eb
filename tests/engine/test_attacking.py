"""Running an attack over many images: per-batch seeds, and per-image seeds for `per_image` attacks."""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tracekit import progress
from tracekit.engine.attack_cache import AttackCache
from tracekit.engine.attacking import AttackRun, AttackStage, attack_stage
from tracekit.engine.reading import Batch, chunks
from tracekit.engine.tables import Table
from tracekit.errors import Interrupted
from tracekit.executors.local import LocalExecutor
from tracekit.testing import tiny_model


class NumpyNoise:
    """A random 'search' drawing from NumPy's global state, as ART's black-box attacks do."""

    per_image = False

    def generate(self, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        noise = np.random.uniform(-0.1, 0.1, size=tuple(images.shape)).astype(np.float32)
        return (images + torch.from_numpy(noise)).clamp(0, 1)


class PerImageNumpyNoise(NumpyNoise):
    per_image = True


def _generate(attack, batch_size: int, seed: int = 0, cache_root=None, n: int = 10, work=None):
    """Attack 10 seeded images through the attack stage; returns `(adversarials, outcomes table)`."""
    model = tiny_model().module
    images = torch.rand(10, 1, 16, 16, generator=torch.Generator().manual_seed(1))[:n]
    ids = [f"img-{i}" for i in range(n)]
    cache = AttackCache("model", {"name": "noise"}, seed, root=Path(cache_root or tempfile.mkdtemp()))
    table = Table(Path(work or tempfile.mkdtemp()), "attack-00")
    run = AttackRun("noise", table, cache, chunks(np.arange(n), batch_size), bool(getattr(attack, "per_image", False)))

    def read(todo):
        for chunk in todo:
            yield Batch(
                chunk, chunk.index, [ids[i] for i in chunk.index], images[chunk.index], torch.zeros(len(chunk.index))
            )

    context = SimpleNamespace(
        attacks=[attack],
        model=SimpleNamespace(module=model),
        model_who="model 'tiny'",
        device=torch.device("cpu"),
        spec=SimpleNamespace(seed=seed, attacks=[{"name": "noise"}], model={"name": "tiny"}),
        reader=SimpleNamespace(read=read),
    )
    executor = LocalExecutor()
    executor.start(None, context)
    attack_stage(executor, AttackStage(0, run, np.zeros(n, dtype=np.int64)))
    return torch.cat([adv for *_, adv in run.adversarials(run.pieces(np.arange(n)))]), run.table.read()


def _run(attack, batch_size: int, seed: int = 0) -> torch.Tensor:
    adversarial, _ = _generate(attack, batch_size, seed)
    assert len(adversarial) == 10
    return adversarial


def test_a_per_image_attack_gives_an_image_the_same_adversarial_in_any_batching():
    per_image = PerImageNumpyNoise()
    assert torch.equal(_run(per_image, batch_size=3), _run(per_image, batch_size=10))
    assert not torch.equal(_run(per_image, batch_size=3, seed=1), _run(per_image, batch_size=3))


def test_a_per_image_attack_caches_each_image_for_any_batching(tmp_path):
    first, outcomes = _generate(PerImageNumpyNoise(), batch_size=3, cache_root=tmp_path, n=6)
    assert not outcomes["cached"].any() and len(list(tmp_path.rglob("*.pt"))) == 6
    again, outcomes = _generate(PerImageNumpyNoise(), batch_size=10, cache_root=tmp_path)  # 6 cached, 4 new
    assert outcomes["cached"].tolist() == [True] * 6 + [False] * 4 and torch.equal(again[:6], first)
    assert torch.equal(again, _run(PerImageNumpyNoise(), batch_size=4))


def test_a_batch_attack_is_seeded_per_batch():
    batch = NumpyNoise()
    assert torch.equal(_run(batch, batch_size=4), _run(batch, batch_size=4))  # reproducible
    assert not torch.equal(_run(batch, batch_size=4)[:4], _run(batch, batch_size=10)[:4])  # batch-dependent


def test_the_papers_black_box_attacks_run_per_image():
    import tracekit

    assert tracekit.create("attack", "pixel").per_image and tracekit.create("attack", "boundary").per_image
    assert not getattr(tracekit.create("attack", "fgsm"), "per_image", False)


def test_a_resumed_attacks_bar_starts_at_its_finished_images(tmp_path, monkeypatch):
    from rich.progress import Progress

    with pytest.raises(Interrupted):
        _generate(InterruptedAfter(7), batch_size=3, cache_root=tmp_path, work=tmp_path)  # two chunks done
    bars = []
    real_add_task = Progress.add_task

    def add_task(self, description, **kwargs):
        bars.append((description, kwargs))
        return real_add_task(self, description, **kwargs)

    monkeypatch.setattr(Progress, "add_task", add_task)
    monkeypatch.setattr(progress, "_enabled", True)
    _generate(PerImageNumpyNoise(), batch_size=3, cache_root=tmp_path, work=tmp_path)
    ((description, kwargs),) = bars
    assert description == "attack noise (6 done)"
    assert kwargs["completed"] == 6 and kwargs["total"] == 10  # cached images add no speed samples


class InterruptedAfter(PerImageNumpyNoise):
    """Ctrl-C arrives during the attack on image number `after` (counting from 0)."""

    def __init__(self, after: int) -> None:
        self.after, self.calls = after, 0

    def generate(self, model, images, labels):
        if self.calls == self.after:
            raise KeyboardInterrupt
        self.calls += 1
        return super().generate(model, images, labels)


def test_an_interrupted_attack_says_what_is_kept(tmp_path):
    with pytest.raises(
        Interrupted, match=r"attack noise: 0/10 images are attacked and cached.*run the same command again"
    ):
        _generate(InterruptedAfter(4), batch_size=10, cache_root=tmp_path)
    resumed, outcomes = _generate(PerImageNumpyNoise(), batch_size=10, cache_root=tmp_path)
    assert int(outcomes["cached"].sum()) == 4  # the images finished before Ctrl-C
    assert torch.equal(resumed, _run(PerImageNumpyNoise(), batch_size=10))
