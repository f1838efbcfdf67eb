"""`tracekit export`: a run's adversarials from the attack cache, with their originals,
perturbations and an index, as float arrays or 8-bit PNG files."""

import csv

import numpy as np
import pytest
from PIL import Image

import tracekit
from tracekit import plugins
from tracekit.errors import TracekitError
from tracekit.report.rundata import read_run
from tracekit.testing import testing_plugin

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def with_testing():
    plugins.register_plugin(testing_plugin, "tracekit-testing")
    yield
    plugins.unregister_plugin("tracekit-testing")


def spec():
    return {
        "name": "export",
        "device": "cpu",
        "model": {"name": "tiny-cnn"},
        "data": {"name": "random-images", "n": 40},
        "attacks": [{"name": "sign-noise", "eps": 0.3}, {"name": "sign-noise", "eps": 0.05, "label": "small"}],
        "evaluation": {"bootstrap": 0},
        "batch_size": 8,
    }


@pytest.fixture(scope="module")
def finished(with_testing, tmp_path_factory):
    return tracekit.run(spec(), out=tmp_path_factory.mktemp("run") / "run")


def index_rows(out):
    with open(out / "index.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_npz_export_holds_every_attacked_image_as_the_run_had_it(finished, tmp_path):
    result = tracekit.export(finished.out_dir, tmp_path / "out")
    rows = index_rows(tmp_path / "out")
    for attack in ("sign-noise", "small"):  # the attacked images: the test part (the detector fits on none)
        mine = [r for r in rows if r["attack"] == attack]
        assert len(mine) == finished.metrics["data"]["n_test"] == result.attacks[attack]["images"]
        assert sum(r["success"] == "1" for r in mine) == result.attacks[attack]["successful"]
        assert all(r["score"] for r in mine)  # the run's detector scored every one
    saved, _, _ = read_run(finished.out_dir).examples()
    example = saved["sign-noise"]
    arrays = {}
    for file in sorted((tmp_path / "out" / "sign-noise").glob("*.npz")):
        with np.load(file) as npz:
            assert np.array_equal(npz["adversarial"] - npz["original"], npz["perturbation"])
            for k, sample_id in enumerate(npz["sample_id"]):
                arrays[str(sample_id)] = (npz["adversarial"][k], npz["perturbation"][k])
    for k, sample_id in enumerate(example.ids):  # the run's own examples: the same adversarials
        assert np.array_equal(arrays[sample_id][0], example.adversarial[k])
    for row in (r for r in rows if r["attack"] == "sign-noise"):
        delta = arrays[row["sample_id"]][1]
        assert abs(float(row["linf"]) - np.abs(delta).max()) < 1e-6
        assert abs(float(row["l2"]) - np.linalg.norm(delta.astype(np.float64))) < 1e-5


def test_png_export_says_how_many_still_fool_the_model_at_8_bits(finished, tmp_path):
    result = tracekit.export(finished.out_dir, tmp_path / "png", attack="small", fmt="png")
    counts = result.attacks["small"]
    assert set(result.attacks) == {"small"}
    assert 0 <= counts["still_successful_after_8bit"] <= counts["successful"]
    rows = index_rows(tmp_path / "png")
    assert len(rows) == counts["images"] and {r["attack"] for r in rows} == {"small"}
    adversarial = Image.open(tmp_path / "png" / rows[0]["file"])
    assert adversarial.size == (16, 16) and adversarial.mode == "L"
    assert (tmp_path / "png" / rows[0]["file"].replace(".adversarial.", ".perturbation.")).is_file()


def test_bad_requests_are_one_clear_message(finished, tmp_path, with_testing):
    with pytest.raises(TracekitError, match=r"has no attack 'smal'.*small"):
        tracekit.export(finished.out_dir, tmp_path / "x", attack="smal")
    with pytest.raises(TracekitError, match="--format 'jpg'"):
        tracekit.export(finished.out_dir, tmp_path / "x", fmt="jpg")
    own = tracekit.run(spec(), out=tmp_path / "uncached", use_cache=False)
    with pytest.raises(TracekitError, match="kept its adversarials in its own folder"):
        tracekit.export(own.out_dir, tmp_path / "y")


def test_read_tables_names_them_by_attack_and_detector_label(finished):
    frames = tracekit.read_tables(finished.out_dir)
    assert {"clean", "attack/sign-noise", "attack/small", "scores/feature-response/clean"} <= set(frames)
    assert {
        "scores/feature-response/sign-noise",
        "scores/feature-response/small",
        "scores/feature-response/fit",
    } <= set(frames)
    scores = frames["scores/feature-response/small"]
    with open(finished.out_dir / "scores.csv", newline="") as fh:
        csv_rows = {r["sample_id"]: float(r["score"]) for r in csv.DictReader(fh) if r["attack"] == "small"}
    assert dict(zip(scores["sample_id"], scores["score"])) == csv_rows
    assert list(frames["clean"]["index"]) == sorted(frames["clean"]["index"])
