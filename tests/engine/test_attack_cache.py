"""The attack cache: resume after an interruption, corrupt entries, management."""

import math
import os
import re
import shutil

import pytest
import torch
import yaml
from typer.testing import CliRunner

from tracekit import hookimpl, plugins
from tracekit.cli import build_app
from tracekit.engine import attack_cache
from tracekit.engine.run import run
from tracekit.errors import TracekitError
from tracekit.testing import testing_plugin


class _GlobalNoise:
    """Draws from torch's global RNG (as ART draws from NumPy's); can be told to crash mid-run."""

    calls = 0
    crash_on_call: int | None = None

    def generate(self, model, images, labels):
        _GlobalNoise.calls += 1
        if _GlobalNoise.crash_on_call == _GlobalNoise.calls:
            raise KeyboardInterrupt
        return (images + 0.3 * torch.sign(torch.randn_like(images))).clamp(0, 1)


class _Plugin:
    @hookimpl
    def tracekit_register_attacks(self, register):
        register("global-noise", lambda: _GlobalNoise())


@pytest.fixture(scope="module", autouse=True)
def tiny_plugins():
    plugins.register_plugin(testing_plugin, "tracekit-testing")
    plugins.register_plugin(_Plugin(), "cache-test")
    yield
    plugins.unregister_plugin("cache-test")
    plugins.unregister_plugin("tracekit-testing")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACEKIT_CACHE", str(tmp_path / "cache"))
    _GlobalNoise.calls, _GlobalNoise.crash_on_call = 0, None


def spec():
    return {
        "name": "cache",
        "device": "cpu",
        "model": {"name": "tiny-cnn"},
        "data": {"name": "random-images", "n": 64},
        "attacks": [{"name": "global-noise"}],
        "detector": {"name": "feature-response", "score": {"name": "mean-abs"}},
        "batch_size": 8,
        "evaluation": {"bootstrap": 0},
    }


def test_interrupted_run_resumes_to_identical_scores(tmp_path):
    reference = run(spec(), out=tmp_path / "reference", use_cache=False)
    batches = math.ceil(reference.metrics["data"]["n_test"] / 8)
    assert _GlobalNoise.calls == batches  # the test images in batches of 8
    _GlobalNoise.calls, _GlobalNoise.crash_on_call = 0, 3
    with pytest.raises(KeyboardInterrupt):
        run(spec(), out=tmp_path / "interrupted")
    _GlobalNoise.calls, _GlobalNoise.crash_on_call = 0, None
    resumed = run(spec(), out=tmp_path / "resumed")
    assert _GlobalNoise.calls == batches - 2  # only the batches that never finished
    assert resumed.metrics["attacks"]["global-noise"]["cached_images"] == 16
    assert (tmp_path / "resumed" / "scores.csv").read_text() == (tmp_path / "reference" / "scores.csv").read_text()


def test_ctrl_c_on_the_command_line_says_how_to_resume(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec()))
    _GlobalNoise.crash_on_call = 3
    result = CliRunner().invoke(build_app(), ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 130
    assert re.search(r"interrupted: attack global-noise: 16/\d+ images are attacked and cached", result.output)
    assert "Traceback" not in result.output


def test_second_run_recomputes_nothing(tmp_path):
    first = run(spec(), out=tmp_path / "a")
    calls = _GlobalNoise.calls
    second = run(spec(), out=tmp_path / "b")
    assert _GlobalNoise.calls == calls
    assert (tmp_path / "a" / "scores.csv").read_text() == (tmp_path / "b" / "scores.csv").read_text()
    assert second.metrics["attacks"]["global-noise"]["cached_images"] == second.metrics["data"]["n_test"]
    assert first.metrics["attacks"]["global-noise"]["cached_images"] == 0


def test_no_cache_bypasses_reading_and_writing(tmp_path):
    run(spec(), out=tmp_path / "a", use_cache=False)
    assert attack_cache.list_entries() == []


def test_corrupt_entry_detected_recomputed_and_reported_once(tmp_path):
    run(spec(), out=tmp_path / "a")
    (entry,) = attack_cache.list_entries()
    files = sorted(p for p in os.listdir(entry["path"]) if p.endswith(".pt"))
    for name in files[:2]:
        with open(os.path.join(entry["path"], name), "wb") as fh:
            fh.write(b"not a torch file")
    calls = _GlobalNoise.calls
    with pytest.warns(UserWarning, match="unusable cache entr") as record:
        again = run(spec(), out=tmp_path / "b")
    (warning,) = [w for w in record if "unusable cache entr" in str(w.message)]  # reported once
    assert "attack global-noise: 2 unusable cache entries (the first, " in str(warning.message)
    assert _GlobalNoise.calls == calls + 2  # exactly the two corrupt batches recomputed
    assert (tmp_path / "a" / "scores.csv").read_text() == (tmp_path / "b" / "scores.csv").read_text()
    assert again.metrics["attacks"]["global-noise"]["cached_images"] == again.metrics["data"]["n_test"] - 16


def test_unwritable_cache_directory_is_bad_input(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("TRACEKIT_CACHE", str(blocker / "cache"))
    with pytest.raises(TracekitError, match="TRACEKIT_CACHE"):
        run(spec(), out=tmp_path / "a")


def test_cache_ls_and_clear(tmp_path):
    run(spec(), out=tmp_path / "a")
    runner = CliRunner()
    listed = runner.invoke(build_app(), ["cache", "ls"])
    assert listed.exit_code == 0 and "global-noise" in listed.output
    assert "1 cached attack(s)" in listed.output
    (entry,) = attack_cache.list_entries()
    assert entry["seed"] == 0 and entry["model"][:12] in listed.output
    kept = runner.invoke(build_app(), ["cache", "clear", "--older-than", "7d"])
    assert kept.exit_code == 0 and "removed 0" in kept.output
    cleared = runner.invoke(build_app(), ["cache", "clear"])
    assert cleared.exit_code == 0 and "removed 1" in cleared.output
    assert attack_cache.list_entries() == []
    bad = runner.invoke(build_app(), ["cache", "clear", "--older-than", "soon"])
    assert bad.exit_code == 2 and "7d" in bad.output


def test_fingerprint_covers_zero_dimensional_buffers():
    """BatchNorm's `num_batches_tracked` is a 0-d tensor (every torchvision ResNet has them)."""
    from tracekit.engine.attack_cache import model_fingerprint

    norm = torch.nn.BatchNorm2d(3)
    before = model_fingerprint(norm)
    norm.num_batches_tracked += 1
    assert model_fingerprint(norm) != before and len(before) == 64


def test_an_entry_of_another_cache_is_not_trusted(tmp_path):
    run(spec(), out=tmp_path / "a")
    (entry,) = attack_cache.list_entries()
    other = {**spec(), "seed": 1}
    run(other, out=tmp_path / "b")
    (mine,) = [e for e in attack_cache.list_entries() if e["path"] != entry["path"]]
    theirs, ours = (sorted(p for p in os.listdir(e["path"]) if p.endswith(".pt"))[0] for e in (entry, mine))
    shutil.copy(os.path.join(entry["path"], theirs), os.path.join(mine["path"], ours))  # seed 0's batch under seed 1
    calls = _GlobalNoise.calls
    with pytest.warns(UserWarning, match="belongs to another attack, model or seed"):
        again = run(other, out=tmp_path / "c")
    assert _GlobalNoise.calls == calls + 1
    assert (tmp_path / "b" / "scores.csv").read_text() == (tmp_path / "c" / "scores.csv").read_text()
    assert again.metrics["attacks"]["global-noise"]["cached_images"] == again.metrics["data"]["n_test"] - 8


def test_a_label_does_not_change_the_cache_key(tmp_path):
    run(spec(), out=tmp_path / "a")
    calls = _GlobalNoise.calls
    relabelled = {**spec(), "attacks": [{"name": "global-noise", "label": "noise 0.3"}]}
    result = run(relabelled, out=tmp_path / "b")
    assert _GlobalNoise.calls == calls
    assert result.metrics["attacks"]["noise 0.3"]["cached_images"] == result.metrics["data"]["n_test"]


def test_an_empty_age_clears_nothing(tmp_path):
    run(spec(), out=tmp_path / "a")
    result = CliRunner().invoke(build_app(), ["cache", "clear", "--older-than", ""])
    assert result.exit_code == 2 and "7d" in result.output
    assert len(attack_cache.list_entries()) == 1


def _stale_spec(seed: int) -> dict:
    """Synthetic images with the same ids whatever the seed, different pixels for each seed."""
    return {
        "name": "stale",
        "model": {"name": "digits-cnn"},
        "device": "cpu",
        "batch_size": 16,
        "data": {"name": "synthetic", "n": 24, "seed": seed, "labels": "predicted"},
        "attacks": [{"name": "fgsm", "eps": 0.05}, {"name": "pixel", "max_iter": 3, "scale": 4}],
        "evaluation": {"bootstrap": 0},
    }


@pytest.mark.slow
def test_images_with_the_ids_of_cached_ones_but_other_pixels_are_attacked_anew(tmp_path):
    run(_stale_spec(seed=1), out=tmp_path / "first")  # fills the cache for these ids
    cached = run(_stale_spec(seed=2), out=tmp_path / "same-ids")
    fresh = run(_stale_spec(seed=2), out=tmp_path / "fresh", use_cache=False)
    assert (cached.out_dir / "scores.csv").read_bytes() == (fresh.out_dir / "scores.csv").read_bytes()
    for key in ("fgsm", "pixel"):
        assert cached.metrics["attacks"][key]["cached_images"] == 0
    again = run(_stale_spec(seed=2), out=tmp_path / "again")  # the same pixels are served from the cache
    assert all(m["cached_images"] == m["n_clean"] for m in again.metrics["attacks"].values())


@pytest.mark.slow
def test_an_attacks_cache_key_has_its_distribution_and_what_it_adds(tmp_path, monkeypatch):
    from tracekit.attacks.fast_gradient import FastGradient

    seen = []
    real = attack_cache.AttackCache.__init__

    def record(self, model_fp, attack, seed, root=None, enabled=True):
        seen.append(attack)
        real(self, model_fp, attack, seed, root, enabled)

    monkeypatch.setattr(attack_cache.AttackCache, "__init__", record)
    monkeypatch.setattr(FastGradient, "cache_key", lambda self: {"solver": "v2"}, raising=False)
    run({**_stale_spec(seed=1), "attacks": [{"name": "fgsm"}]}, out=tmp_path / "r")
    from tracekit import __version__

    assert seen[0]["distribution"] == f"tracekit {__version__}" and seen[0]["component"] == {"solver": "v2"}


TAMPERED = {
    "nan-adversarial": lambda d: d["adversarial"].view(-1).__setitem__(0, float("nan")),
    "inf-adversarial": lambda d: d["adversarial"].view(-1).__setitem__(0, float("inf")),
    "outside-0-1": lambda d: d.__setitem__("adversarial", d["adversarial"] * 500),
    "wrong-shape": lambda d: d.__setitem__("adversarial", d["adversarial"][:, :, :8]),
    "a-list": lambda d: d.__setitem__("adversarial", d["adversarial"].tolist()),
    "integer-pixels": lambda d: d.__setitem__("adversarial", d["adversarial"].long()),
    "nan-probabilities": lambda d: d["probs"].view(-1).__setitem__(0, float("nan")),
    "short-predictions": lambda d: d.__setitem__("preds", d["preds"][:-1]),
    "float-predictions": lambda d: d.__setitem__("preds", d["preds"].float()),
    "prediction-beyond-classes": lambda d: d["preds"].__setitem__(0, 99),
    "nan-seconds": lambda d: d.__setitem__("seconds", float("nan")),
    "negative-seconds": lambda d: d.__setitem__("seconds", -1.0),
    "not-a-dict": lambda d: d.clear(),
}


@pytest.mark.parametrize("how", sorted(TAMPERED))
def test_an_entry_with_plausible_structure_but_bad_content_is_deleted_and_recomputed(tmp_path, how):
    """An entry with the right key whose content is wrong is never served: reported once, deleted,
    recomputed, and the run ends as an untouched one did."""
    run(spec(), out=tmp_path / "a")
    (entry,) = attack_cache.list_entries()
    path = os.path.join(entry["path"], sorted(p for p in os.listdir(entry["path"]) if p.endswith(".pt"))[0])
    data = torch.load(path, weights_only=True)
    TAMPERED[how](data)
    torch.save(data, path)
    calls = _GlobalNoise.calls
    with pytest.warns(UserWarning, match="attack global-noise: 1 unusable cache entry"):
        run(spec(), out=tmp_path / "b")
    assert _GlobalNoise.calls == calls + 1  # that batch alone attacked again
    assert (tmp_path / "a" / "scores.csv").read_text() == (tmp_path / "b" / "scores.csv").read_text()
    assert torch.load(path, weights_only=True)["adversarial"].shape[2:] == (16, 16)  # written anew


def test_clear_removes_only_what_the_cache_wrote_and_says_what_it_could_not(tmp_path, monkeypatch):
    run(spec(), out=tmp_path / "a")
    (entry,) = attack_cache.list_entries()
    attacks = tmp_path / "cache" / "attacks"
    placed = attacks / "my-run"  # a directory of the user's inside the cache: not an entry
    placed.mkdir()
    (placed / "scores.csv").write_text("sample_id,score\n")
    (attacks / ("0" * 32)).mkdir()  # named like an entry, but no meta.json: not written by tracekit
    (attacks / ("0" * 32) / "notes.txt").write_text("mine")
    assert [e["key"] for e in attack_cache.list_entries()] == [entry["key"]]

    real_unlink = type(tmp_path).unlink

    def read_only(self, missing_ok=False):
        if self.suffix == ".pt":
            raise PermissionError(13, "Permission denied")
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(type(tmp_path), "unlink", read_only)
    refused = CliRunner().invoke(build_app(), ["cache", "clear"])
    assert refused.exit_code == 2 and "removed 0" in refused.output
    assert "could not remove 1 cached attack(s)" in refused.output and "Permission denied" in refused.output
    monkeypatch.setattr(type(tmp_path), "unlink", real_unlink)

    (tmp_path / "cache" / "attacks" / entry["key"] / "keep-me.txt").write_text("a file tracekit did not write")
    partly = attack_cache.clear()
    assert partly.removed == 0 and "did not write (keep-me.txt)" in partly.failed[0]
    assert not list((attacks / entry["key"]).glob("*.pt")) and (attacks / entry["key"] / "keep-me.txt").is_file()
    assert (placed / "scores.csv").is_file() and (attacks / ("0" * 32) / "notes.txt").is_file()


# The attack's norm budget: an entry whose adversarials lie outside it is never served.


class _BudgetNoise:
    """Sign noise of L-inf size `eps`, declared by its `norm` and `eps` (as tracekit's attacks do);
    records the clean batches it was given."""

    norm, eps = "inf", 0.3
    calls = 0
    seen: list[torch.Tensor] = []

    def generate(self, model, images, labels):
        _BudgetNoise.calls += 1
        _BudgetNoise.seen.append(images.clone())
        return (images + self.eps * torch.sign(torch.randn_like(images))).clamp(0, 1)


class _BudgetPlugin:
    @hookimpl
    def tracekit_register_attacks(self, register):
        register("budget-noise", lambda: _BudgetNoise())


@pytest.fixture
def budget_noise():
    plugins.register_plugin(_BudgetPlugin(), "budget-test")
    _BudgetNoise.calls, _BudgetNoise.seen = 0, []
    yield {**spec(), "attacks": [{"name": "budget-noise"}]}
    plugins.unregister_plugin("budget-test")


def _first_entry_file() -> str:
    (entry,) = attack_cache.list_entries()
    return os.path.join(entry["path"], sorted(p for p in os.listdir(entry["path"]) if p.endswith(".pt"))[0])


def test_an_entry_beyond_the_attacks_norm_budget_is_deleted_and_recomputed(tmp_path, budget_noise):
    run(budget_noise, out=tmp_path / "a")
    path = _first_entry_file()
    data = torch.load(path, weights_only=True)
    data["adversarial"] = 1 - data["adversarial"]  # still in [0, 1], far outside eps 0.3 of the clean images
    torch.save(data, path)
    calls = _BudgetNoise.calls
    with pytest.warns(UserWarning, match=r"1 unusable cache entry .*outside the attack's budget \(L-inf eps 0.3"):
        run(budget_noise, out=tmp_path / "b")
    assert _BudgetNoise.calls == calls + 1  # that batch alone attacked again
    assert (tmp_path / "a" / "scores.csv").read_text() == (tmp_path / "b" / "scores.csv").read_text()
    assert not torch.equal(torch.load(path, weights_only=True)["adversarial"], data["adversarial"])  # written anew


def test_an_entry_within_the_norm_budget_is_served(tmp_path, budget_noise, recwarn):
    run(budget_noise, out=tmp_path / "a")
    path = _first_entry_file()
    data = torch.load(path, weights_only=True)
    adversarial = data["adversarial"]
    (clean,) = [
        b for b in _BudgetNoise.seen if b.shape == adversarial.shape and (adversarial - b).abs().max() <= 0.3 + 1e-6
    ]
    data["adversarial"] = clean + 0.5 * (adversarial - clean)  # other adversarials, but within eps
    torch.save(data, path)
    calls = _BudgetNoise.calls
    again = run(budget_noise, out=tmp_path / "b")
    assert _BudgetNoise.calls == calls  # nothing recomputed
    assert not [w for w in recwarn if "unusable cache entr" in str(w.message)]
    assert torch.equal(torch.load(path, weights_only=True)["adversarial"], data["adversarial"])  # served as it is
    assert again.metrics["attacks"]["budget-noise"]["cached_images"] == again.metrics["data"]["n_test"]


@pytest.mark.parametrize(("order", "eps"), [(math.inf, 0.1), (2.0, 0.5), (1.0, 20.0)])
def test_the_budget_check_allows_float32_rounding_at_eps_and_nothing_beyond(tmp_path, order, eps):
    cache = attack_cache.AttackCache("model", {"name": "x"}, 0, root=tmp_path)
    budget = attack_cache.Budget(order, eps)
    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(4, 3, 32, 32, generator=generator) * 0.5 + 0.25
    direction = torch.randn(clean.shape, generator=generator)
    if order == math.inf:
        unit = direction.sign()
    else:
        unit = direction / direction.flatten(1).norm(p=order, dim=1).view(-1, 1, 1, 1)
    keys = [f"{i}@{'0' * 32}" for i in range(4)]
    probs = torch.full((4, 3), 1 / 3)
    preds = torch.zeros(4, dtype=torch.long)
    cache.save(keys, attack_cache.CacheEntry((clean + eps * unit).float(), preds, probs, 1.0))  # at eps exactly
    assert cache.load(keys, clean=clean, budget=budget) is not None and cache.corrupt == 0
    beyond = clean + eps * unit
    beyond[2] = clean[2] + 1.01 * eps * unit[2]  # one image 1% beyond
    cache.save(keys, attack_cache.CacheEntry(beyond.float(), preds, probs, 1.0))
    assert cache.load(keys, image_shape=(3, 32, 32)) is not None  # without the clean images: not checked
    assert cache.load(keys, clean=clean, budget=budget) is None and cache.corrupt == 1
    assert "1 of its 4 adversarials lie outside the attack's budget" in cache.first_problem
    assert not list(tmp_path.rglob("*.pt"))  # deleted


def test_how_an_attack_declares_its_norm_budget():
    from tracekit.attacks import factories

    budget = attack_cache.norm_budget
    assert budget(factories.fgsm(eps=0.05)) == (math.inf, 0.05)
    assert budget(factories.gradient(eps=2.0, backend="native")) == (2.0, 2.0)
    assert budget(factories.pgd(norm=2, eps=0.5), {"name": "pgd", "norm": 2, "eps": 0.5}) == (2.0, 0.5)  # ART's
    assert budget(factories.deepfool(), {"name": "deepfool", "max_iter": 3}) is None  # no budget

    class Declared:
        norm, eps = "inf", 0.1
        norm_budget = None  # its norm and eps mean something else: says so

    assert budget(Declared(), {"norm": "inf", "eps": 0.1}) is None
    for norm, eps in [("inf", True), ("inf", -1.0), ("inf", math.nan), (3, 0.1), ("nope", 0.1), (None, 0.1)]:
        assert budget(type("Odd", (), {"norm": norm, "eps": eps})()) is None, (norm, eps)


def test_concurrent_writers_of_an_entry_take_turns_and_the_second_serves_the_firsts(tmp_path):
    """The second process to miss an entry waits for the writer holding its lock, then reads the
    entry it saved instead of computing (and writing) its own."""
    import threading

    from tracekit.locks import Lock

    run(spec(), out=tmp_path / "a")
    path = _first_entry_file()
    saved = torch.load(path, weights_only=True)
    os.unlink(path)
    lock = Lock(os.path.join(os.path.dirname(path), "." + os.path.basename(path)[: -len(".pt")] + ".lock"))
    assert lock.acquire() is None  # "another process" is computing this entry
    calls = _GlobalNoise.calls
    done: dict = {}
    second = threading.Thread(target=lambda: done.setdefault("result", run(spec(), out=tmp_path / "b")))
    second.start()
    try:
        second.join(timeout=5)
        assert second.is_alive() and not os.path.exists(path)  # waiting for the entry, not computing it
        torch.save(saved, path)  # the first writer saves its entry, then lets go
    finally:
        lock.release()
    second.join(timeout=120)
    assert not second.is_alive() and _GlobalNoise.calls == calls  # it read the first writer's entry
    assert (
        done["result"].metrics["attacks"]["global-noise"]["cached_images"] == done["result"].metrics["data"]["n_test"]
    )
    assert (tmp_path / "a" / "scores.csv").read_text() == (tmp_path / "b" / "scores.csv").read_text()
    assert not [p for p in os.listdir(os.path.dirname(path)) if p.endswith(".lock")]  # no lock file left


def test_a_detector_bound_attack_is_keyed_by_what_the_detector_learned():
    """Two fits of one detector spec with other states key different cache entries; the same
    state, however its dict is ordered, the same entry."""
    import numpy as np
    import torch

    from tracekit.engine.attack_cache import state_fingerprint

    state = {"means": torch.arange(6.0).view(2, 3), "combiner": {"coef": np.ones(3), "intercept": 0.5}, "k": 20}
    same = {"k": 20, "combiner": {"intercept": 0.5, "coef": np.ones(3)}, "means": torch.arange(6.0).view(2, 3)}
    assert state_fingerprint(state) == state_fingerprint(same)
    refitted = {**state, "means": state["means"] + 1e-6}
    assert state_fingerprint(refitted) != state_fingerprint(state)
    assert state_fingerprint({**state, "k": 21}) != state_fingerprint(state)
    assert state_fingerprint({**state, "means": state["means"].double()}) != state_fingerprint(state)  # dtype counts
