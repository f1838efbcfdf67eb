"""`tracekit explain` and `tracekit detect` (CLI and Python API) on images written by the tests."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import tracekit
from tracekit import plugins
from tracekit.cli import build_app
from tracekit.engine.run import run
from tracekit.errors import TracekitError
from tracekit.images import Preparation, load_image
from tracekit.testing import testing_plugin, tiny_model

runner = CliRunner()


def invoke(*args):
    return runner.invoke(build_app(), [str(a) for a in args])


def json_lines(result):
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module", autouse=True)
def tiny_plugin():
    plugins.register_plugin(testing_plugin, "tracekit-testing")
    yield
    plugins.unregister_plugin("tracekit-testing")


@pytest.fixture(scope="module")
def uint8_images():
    """Seeded 8-bit gray images `[N,16,16]` for tiny-cnn: lossless through PNG files."""
    gen = np.random.default_rng(5)
    return gen.integers(0, 256, size=(40, 16, 16), dtype=np.uint8)


def tiny_run(root, uint8_images, **spec):
    """Run tiny-cnn on an npz of 8-bit images labelled by the model (so most are correct); `spec`
    completes the run spec (name, seed, attacks, detector, calibration)."""
    images = torch.from_numpy(uint8_images.astype(np.float32) / 255.0)[:, None]
    with torch.no_grad():
        labels = tiny_model().module(images).argmax(1).numpy()
    np.savez(root / "data.npz", images=uint8_images, labels=labels)
    spec = {
        "device": "cpu", "model": {"name": "tiny-cnn"}, "data": {"name": "npz", "path": str(root / "data.npz")},
        "batch_size": 8, **spec,
    }  # fmt: skip
    (root / "spec.yaml").write_text(json.dumps(spec))  # YAML reads JSON
    return run(spec, out=root / "run")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, uint8_images):
    """A tiny run with the paper's detector."""
    return tiny_run(
        tmp_path_factory.mktemp("detect"), uint8_images, name="detect-test", seed=2,
        attacks=[{"name": "sign-noise", "eps": 0.2}],
        detector={"name": "feature-response", "score": {"name": "local-entropy"}},
        calibration={"fit_fraction": 0.5, "target_fpr": 0.2},
    )  # fmt: skip


def clean_test_images(result, uint8_images):
    """The run's clean test images (in scores.csv order), from the npz it read."""
    import pandas as pd

    clean = pd.read_parquet(result.out_dir / "tables" / "clean")
    positions = clean.loc[clean["part"] == "test", "index"].to_numpy()
    return torch.from_numpy(uint8_images[positions].astype(np.float32) / 255.0)[:, None]


def saved_adversarials(result):
    """`(attack, ids, adversarials)` of the test images the run kept for its report."""
    from tracekit.report.rundata import read_run

    saved, _, _ = read_run(result.out_dir).examples()
    attack, entry = next(iter(saved.items()))
    return attack, entry.ids, torch.from_numpy(entry.adversarial)


def clean_rows(result):
    with open(result.out_dir / "scores.csv") as fh:
        return [r for r in csv.DictReader(fh) if r["attack"] == "clean"]


def test_detect_png_files_reproduce_the_runs_scores_and_verdicts(finished, uint8_images, tmp_path):
    rows = clean_rows(finished)
    paths = []
    for r in rows:
        index = int(r["sample_id"].rsplit("-", 1)[1])  # npz ids are <file stem>-<index>
        paths.append(tmp_path / f"{r['sample_id']}.png")
        Image.fromarray(uint8_images[index], mode="L").save(paths[-1])
    result = invoke("detect", "--run", finished.out_dir, "--json", *paths)
    assert result.exit_code == 0, result.output
    out = json_lines(result)
    threshold = finished.metrics["threshold"]
    assert [o["image"] for o in out] == [str(p) for p in paths]
    assert [o["score"] for o in out] == [float(r["score"]) for r in rows]  # bit for bit
    assert [o["pred"] for o in out] == [int(r["pred"]) for r in rows]
    assert all(o["threshold"] == threshold and o["error"] is None for o in out)
    assert [o["verdict"] for o in out] == ["adversarial" if float(r["score"]) > threshold else "clean" for r in rows]


def test_detect_api_on_tensors_reproduces_clean_and_adversarial_scores(finished, uint8_images):
    clean = tracekit.detect(finished.out_dir, clean_test_images(finished, uint8_images))
    assert [c["score"] for c in clean] == [float(r["score"]) for r in clean_rows(finished)]
    attack, ids, images = saved_adversarials(finished)
    adversarial = tracekit.detect(finished.out_dir, images.numpy())  # arrays work too
    with open(finished.out_dir / "scores.csv") as fh:
        rows = {r["sample_id"]: r for r in csv.DictReader(fh) if r["attack"] == attack}
    assert [a["score"] for a in adversarial] == [float(rows[i]["score"]) for i in ids]
    assert [a["pred"] for a in adversarial] == [int(rows[i]["pred"]) for i in ids]


def test_detect_table_exits_0_whatever_the_verdicts(finished, uint8_images, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    shutil.copytree(finished.out_dir, run_dir)
    scores = [float(r["score"]) for r in clean_rows(finished)]
    state = json.loads((run_dir / "detector.json").read_text())
    state["threshold"] = sorted(scores)[len(scores) // 2]  # about half the images flagged
    (run_dir / "detector.json").write_text(json.dumps(state))
    monkeypatch.chdir(tmp_path)  # short relative names fit the table
    names = [f"img{i}.png" for i in range(len(scores))]
    for name, image in zip(names, clean_test_images(finished, uint8_images)):
        Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8)).save(name)
    result = invoke("detect", "--run", "run", *names)
    assert result.exit_code == 0, result.output
    words = result.stdout.split()
    flagged = sum(s > state["threshold"] for s in scores)
    assert 0 < flagged < len(scores)
    assert words.count("adversarial") == flagged and words.count("clean") == len(scores) - flagged
    assert all(name in words for name in names)
    assert words.count(f"{state['threshold']:.4f}") >= len(scores)  # every row (and the median image's score)


def write_odd_images(tmp_path):
    """RGB, gray, RGBA, palette, 16-bit and JPEG images of odd sizes."""
    gen = np.random.default_rng(0)
    files = {
        "rgb.png": Image.fromarray(gen.integers(0, 256, (23, 17, 3), dtype=np.uint8), "RGB"),
        "gray.png": Image.fromarray(gen.integers(0, 256, (40, 40), dtype=np.uint8), "L"),
        "rgba.png": Image.fromarray(gen.integers(0, 256, (9, 31, 4), dtype=np.uint8), "RGBA"),
        "palette.png": Image.fromarray(gen.integers(0, 256, (16, 16, 3), dtype=np.uint8), "RGB").convert("P"),
        "photo.jpg": Image.fromarray(gen.integers(0, 256, (101, 64, 3), dtype=np.uint8), "RGB"),
    }
    paths = []
    for name, image in files.items():
        image.save(tmp_path / name)
        paths.append(tmp_path / name)
    return paths


def test_explain_images_of_any_mode_and_size(finished, tmp_path):
    paths = write_odd_images(tmp_path)
    out = tmp_path / "panels"
    result = invoke("explain", *paths, "--model", finished.out_dir, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    rows = json_lines(result)
    assert [r["image"] for r in rows] == [str(p) for p in paths]
    names = tiny_model().class_names
    for r, path in zip(rows, paths):
        assert r["class"] == names[r["pred"]] and 0 < r["confidence"] <= 1
        expected = tracekit.detect(finished.out_dir, load_image(path, Preparation(1, (16, 16)))[None])[0]
        assert r["score"] == expected["score"] and r["verdict"] == expected["verdict"]
        with Image.open(r["panel"]) as panel:
            array = np.asarray(panel.convert("RGB"))
        assert panel.format == "PNG" and array.std() > 20
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{p.stem}.explain.png" for p in paths)


def test_sixteen_bit_gray_images_keep_their_gray_levels(tmp_path):
    pixels = np.arange(16 * 16, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(pixels.astype(np.uint16) * 257).save(tmp_path / "deep.png")  # 16-bit PNG, same picture
    Image.fromarray(pixels).save(tmp_path / "flat.png")
    deep = load_image(tmp_path / "deep.png", Preparation(1, (16, 16)))
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    assert torch.equal(deep, load_image(tmp_path / "flat.png", Preparation(1, (16, 16))))


def test_image_loading_converts_mode_resizes_and_crops(tmp_path):
    Image.new("RGBA", (37, 11), (90, 90, 90, 0)).save(tmp_path / "flat.png")  # alpha is dropped
    image = load_image(tmp_path / "flat.png", Preparation(1, (16, 16)))
    assert image.shape == (1, 16, 16) and torch.all(image == 90 / 255)
    Image.new("L", (5, 7), 200).save(tmp_path / "small.png")
    rgb = load_image(tmp_path / "small.png", Preparation(3, (24, 20)))
    assert rgb.shape == (3, 24, 20) and torch.all(rgb == 200 / 255)
    pixels = np.arange(16 * 16, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(pixels).save(tmp_path / "exact.png")  # the model's size: no resampling
    exact = torch.from_numpy(pixels / np.float32(255))
    assert torch.equal(load_image(tmp_path / "exact.png", Preparation(1, (16, 16)))[0], exact)
    wide = np.zeros((16, 32), dtype=np.uint8)
    wide[:, 8:24] = pixels
    Image.fromarray(wide).save(tmp_path / "wide.png")  # the aspect ratio is kept: the centre is cropped
    assert torch.equal(load_image(tmp_path / "wide.png", Preparation(1, (16, 16)))[0], exact)


def test_explain_spec_model_has_no_verdict_and_names_panels_uniquely(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: s\nmodel: {name: tiny-cnn}\ndata: {name: random-images}\nattacks: [{name: sign-noise}]\n"
        "detector: {name: feature-response, score: {name: mean-abs}}\n"
    )
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    paths = [tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"]
    for p in paths:
        Image.new("L", (16, 16), 30).save(p)
    results = tracekit.explain(paths, model=spec, out=tmp_path / "out")
    assert [r["verdict"] for r in results] == [None, None] and results[0]["threshold"] is None
    assert results[0]["panel"] != results[1]["panel"]
    assert all((tmp_path / "out" / name).is_file() for name in ("x.explain.png", "x-2.explain.png"))


def test_explain_default_model_reads_handwritten_digits(tmp_path):
    """The embedded digits-cnn: digit PNGs (8-bit) are classified as their tensors are."""
    from tracekit.datasets.digits import digits_arrays

    _, images, labels = digits_arrays("test")
    paths = []
    for i in range(6):
        paths.append(tmp_path / f"digit{i}.png")
        Image.fromarray((images[i, 0].numpy() * 255).round().astype(np.uint8)).save(paths[-1])
    from_files = tracekit.explain(paths, out=tmp_path / "out")
    from_tensors = tracekit.explain(images[:6], out=tmp_path / "out")  # a second call works too
    assert [r["pred"] for r in from_files] == [r["pred"] for r in from_tensors] == labels[:6].tolist()
    assert all(r["class"] == str(r["pred"]) and r["verdict"] is None for r in from_files)
    assert all(abs(a["score"] - b["score"]) < 0.1 for a, b in zip(from_files, from_tensors))


def test_unreadable_inputs_are_reported_while_the_others_are_processed(finished, tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (16, 16), dtype=np.uint8)).save(good)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:150])  # header intact, pixel data cut
    missing = tmp_path / "missing.png"
    for command in (["detect", "--run", finished.out_dir], ["explain", "--model", finished.out_dir, "--out", tmp_path]):
        result = invoke(*command, "--json", text, good, missing, truncated)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        errors = " ".join(result.stderr.split())
        assert f"{text}: not an image file" in errors
        assert f"{missing}: no such file" in errors
        assert f"{truncated}: cannot read the image" in errors
        rows = json_lines(result)
        assert [r["image"] for r in rows] == [str(p) for p in (text, good, missing, truncated)]
        assert rows[1]["error"] is None and isinstance(rows[1]["score"], float)
        assert all(r["error"] and r["score"] is None for i, r in enumerate(rows) if i != 1)


def broken_run_dirs(finished, tmp_path):
    """(run directory, expected message fragment) of missing, older and broken runs."""
    cases = [(tmp_path / "nowhere", "does not exist")]
    for name, content, fragment in [
        ("no-detector", None, "no detector.json"),
        ("older", {"format": 0}, "format 0, but this tracekit reads format 1"),
        ("not-json", "{oops", "not valid JSON"),
        ("no-threshold", {"format": 1, "model": {"name": "tiny-cnn"}, "detector": {"name": "feature-response"}},
         "'threshold': field required"),
        ("unknown-model", {"format": 1, "model": {"name": "gone-cnn"}, "detector": {"name": "feature-response"},
                           "threshold": 1.0}, "gone-cnn"),
    ]:  # fmt: skip
        run_dir = tmp_path / name
        shutil.copytree(finished.out_dir, run_dir)
        (run_dir / "detector.json").unlink()
        if content is not None:
            (run_dir / "detector.json").write_text(content if isinstance(content, str) else json.dumps(content))
        cases.append((run_dir, fragment))
    return cases


def test_missing_older_or_broken_run_directory_is_a_clear_error(finished, tmp_path):
    image = tmp_path / "img.png"
    Image.new("L", (16, 16), 10).save(image)
    for run_dir, fragment in broken_run_dirs(finished, tmp_path):
        explain = [["explain", "--model", run_dir]] if run_dir.exists() else []  # else: see the next test
        for command in [["detect", "--run", run_dir], *explain]:
            result = invoke(*command, image)
            assert result.exit_code == 2, (run_dir, result.output)
            assert "Traceback" not in result.output and "error:" in result.output
            assert fragment in " ".join(result.output.split()), result.output
        with pytest.raises(tracekit.TracekitError, match="run directory|detector.json"):
            tracekit.detect(run_dir, [image])


def test_explain_missing_model_path_is_a_clear_error(tmp_path):
    result = invoke("explain", tmp_path / "x.png", "--model", tmp_path / "nope.yaml")
    assert result.exit_code == 2
    assert "no such spec file or run directory" in " ".join(result.output.split())


def test_detect_refuses_a_model_whose_weights_changed(tmp_path):
    """detector.json records the model fingerprint; a different model is refused."""
    import json

    from tracekit.detecting import load_run
    from tracekit.errors import TracekitError

    run_dir = tmp_path / "fake-run"
    run_dir.mkdir()
    state = {
        "format": 1,
        "model": {"name": "digits-cnn"},
        "model_fingerprint": "0" * 64,
        "detector": {"name": "feature-response"},
        "threshold": 1.0,
        "device": "cpu",
    }
    (run_dir / "detector.json").write_text(json.dumps(state))
    with pytest.raises(TracekitError, match="not the one the run used"):
        load_run(run_dir)


@pytest.fixture(scope="module")
def learned(tmp_path_factory, uint8_images):
    """A tiny run whose detector learns (Mahalanobis on tiny-cnn, from sign-noise adversarials)."""
    return tiny_run(
        tmp_path_factory.mktemp("learned"), uint8_images, name="learned", seed=0,
        attacks=[{"name": "sign-noise", "eps": 0.5}], detector={"name": "mahalanobis", "batch_size": 8},
        calibration={"fit_fraction": 0.5, "target_fpr": 0.2},
    )  # fmt: skip


def test_detect_scores_with_the_runs_fitted_learned_detector(learned, uint8_images):
    """`detector_state.pt` holds what the detector learned; `detect` reproduces the run's scores
    (to float rounding: it scores in other batches) and verdicts."""
    assert json.loads((learned.out_dir / "detector.json").read_text())["state_file"] == "detector_state.pt"
    rows = clean_rows(learned)
    results = tracekit.detect(learned.out_dir, clean_test_images(learned, uint8_images))
    expected = np.array([float(r["score"]) for r in rows])
    np.testing.assert_allclose([r["score"] for r in results], expected, rtol=1e-9, atol=1e-9)
    threshold = learned.metrics["threshold"]
    assert [r["verdict"] for r in results] == ["adversarial" if s > threshold else "clean" for s in expected]
    _, _, adversarial = saved_adversarials(learned)
    flagged = tracekit.detect(learned.out_dir, adversarial)
    assert len(flagged) > 0 and all(r["score"] is not None for r in flagged)


@pytest.mark.filterwarnings("ignore:.*has no dropout")
def test_detect_reproduces_kd_bu_scores_one_image_at_a_time(tmp_path, uint8_images):
    """KD+BU's dropout masks belong to each image, so a lone image gets its score from the run."""
    finished = tiny_run(
        tmp_path, uint8_images, name="kdbu", seed=0, attacks=[{"name": "sign-noise", "eps": 0.5}],
        detector={"name": "kd-bu", "n_samples": 8, "batch_size": 8},
        calibration={"fit_fraction": 0.5, "target_fpr": 0.2},
    )  # fmt: skip
    expected = np.array([float(r["score"]) for r in clean_rows(finished)])
    alone = [
        tracekit.detect(finished.out_dir, image[None])[0]["score"]
        for image in clean_test_images(finished, uint8_images)[:6]
    ]
    np.testing.assert_allclose(alone, expected[:6], rtol=1e-6, atol=1e-9)


def test_learned_detector_needs_its_fitted_state(learned, tmp_path):
    image = tmp_path / "img.png"
    Image.new("L", (16, 16), 10).save(image)
    run_dir = tmp_path / "run"
    shutil.copytree(learned.out_dir, run_dir)
    (run_dir / "detector_state.pt").write_bytes(b"not a torch file")
    result = invoke("detect", "--run", run_dir, image)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "cannot read the fitted detector" in " ".join(result.output.split())
    torch.save({"layers": ["x"]}, run_dir / "detector_state.pt")  # readable, but not this detector's state
    result = invoke("detect", "--run", run_dir, image)
    assert result.exit_code == 2 and "does not fit it (KeyError" in " ".join(result.output.split()), result.output
    (run_dir / "detector_state.pt").unlink()
    result = invoke("detect", "--run", run_dir, image)
    assert result.exit_code == 2 and "detector_state.pt is missing" in " ".join(result.output.split())
    with pytest.raises(tracekit.TracekitError, match="learns from data.*give a run directory"):
        tracekit.explain([image], model=learned.out_dir.parent / "spec.yaml", out=tmp_path)


def test_detector_option_on_a_single_run_or_without_a_run_is_bad_input(finished, tmp_path):
    image = tmp_path / "img.png"
    Image.new("L", (16, 16), 10).save(image)
    result = invoke("detect", "--run", finished.out_dir, "--detector", "lid", image)
    assert result.exit_code == 2 and "has one detector, 'feature-response'" in " ".join(result.output.split())
    same = invoke("detect", "--run", finished.out_dir, "--detector", "feature-response", "--json", image)
    assert same.exit_code == 0, same.output
    result = invoke("explain", "--detector", "paper", image)
    assert result.exit_code == 2 and "give one with --model" in " ".join(result.output.split())


def test_explain_picks_a_detector_of_a_comparison_spec(tmp_path):
    from tracekit.explaining import load_setup

    spec = {
        "name": "cmp", "model": {"name": "digits-cnn"}, "data": {"name": "digits"}, "attacks": [{"name": "fgsm"}],
        "detectors": [{"name": "feature-response", "label": "paper"},
                      {"name": "feature-response", "label": "smooth", "saliency": {"name": "smoothgrad"}}],
    }  # fmt: skip
    with pytest.raises(TracekitError, match=r"compares 2 detectors; pick one with --detector \(paper, smooth\)"):
        load_setup(spec)
    with pytest.raises(TracekitError, match="no detector 'smoth' \\(did you mean 'smooth'"):
        load_setup(spec, detector="smoth")
    from tracekit.saliency.smoothgrad import SmoothGrad

    assert isinstance(load_setup(spec, detector="smooth").detector.saliency, SmoothGrad)
