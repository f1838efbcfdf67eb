"""A corpus of hostile and broken inputs, each given to the CLI as a user would: every one ends
with exit code 2 and one clear `error:` line naming what is wrong (never a traceback), within a
bounded time, and nothing already computed is lost. Categories: specs, images, npz files,
checkpoints, run directories, plugins and components that return garbage."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from tracekit import hookimpl, plugins
from tracekit.cli import build_app
from tracekit.testing import install_fake_distribution, tiny_model

QUICKSTART = str(Path(__file__).parents[1] / "examples" / "quickstart.yaml")
LIMIT_S = 60  # every case, however hostile, ends within this


def invoke(*args: object):
    started = time.monotonic()
    result = CliRunner().invoke(build_app(), [str(a) for a in args])
    assert time.monotonic() - started < LIMIT_S, f"took {time.monotonic() - started:.0f} s"
    return result


def assert_one_clear_error(result, pattern: str) -> None:
    output = result.output
    assert result.exit_code == 2, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    import re

    assert re.search(pattern, " ".join(output.split())), output
    assert len(errors[0]) < 1000, f"an error line of {len(errors[0])} characters"


def spec_file(tmp_path: Path, text: str | bytes | dict) -> Path:
    path = tmp_path / "spec.yaml"
    if isinstance(text, dict):
        text = yaml.safe_dump(text)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


BASE = {
    "name": "hostile",
    "model": {"name": "digits-cnn"},
    "data": {"name": "digits", "split": "test", "limit": 40},
    "attacks": [{"name": "fgsm", "eps": 0.1}],
    "device": "cpu",
    "batch_size": 16,
    "evaluation": {"bootstrap": 0},
}


def _laughs(levels: int = 9) -> str:
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\nname: x\n"


SPECS = {  # id: (spec text or mapping, extra CLI arguments, the message expected)
    "not-utf8": (b"\xff\xfe\x00name: x", [], r"not UTF-8 text"),
    "syntax": ("name: [unclosed", [], r"spec.yaml:\d+:\d+: invalid YAML"),
    "top-level-list": ("- a\n- b\n", [], r"a spec is a YAML mapping"),
    "duplicate-key": ("name: a\nname: b\n", [], r"key 'name' is given twice"),
    "billion-laughs": (_laughs(), [], r"expands to more than 100,000 values"),
    "deep-nesting": ("name: " + "[" * 200 + "]" * 200 + "\n", [], r"nested more than 64 levels|invalid YAML"),
    "too-large": ("name: x\n" + "#" * (2**20 + 10) + "\n", [], r"more than the 1,048,576 tracekit reads"),
    "python-tag": ("name: !!python/object/apply:os.system ['true']\n", [], r"invalid YAML"),
    "unknown-key": ({**BASE, "atacks": []}, [], r"atacks: unknown key \(did you mean 'attacks'\?\)"),
    "unknown-attack": ({**BASE, "attacks": [{"name": "fgsn"}]}, [], r"unknown attack 'fgsn' \(did you mean 'fgsm'"),
    "unknown-param": (
        {**BASE, "attacks": [{"name": "fgsm", "esp": 0.1}]},
        [],
        r"esp: unknown parameter of attack 'fgsm' \(did you mean 'eps'",
    ),
    "negative-seed": ({**BASE, "seed": -1}, [], r"seed: Input should be greater than or equal to 0"),
    "huge-seed": ({**BASE, "seed": 2**70}, [], r"seed: Input should be less than or equal to 9223372036854775807"),
    "long-label": ({**BASE, "attacks": [{"name": "fgsm", "label": "x" * 300}]}, [], r"is longer than 64 characters"),
    "slash-label": ({**BASE, "attacks": [{"name": "fgsm", "label": "../x"}]}, [], r"has a slash"),
    "clean-label": ({**BASE, "attacks": [{"name": "fgsm", "label": "clean"}]}, [], r"'clean' names the clean images"),
    "twice-label": ({**BASE, "attacks": [{"name": "fgsm"}, {"name": "fgsm"}]}, [], r"'fgsm' appears twice"),
    "zero-batch": ({**BASE, "batch_size": 0}, [], r"batch_size: a positive number of images or .auto., got 0"),
    "fpr-above-one": ({**BASE, "calibration": {"target_fpr": 1.5}}, [], r"target_fpr: Input should be less than 1"),
    "bool-number": ({**BASE, "attacks": [{"name": "fgsm", "eps": True}]}, [], r"eps: a number, not true"),
    "device": ({**BASE, "device": "tpu"}, [], r"device is auto, cpu, cuda or cuda:N"),
    "device-mps": ({**BASE, "device": "mps"}, [], r"device 'mps' is not supported: .*float64"),
    "both-detectors": ({**BASE, "detectors": [{"name": "lid"}], "detector": {"name": "lid"}}, [], r"either 'detector'"),
    "no-attacks": ({**BASE, "attacks": []}, [], r"attacks: List should have at least 1 item"),
    "long-value": ({**BASE, "batch_size": "x" * 5000}, [], r"\.\.\. \(5,002 characters\)"),
    "set-no-equals": (BASE, ["--set", "attacks.0.eps"], r"expected KEY=VALUE"),
    "set-out-of-range": (BASE, ["--set", "attacks.5.eps=1"], r"index 5 out of range"),
    "set-unknown-field": (BASE, ["--set", "atacks.0.eps=1"], r"the spec has no field 'atacks'"),
    "workers-zero": (
        BASE,
        ["--set", "executor.name=ray", "--set", "executor.workers=0"],
        r"executor.workers: Input should be greater than or equal to 1",
    ),
    "unknown-executor": (BASE, ["--set", "executor.name=slurm"], r"unknown executor 'slurm'"),
}


@pytest.mark.parametrize("case", sorted(SPECS))
def test_a_hostile_spec_is_one_clear_error(case, tmp_path):
    text, extra, said = SPECS[case]
    assert_one_clear_error(invoke("validate", spec_file(tmp_path, text), *extra), said)


def test_a_spec_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.yaml")
    assert_one_clear_error(invoke("validate", tmp_path / "pipe.yaml"), r"must be a regular file")
    assert_one_clear_error(invoke("validate", tmp_path), r"is a directory, not a spec file")
    assert_one_clear_error(invoke("validate", tmp_path / "missing.yaml"), r"does not exist")


def _png(path: Path, size: tuple[int, int], mode: str = "L") -> Path:
    from PIL import Image

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        Image.new(mode, size).save(path)
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    return path


IMAGES = {  # id: (make the file, the message expected)
    "missing": (lambda d: d / "missing.png", r"no such file"),
    "directory": (lambda d: d, r"is a directory, not an image file"),
    "pipe": (lambda d: (os.mkfifo(d / "pipe.png"), d / "pipe.png")[1], r"not a regular file"),
    "empty": (
        lambda d: (d / "empty.png").write_bytes(b"") and d / "empty.png" or d / "empty.png",
        r"not an image file Pillow can read",
    ),
    "text": (lambda d: (d / "text.png").write_text("hello") and d / "text.png", r"not an image file Pillow can read"),
    "truncated": (lambda d: _truncated(d / "cut.png"), r"cannot read the image"),
    "bomb-pil": (lambda d: _png(d / "bomb.png", (20_000, 20_000), "1"), r"exceeds limit|more than the"),
    "bomb-tracekit": (
        lambda d: _png(d / "big.png", (8_000, 8_000), "1"),
        r"64,000,000 pixels, more than the 50,000,000",
    ),
    "aspect-ratio": (lambda d: _png(d / "thin.png", (1, 60_000)), r"aspect ratio \(1x60000\) would make it"),
}


def _truncated(path: Path) -> Path:
    _png(path, (64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("case", sorted(IMAGES))
def test_a_hostile_image_is_one_clear_error(case, tmp_path):
    make, said = IMAGES[case]
    assert_one_clear_error(invoke("explain", make(tmp_path), "--out", tmp_path / "panels"), said)


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _absurd_header(path: Path) -> Path:
    """A folder of .npy files whose images header declares 10^11 images (3.2 TB) over 256 bytes."""
    np.save(path / "labels.npy", np.zeros(2, np.int64))
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000, 1, 32, 32), }"
    body = header.ljust(117) + "\n"
    with open(path / "images.npy", "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body.encode() + bytes(256))
    return path


GOOD = {"images": np.random.default_rng(0).random((4, 1, 32, 32), dtype=np.float32), "labels": np.arange(4)}
NPZ = {  # id: (make the data path, the message expected)
    "not-a-zip": (lambda d: (d / "x.npz").write_text("no") and d / "x.npz", r"cannot read it as a NumPy .npz file"),
    "single-array": (lambda d: (np.save(d / "x.npy", GOOD["images"]), d / "x.npy")[1], r"holds a single array"),
    "missing-key": (
        lambda d: _npz(d / "x.npz", pictures=GOOD["images"], labels=GOOD["labels"]),
        r"has no images 'images'; its arrays are: labels, pictures",
    ),
    "absurd-header": (
        lambda d: _absurd_header(d),
        r"header declares float32 of shape \[100000000000, 1, 32, 32\] .* holds 256 bytes",
    ),
    "non-utf8-ids": (
        lambda d: _npz(d / "x.npz", **GOOD, ids=np.array([b"\xff\xfe", b"b", b"c", b"d"])),
        r"not UTF-8 text",
    ),
    "duplicate-ids": (lambda d: _npz(d / "x.npz", **GOOD, ids=np.array(["a", "a", "b", "c"])), r"duplicate ids"),
    "nan-pixels": (
        lambda d: _npz(d / "x.npz", images=np.full((4, 1, 32, 32), np.nan, np.float32), labels=GOOD["labels"]),
        r"contains NaN or infinite values",
    ),
    "labels-length": (
        lambda d: _npz(d / "x.npz", images=GOOD["images"], labels=np.arange(3)),
        r"'labels' must be 4 integers",
    ),
    "wrong-size": (
        lambda d: _npz(d / "x.npz", images=np.zeros((4, 1, 9, 9), np.float32), labels=GOOD["labels"]),
        r"images of shape \[4, 1, 9, 9\] do not fit the model's 1x32x32 input",
    ),
}


@pytest.mark.parametrize("case", sorted(NPZ))
def test_a_hostile_npz_is_one_clear_error(case, tmp_path):
    make, said = NPZ[case]
    path = make(tmp_path)
    data = {"name": "npz", "path": str(path)} | ({"ids_key": "ids"} if "ids" in case else {})
    spec = spec_file(tmp_path, {**BASE, "data": data})
    assert_one_clear_error(invoke("run", spec, "--out", tmp_path / "run"), said)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


CHECKPOINTS = {  # id: (make the file, the message expected)
    "pickled-code": (lambda p: torch.save({"w": _Evil()}, p), r"holds Python objects besides tensors \(posix.system"),
    "garbage": (lambda p: p.write_bytes(b"garbage" * 100), r"cannot read .* as PyTorch weights"),
    "wrong-keys": (lambda p: torch.save({"nonsense.weight": torch.zeros(3)}, p), r"does not fit the model"),
    "empty-dict": (lambda p: torch.save({}, p), r"does not hold a state dict"),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINTS))
def test_a_hostile_checkpoint_is_one_clear_error(case, tmp_path):
    make, said = CHECKPOINTS[case]
    weights = tmp_path / "weights.pt"
    make(weights)
    model = {"name": "checkpoint", "arch": "squeezenet1_1", "path": str(weights), "num_classes": 10}
    spec = spec_file(tmp_path, {**BASE, "model": model})
    result = invoke("run", spec, "--out", tmp_path / "run")
    assert_one_clear_error(result, said)
    assert "pwned" not in result.output


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run, copied per test before being broken."""
    out = tmp_path_factory.mktemp("finished") / "run"
    result = invoke("run", spec_file(out.parent, BASE), "--out", out)
    assert result.exit_code == 0, result.output
    return out


def _broken_copy(finished: Path, tmp_path: Path, name: str, content: str | bytes) -> Path:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    target = run / name
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content)
    return run


RUN_DIRS = {  # id: (file, its new content, command, the message expected)
    "detector-not-json": ("detector.json", "{nope", "detect", r"not valid JSON"),
    "detector-deep": ("detector.json", "[" * 100_000 + "]" * 100_000, "detect", r"nested too deeply"),
    "detector-not-object": ("detector.json", "[1, 2]", "detect", r"expected a JSON object"),
    "detector-threshold-nan": ("detector.json", None, "detect", r"'threshold': input should be a valid number"),
    "metrics-broken": ("metrics.json", "{", "report", r"not valid JSON"),
    "spec-broken": ("spec.resolved.yaml", "name: [", "report", r"resolved.yaml: not valid YAML \(while parsing"),
}


@pytest.mark.parametrize("case", sorted(RUN_DIRS))
def test_a_broken_run_directory_is_one_clear_error(case, finished, tmp_path):
    name, content, command, said = RUN_DIRS[case]
    if content is None:
        state = json.loads((finished / name).read_text())
        content = json.dumps({**state, "threshold": "NaN"})
    run = _broken_copy(finished, tmp_path, name, content)
    image = _png(tmp_path / "digit.png", (32, 32))
    args = ("detect", "--run", run, image) if command == "detect" else ("report", run)
    assert_one_clear_error(invoke(*args), said)


def test_a_run_directory_without_tables_and_missing_ones(finished, tmp_path):
    import shutil

    run = _broken_copy(finished, tmp_path, "metrics.json", (finished / "metrics.json").read_text())
    shutil.rmtree(run / "tables")
    assert_one_clear_error(invoke("report", run), r"has no per-sample tables")
    assert_one_clear_error(invoke("report", tmp_path / "nowhere"), r"does not exist")
    assert_one_clear_error(invoke("compare", run, tmp_path / "nowhere"), r"does not exist")


# Everything read back from a run directory is checked (tracekit.readback, the tables' column
# checks): each broken file below is one clear exit-2 line naming it, for every reader.


def _metrics(change):
    def edit(run: Path) -> None:
        metrics = json.loads((run / "metrics.json").read_text())
        change(metrics)
        (run / "metrics.json").write_text(json.dumps(metrics))

    return edit


def _set_attack(key, value):
    return _metrics(lambda m: m["attacks"]["fgsm"].__setitem__(key, value))


def _table(name, change):
    """Rewrite every chunk of table `name` through `change(pyarrow table) -> pyarrow table`."""

    def edit(run: Path) -> None:
        import pyarrow.parquet as pq

        for file in sorted((run / "tables" / name).glob("*.parquet")):
            pq.write_table(change(pq.read_table(file)), file)

    return edit


def _column(column, values):
    import pyarrow as pa

    def change(table):
        at = table.column_names.index(column)
        return table.set_column(at, column, pa.array(values(table.num_rows)))

    return change


def _first_value(column, value):
    import pyarrow as pa

    def change(table):
        values = table.column(column).to_pylist()
        values[0] = value
        return table.set_column(table.column_names.index(column), column, pa.array(values))

    return change


def _file(name, make):
    def edit(run: Path) -> None:
        target = run / name
        target.unlink()
        make(target)

    return edit


def _fifo(target: Path) -> None:
    os.mkfifo(target)


def _zero(target: Path) -> None:
    target.symlink_to("/dev/zero")


def _scores_csv(change):
    def edit(run: Path) -> None:
        lines = (run / "scores.csv").read_text().splitlines()
        (run / "scores.csv").write_text("\n".join(change(lines)) + "\n")

    return edit


def _replace_field(index, value):
    def change(lines):
        fields = lines[1].split(",")
        fields[index] = value
        return [lines[0], ",".join(fields), *lines[2:]]

    return change


CLEAN_SCORES = "scores-d00-clean"
READ_BACK = {  # id: (how the finished run is broken, the command, the message expected)
    "scores-nan": (
        _table(CLEAN_SCORES, _first_value("score", float("nan"))),
        "report",
        r"'score' holds 1 values that are not finite",
    ),
    "scores-inf": (
        _table(CLEAN_SCORES, _first_value("score", float("inf"))),
        "report",
        r"'score' holds 1 values that are not finite",
    ),
    "scores-strings": (
        _table(CLEAN_SCORES, _column("score", lambda n: ["high"] * n)),
        "report",
        r"'score' holds object values, not numbers",
    ),
    "scores-missing-column": (_table(CLEAN_SCORES, lambda t: t.drop(["score"])), "report", r"no column 'score'"),
    "scores-empty": (
        _table(CLEAN_SCORES, lambda t: t.slice(0, 0)),
        "report",
        r"hold 0 clean test images, metrics.json counts",
    ),
    "scores-duplicated": (
        lambda run: __import__("shutil").copy(
            next((run / "tables" / CLEAN_SCORES).glob("*.parquet")), run / "tables" / CLEAN_SCORES / "zz-copy.parquet"
        ),
        "report",
        r"clean test images, metrics.json counts",
    ),
    "index-negative": (
        _table(CLEAN_SCORES, _first_value("index", -5)),
        "report",
        r"'index' holds negative values \(-5\)",
    ),
    "index-beyond": (
        _table("scores-d00-attack-00", _first_value("index", 10**6)),
        "report",
        r"scores of images that .*attack-00 does not hold",
    ),
    "confidence-above-one": (
        _table("attack-00", _first_value("target_confidence", 7.0)),
        "report",
        r"'target_confidence' holds values outside \[0, 1\]",
    ),
    "chunk-fifo": (
        lambda run: _fifo(run / "tables" / CLEAN_SCORES / "zz.parquet"),
        "report",
        r"zz.parquet: a table chunk must be a regular file",
    ),
    "chunk-dev-zero": (
        lambda run: _zero(run / "tables" / CLEAN_SCORES / "zz.parquet"),
        "report",
        r"zz.parquet: a table chunk must be a regular file",
    ),
    "chunk-garbage": (
        lambda run: (run / "tables" / CLEAN_SCORES / "zz.parquet").write_bytes(b"PAR1 not parquet"),
        "report",
        r"zz.parquet: unreadable table chunk",
    ),
    "metrics-auc-string": (_set_attack("auc", "high"), "report", r"'attacks.fgsm.auc': input should be a valid number"),
    "metrics-auc-above-one": (
        _set_attack("auc", 3.5),
        "report",
        r"'attacks.fgsm.auc': input should be less than or equal to 1",
    ),
    "metrics-count-negative": (
        _set_attack("n_attacked", -1),
        "report",
        r"'attacks.fgsm.n_attacked': input should be greater than or equal to 0",
    ),
    "metrics-count-bool": (
        _set_attack("n_clean", True),
        "report",
        r"'attacks.fgsm.n_clean': input should be a valid integer",
    ),
    "metrics-interval-long": (_set_attack("auc_ci", [0.1, 0.2, 0.3]), "report", r"'attacks.fgsm.auc_ci"),
    "metrics-nan": (
        lambda run: (run / "metrics.json").write_text(
            (run / "metrics.json").read_text().replace('"threshold": ', '"threshold": NaN, "was": ', 1)
        ),
        "report",
        r"metrics.json: not valid JSON \(NaN is not a JSON number\)",
    ),
    "metrics-attacks-list": (
        _metrics(lambda m: m.__setitem__("attacks", [1, 2])),
        "report",
        r"'attacks': input should be an object",
    ),
    "metrics-no-threshold": (_metrics(lambda m: m.pop("threshold")), "report", r"'threshold': field required"),
    "metrics-no-data": (_metrics(lambda m: m.pop("data")), "compare", r"'data': field required"),
    "detector-compute-bad": (
        lambda run: (run / "detector.json").write_text(
            json.dumps({**json.loads((run / "detector.json").read_text()), "compute": {"precision": "fp64"}})
        ),
        "detect",
        r"detector.json: compute block: 'precision'",
    ),
    "detector-compute-not-object": (
        lambda run: (run / "detector.json").write_text(
            json.dumps({**json.loads((run / "detector.json").read_text()), "compute": [1]})
        ),
        "detect",
        r"'compute': input should be an object",
    ),
    "csv-fifo": (_file("scores.csv", _fifo), "compare", r"scores.csv: must be a regular file"),
    "csv-dev-zero": (_file("scores.csv", _zero), "compare", r"scores.csv: must be a regular file"),
    "csv-huge-field": (
        _scores_csv(_replace_field(0, "x" * 200_000)),
        "compare",
        r"scores.csv: not a readable CSV file \(field larger than field limit",
    ),
    "csv-score-nan": (
        _scores_csv(_replace_field(5, "nan")),
        "compare",
        r"scores.csv, line 2: score 'nan' is not a finite number",
    ),
    "csv-score-text": (
        _scores_csv(_replace_field(5, "high")),
        "compare",
        r"scores.csv, line 2: score 'high' is not a finite number",
    ),
    "csv-label-text": (
        _scores_csv(_replace_field(2, "cat")),
        "compare",
        r"scores.csv, line 2: label 'cat' is not a whole number",
    ),
    "csv-duplicate-row": (
        _scores_csv(lambda lines: [*lines, lines[1]]),
        "compare",
        r"scores.csv: a sample appears twice",
    ),
    "csv-short-row": (
        _scores_csv(lambda lines: [*lines, "a,b"]),
        "compare",
        r"scores.csv, line \d+: 2 fields, expected 6",
    ),
    "csv-header": (
        _scores_csv(lambda lines: ["id,attack,label,pred,success,score", *lines[1:]]),
        "compare",
        r"scores.csv, line 1: the header is",
    ),
    "csv-not-utf8": (
        lambda run: (run / "scores.csv").write_bytes(b"sample_id,attack\n\xff\xfe"),
        "compare",
        r"scores.csv: not UTF-8 text",
    ),
    "attacks-json-broken": (
        lambda run: (run / "attacks.json").write_text('{"format": 1, "attacks": [{"label": 5}]}'),
        "export",
        r"attacks.json: 'attacks.0.label': input should be a valid string",
    ),
    "attacks-json-format": (
        lambda run: (run / "attacks.json").write_text('{"format": 9, "attacks": []}'),
        "export",
        r"attacks.json: format 9, but this tracekit reads format 1",
    ),
    "spec-not-mapping": (
        lambda run: (run / "spec.resolved.yaml").write_text("- 1\n- 2\n"),
        "report",
        r"spec.resolved.yaml: expected a mapping",
    ),
}


@pytest.mark.parametrize("case", sorted(READ_BACK))
def test_whatever_is_read_back_is_checked_first(case, finished, tmp_path):
    """Each reader (report, compare RUN_DIR..., detect, export) says what is broken in one line,
    and `report` rewrites nothing of a broken run directory."""
    import shutil

    breaks, command, said = READ_BACK[case]
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    breaks(run)
    figures = {p.name: p.read_bytes() for p in run.glob("*.png")}
    if command == "detect":
        args: tuple = ("detect", "--run", run, _png(tmp_path / "digit.png", (32, 32)))
    elif command == "compare":
        args = ("compare", finished, run, "--out", tmp_path / "side")
    elif command == "export":
        args = ("export", run, "--out", tmp_path / "exported")
    else:
        args = ("report", run)
    assert_one_clear_error(invoke(*args), said)
    assert {p.name: p.read_bytes() for p in run.glob("*.png")} == figures  # nothing redrawn
    assert not (tmp_path / "side").exists()


def test_a_comparison_of_runs_read_back_is_checked(finished, tmp_path):
    side = tmp_path / "side"
    assert invoke("compare", finished, finished, "--out", side).exit_code == 0
    document = json.loads((side / "comparison.json").read_text())
    key = next(iter(document["detectors"]))
    document["detectors"][key]["fgsm"]["auc"] = float("inf")
    (side / "comparison.json").write_text(json.dumps(document))
    assert_one_clear_error(invoke("report", side), r"comparison.json: not valid JSON \(Infinity is not a JSON number\)")
    document["detectors"][key]["fgsm"]["auc"] = 0.5
    (side / "comparison.json").write_text(json.dumps(document))
    lines = (side / "scores.csv").read_text().splitlines()
    (side / "scores.csv").write_text("\n".join([*lines, "stranger," + lines[1].split(",", 1)[1]]) + "\n")
    assert_one_clear_error(invoke("report", side), r"rows of detector 'stranger', which comparison.json does not list")


def test_a_malformed_cache_entry_is_listed_not_fatal(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACEKIT_CACHE", str(tmp_path))
    for name, meta in [("a" * 32, "[1, 2]"), ("b" * 32, "{"), ("c" * 32, '{"attack": 5}')]:  # entries: named by key
        (tmp_path / "attacks" / name).mkdir(parents=True)
        (tmp_path / "attacks" / name / "meta.json").write_text(meta)
    result = invoke("cache", "ls")
    assert result.exit_code == 0 and result.output.count("unreadable") == 3, result.output


def test_a_failed_rerun_keeps_the_earlier_results_byte_for_byte(finished, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    bad = spec_file(tmp_path, {**BASE, "data": {"name": "npz", "path": str(tmp_path / "none.npz")}})
    assert_one_clear_error(invoke("run", bad, "--out", run), r"none.npz")
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before


# Components that return garbage, registered at run time like a notebook would.


class _NaNModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = tiny_model().module

    def forward(self, x):
        return self.inner(x) * float("nan")


class _BadAttack:
    def __init__(self, kind: str) -> None:
        self.kind, self.calls = kind, 0

    def generate(self, model, images, labels):
        self.calls += 1
        if self.kind == "late-nan" and self.calls < 3:
            return images.clone()
        if self.kind in ("nan-pixel", "late-nan"):
            out = images.clone()
            out[-1, 0, 0, 0] = float("nan")
            return out
        if self.kind == "shape":
            return images[:, :, :8]
        return images.numpy()


class _BadSaliency:
    def maps(self, model, images, target=None):
        return torch.full_like(images, float("nan"))


class _BadScore:
    def score(self, maps):
        return maps.flatten(1).mean(1)[:-1]


class _Plugin:
    @hookimpl
    def tracekit_register_models(self, register):
        def nan_model():
            model = tiny_model()
            model.module = _NaNModel().eval()
            return model

        register("nan-model", nan_model)
        register("tiny-ok", tiny_model)

    @hookimpl
    def tracekit_register_attacks(self, register):
        register("bad-attack", lambda kind="nan-pixel": _BadAttack(kind))

    @hookimpl
    def tracekit_register_saliency(self, register):
        register("nan-maps", _BadSaliency)

    @hookimpl
    def tracekit_register_scores(self, register):
        register("short-score", _BadScore)


@pytest.fixture
def garbage():
    plugins.register_plugin(_Plugin(), "hostile-components")
    yield
    plugins.unregister_plugin("hostile-components")


TINY = {**BASE, "model": {"name": "tiny-ok"}, "data": {"name": "random-images", "n": 40}}
COMPONENTS = {  # id: (spec changes, the message expected)
    "nan-logits": (
        {"model": {"name": "nan-model"}},
        r"model 'nan-model' \(from <runtime>\) returned NaN or infinite values logits",
    ),
    "nan-adversarial": (
        {"attacks": [{"name": "bad-attack"}]},
        r"attack 'bad-attack' \(from <runtime>\) returned NaN or infinite values adversarials",
    ),
    "shape-adversarial": (
        {"attacks": [{"name": "bad-attack", "kind": "shape"}]},
        r"attack 'bad-attack' .* adversarials of shape (\d+)x1x8x16, expected \1x1x16x16",
    ),
    "array-adversarial": (
        {"attacks": [{"name": "bad-attack", "kind": "array"}]},
        r"attack 'bad-attack' .* returned a ndarray adversarials, not a torch tensor",
    ),
    "nan-maps": (
        {"detector": {"name": "feature-response", "saliency": {"name": "nan-maps"}}},
        r"saliency 'nan-maps' \(from <runtime>\) returned NaN or infinite values maps",
    ),
    "short-scores": (
        {"detector": {"name": "feature-response", "score": {"name": "short-score"}}},
        r"score 'short-score' .* scores of shape 15, expected 16",
    ),
}


@pytest.mark.parametrize("case", sorted(COMPONENTS))
def test_a_component_returning_garbage_stops_the_run_naming_it(case, garbage, testing_plugin, tmp_path):
    changes, said = COMPONENTS[case]
    result = invoke("run", spec_file(tmp_path, {**TINY, **changes}), "--out", tmp_path / "run")
    assert_one_clear_error(result, said)


def test_finished_adversarials_stay_cached_when_a_later_batch_fails(garbage, testing_plugin, tmp_path, monkeypatch):
    monkeypatch.setenv("TRACEKIT_CACHE", str(tmp_path / "cache"))
    spec = spec_file(tmp_path, {**TINY, "attacks": [{"name": "bad-attack", "kind": "late-nan"}], "batch_size": 4})
    assert_one_clear_error(invoke("run", spec, "--out", tmp_path / "run"), r"returned NaN")
    entries = list((tmp_path / "cache" / "attacks").rglob("*.pt"))
    assert entries  # the batches before the failing one were kept


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for module in [m for m in sys.modules if m.startswith(("hostile_", "tracekit_gradcam"))]:
        del sys.modules[module]
    monkeypatch.undo()
    plugins.reload()


def test_a_plugin_that_exits_at_import_cannot_take_the_commands_down(site):
    install_fake_distribution(site, "hostile-exit", "import sys\nsys.exit(3)\n")
    plugins.reload()
    listed = invoke("plugins")
    assert listed.exit_code == 0 and "SystemExit" in listed.output, listed.output
    validated = invoke("validate", QUICKSTART)
    assert validated.exit_code == 0, validated.output
    assert "1 plugin(s) failed to load: fake (hostile-exit)" in " ".join(validated.output.split())


def test_a_hook_that_exits_is_recorded(site):
    install_fake_distribution(
        site,
        "hostile-hook",
        """
        import sys
        import tracekit

        @tracekit.hookimpl
        def tracekit_register_scores(register):
            sys.exit("bye")
    """,
    )
    plugins.reload()
    broken = [p for p in plugins.plugins() if p.distribution == "hostile-hook"]
    assert broken and "SystemExit: bye" in broken[0].error
    assert invoke("validate", QUICKSTART).exit_code == 0


def test_an_unknown_component_of_a_failed_plugin_says_so(site, tmp_path):
    install_fake_distribution(site, "tracekit-gradcam", "raise ImportError('needs libfoo')\n")
    plugins.reload()
    spec = spec_file(tmp_path, {**BASE, "detector": {"name": "feature-response", "saliency": {"name": "grad-cam"}}})
    assert_one_clear_error(
        invoke("validate", spec),
        r"'tracekit-gradcam', which is installed but failed to load \(ImportError: needs libfoo\)",
    )


def test_a_full_disk_is_one_clear_line_and_keeps_finished_work(tmp_path, monkeypatch):
    import errno

    from tracekit.engine import tables

    real, writes = tables.Table.write, []

    def fills_up(self, chunk, columns):
        if len(writes) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.dir / f"{chunk}.parquet"))
        writes.append(chunk)
        real(self, chunk, columns)

    monkeypatch.setattr(tables.Table, "write", fills_up)
    result = invoke("run", spec_file(tmp_path, BASE), "--out", tmp_path / "run")
    assert_one_clear_error(result, r"no space left on the device writing .*\.parquet; free some space")
    assert len(list((tmp_path / ".run.partial" / "tables").rglob("*.parquet"))) == 3  # kept for the rerun
