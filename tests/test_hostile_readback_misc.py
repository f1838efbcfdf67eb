"""Hostile inputs, second round, the remaining classes (issue 25): samples too small to conclude
from, image folders where a whole chunk is unreadable, and terminal escape codes in outside text
(file names, unreadable images' reasons, plugin errors, paths).

Each case gives the CLI (or the engine) what a user or a third party could, and checks what comes
back: a small sample is never printed as a certainty (terminal and report, new runs and runs
written before the flag); an all-unreadable chunk is skipped, recorded and counted as done while
the run goes on; no control character from outside reaches the terminal raw.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tracekit import plugins
from tracekit.printable import printable
from tracekit.protocols import LoadedModel, Unreadable
from tracekit.testing import install_fake_distribution, tiny_model


def _hostile_inputs():
    """tests/test_hostile_inputs.py, for its helpers (tests are not a package: loaded by path)."""
    spec = importlib.util.spec_from_file_location("_hostile_inputs", Path(__file__).with_name("test_hostile_inputs.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_h = _hostile_inputs()
invoke, assert_one_clear_error, spec_file, QUICKSTART, site = (
    _h.invoke, _h.assert_one_clear_error, _h.spec_file, _h.QUICKSTART, _h.site,
)  # fmt: skip

RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")  # what must never reach the terminal (\t, \n may)
ESC_NAME = "f01\x1b[31mred\x1b]0;pwned\x07.png"  # colours the terminal red and retitles its window, if printed raw
CERTAIN = ("separates them", "no better than chance", "below chance", "would catch")  # a verdict that concludes


def assert_no_raw_controls(text: str) -> None:
    found = RAW.search(text)
    assert found is None, (
        f"raw {found.group()!r} at {found.start()}: {text[max(0, found.start() - 80) : found.end() + 80]!r}"
    )


# Terminal escape codes in outside text: the function, and every way such text reaches the terminal.

PRINTABLE = {  # id: (outside text, how it must be shown)
    "csi-colour": ("a\x1b[31mred", "a\\x1b[31mred"),
    "osc-title-bel": ("\x1b]0;pwned\x07x", "\\x1b]0;pwned\\x07x"),
    "c1-csi": ("a\x9b2Jb", "a\\x9b2Jb"),
    "nul-del": ("a\x00b\x7fc", "a\\x00b\\x7fc"),
    "newline-cr-tab": ("one\ntwo\rthree\tfour", "one\\ntwo\\rthree\\tfour"),
    "bidi-override": ("invoice\u202egnp.exe", "invoice\\u202egnp.exe"),
    "undecodable-byte": (b"evil\x9b.png".decode("utf-8", "surrogateescape"), "evil\\udc9b.png"),
    "harmless": ("Dog/ünïcødé 日本 😀 \\x1b [b]", "Dog/ünïcødé 日本 😀 \\x1b [b]"),
}


@pytest.mark.parametrize("case", sorted(PRINTABLE))
def test_outside_text_is_printed_with_its_control_characters_visible(case):
    raw, shown = PRINTABLE[case]
    assert printable(raw) == shown
    assert_no_raw_controls(printable(raw))
    assert printable("line one\x1b\nline two", newlines=True) == "line one\\x1b\nline two"  # deliberate lines kept


def test_a_missing_spec_named_with_escape_codes_is_one_clear_line_without_them(tmp_path):
    result = invoke("validate", tmp_path / f"spec-{ESC_NAME}.yaml")
    assert_one_clear_error(result, r"does not exist")
    assert_no_raw_controls(result.output)
    assert "\\x1b[31mred\\x1b]0;pwned\\x07" in result.output  # shown, not executed


def test_a_valid_spec_named_with_escape_codes_and_markup_is_named_as_it_is(tmp_path):
    spec = tmp_path / f"[bold]{ESC_NAME}.yaml"
    shutil.copy(QUICKSTART, spec)
    result = invoke("validate", spec)
    assert result.exit_code == 0, result.output
    assert_no_raw_controls(result.output)
    assert "[bold]f01\\x1b[31mred\\x1b]0;pwned\\x07.png.yaml is a valid spec" in result.output  # markup shown too


def test_a_plugin_whose_load_error_carries_escape_codes_is_listed_without_them(site):
    install_fake_distribution(site, "hostile-ansi", "raise ImportError('needs \\x1b[2J\\x1b]0;pwned\\x07 libfoo')\n")
    plugins.reload()
    listed = invoke("plugins")
    assert listed.exit_code == 0, listed.output
    assert "plugin failed" in listed.output and "needs \\x1b[2J\\x1b]0;pwned\\x07 libfoo" in listed.output
    assert_no_raw_controls(listed.output)


# Small samples: metrics.json entries read back, hostile or from older runs.


@pytest.mark.parametrize(
    "entry",
    [
        {"auc": 1.0, "auc_ci": [1.0, 1.0], "n_clean": 20, "n_attacked": 3},  # the issue's `limit: 3`, before the flag
        {"auc": 1.0, "auc_ci": [1.0, 1.0], "n_clean": 20, "n_attacked": True},  # a flag where a count belongs
        {"auc": 0.2, "auc_ci": [0.1, 0.3], "n_clean": "200", "n_attacked": 300},  # a count as text
        {"auc": 0.97, "n_clean": -5, "n_attacked": 300, "small_sample": "no"},  # a negative count, a text flag
        {"auc": 0.97, "auc_ci": [0.95, 0.99], "n_attacked": 300},  # no clean count at all
    ],
    ids=["before-the-flag", "bool-count", "text-count", "negative-count-text-flag", "missing-count"],
)
def test_a_metrics_entry_without_trustworthy_counts_is_never_a_certainty(entry):
    from tracekit.report import verdicts

    found = verdicts.verdict("fgsm", entry, 0.05)
    assert found.level == "few" and found.text.startswith("too few images to conclude: AUC ")
    assert not any(claim in found.text for claim in CERTAIN)
    assert verdicts.overall([found]) == "Too few images to conclude anything on fgsm."


# An image folder where a whole chunk is unreadable.


class _Holes:
    """`n` random-access images of the tiny CNN's shape; those at `bad` cannot be read."""

    def __init__(self, n: int = 12, bad: tuple[int, ...] = (4, 5, 6, 7)) -> None:
        self.n, self.bad = n, set(bad)
        self.info: dict = {}

    def __len__(self) -> int:
        return self.n

    def item(self, index: int, model: LoadedModel):
        if index in self.bad:
            return Unreadable(f"img-{index}", "UnidentifiedImageError: not an image")
        gen = torch.Generator().manual_seed(index)
        return f"img-{index}", torch.rand(model.input_size, generator=gen), index % model.num_classes

    def samples(self, model: LoadedModel):
        for index in range(self.n):
            item = self.item(index, model)
            if not isinstance(item, Unreadable):
                yield item


@pytest.mark.parametrize("workers", [0, 2])
def test_a_chunk_with_no_readable_image_is_an_empty_batch_of_the_models_shape(workers):
    from tracekit.engine.reading import Reader, chunks

    model = tiny_model()
    reader = Reader(_Holes(), model, num_workers=workers)
    with pytest.warns(UserWarning, match="skipping unreadable image img-4"):
        batches = list(reader.read(chunks(np.arange(12), 4)))
    assert [b.chunk.name for b in batches] == ["000000", "000001", "000002"]  # one batch per chunk, in order
    empty = batches[1]
    assert empty.empty and not batches[0].empty and not batches[2].empty
    assert empty.images.shape == (0, *model.input_size) and empty.images.dtype == torch.float32
    assert empty.labels.shape == (0,) and empty.labels.dtype == torch.long and empty.index.shape == (0,)
    assert empty.skipped == {f"img-{i}": "UnidentifiedImageError: not an image" for i in range(4, 8)}


def _digit_folder(root: Path, per_class: int = 12, bad: tuple[int, ...] = (0, 1, 4, 5)) -> list[str]:
    """Real handwritten digits 0 and 1 as 32x32 PNGs in class folders; files number `bad` of each
    class are corrupt. Files come round-robin over the classes, so with `batch_size: 4` files 0-1
    are the first chunk and 4-5 the third: both wholly unreadable. One corrupt file's name carries
    escape codes. Returns the corrupt files' sample ids."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    corrupt = []
    for digit in (0, 1):
        folder = root / str(digit)
        folder.mkdir(parents=True)
        for k, pixels in enumerate(digits.images[digits.target == digit][:per_class]):
            name = ESC_NAME if (digit, k) == (0, 1) else f"f{k:02d}.png"
            if k in bad:
                (folder / name).write_bytes(b"\x89PNG but not really" * 4)
                corrupt.append(f"{digit}/{name}")
            else:
                Image.fromarray((pixels / 16 * 255).astype(np.uint8)).resize((32, 32)).save(folder / name)
    return corrupt


@pytest.fixture(scope="module")
def holey_runs(tmp_path_factory):
    """The digit folder run with 0 and with 2 decoding workers: `{workers: (run dir, CLI result)}`."""
    root = tmp_path_factory.mktemp("holes")
    corrupt = _digit_folder(root / "images")
    spec = {
        "name": "holes", "model": {"name": "digits-cnn"}, "device": "cpu", "batch_size": 4,
        "data": {"name": "imagefolder", "root": str(root / "images")},
        "attacks": [{"name": "fgsm", "eps": 0.1}], "evaluation": {"bootstrap": 50},
    }  # fmt: skip
    runs = {}
    for workers in (0, 2):
        path = spec_file(root, {**spec, "num_workers": workers})
        out = root / f"run-{workers}"
        runs[workers] = (out, invoke("run", path, "--out", out))
    return corrupt, runs


@pytest.mark.slow
def test_an_all_unreadable_chunk_is_skipped_recorded_and_the_run_goes_on(holey_runs):
    import yaml

    from tracekit.engine.tables import Table
    from tracekit.layout import TableNames

    corrupt, runs = holey_runs
    out, result = runs[0]
    assert result.exit_code == 0, result.output
    skipped = yaml.safe_load((out / "spec.resolved.yaml").read_text())["provenance"]["data"]["skipped"]
    assert sorted(skipped) == sorted(corrupt) and all("UnidentifiedImageError" in r for r in skipped.values())
    assert sorted(Table(out, TableNames.SKIPPED).read()["sample_id"]) == sorted(corrupt)
    clean = Table(out, TableNames.CLEAN)
    assert {"000000", "000002"} <= clean.done()  # the empty chunks count as done: a resumed run passes over them
    assert len(clean.read()["index"]) == 16 and not set(corrupt) & set(clean.read()["sample_id"])
    rows = (out / "scores.csv").read_text().splitlines()[1:]
    ids = {row.split(",")[0] for row in rows}
    assert rows and not ids & set(corrupt)
    data = json.loads((out / "metrics.json").read_text())["data"]
    assert data["n_images"] == 16 and data["n_fit"] + data["n_test"] == data["n_correct"]


@pytest.mark.slow
def test_the_empty_chunks_give_the_same_results_whatever_the_worker_count(holey_runs):
    _, runs = holey_runs
    (out0, result0), (out2, result2) = runs[0], runs[2]
    assert result0.exit_code == result2.exit_code == 0, result2.output
    assert (out0 / "scores.csv").read_bytes() == (out2 / "scores.csv").read_bytes()


@pytest.mark.slow
def test_an_unreadable_image_named_with_escape_codes_is_warned_about_without_them(holey_runs):
    _, runs = holey_runs
    for _, result in runs.values():
        warned = [line for line in result.output.splitlines() if "skipping unreadable image 0/f01" in line]
        assert len(warned) == 1, result.output
        assert "0/f01\\x1b[31mred\\x1b]0;pwned\\x07.png" in warned[0]
        assert_no_raw_controls(result.output)


# Small samples, end to end: a run with a tiny `limit`, then its run directory read back.


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The quickstart on 30 digits: 14 clean test images, and a dozen adversarials at most per attack."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    result = invoke("run", QUICKSTART, "--out", out, "--set", "data.limit=30", "--set", "threads=1")
    assert result.exit_code == 0, result.output
    return out, result.output


def _verdict_section(output: str) -> str:
    """The terminal's verdict lines, as one line of single spaces."""
    section = output[output.index("\nverdict") : output.index("\nrun directory")]
    return " ".join(section.split())


@pytest.mark.slow
def test_a_tiny_limit_says_too_few_and_never_prints_a_certainty(tiny_run):
    out, output = tiny_run
    metrics = json.loads((out / "metrics.json").read_text())["attacks"]
    assert set(metrics) == {"fgsm", "gradient"}
    for name, m in metrics.items():
        assert m["small_sample"] is True and m["min_per_class"] == 20 and m["n_clean"] < 20
        assert {"n_clean", "n_attacked", "auc", "auc_ci", "tpr_at_fpr"} <= set(m)  # the keys other tools read
    verdicts = _verdict_section(output)
    for name in ("fgsm", "gradient"):
        said = re.search(
            rf"{name} too few images to conclude: AUC [\d.]+ \[[\d.]+, [\d.]+\], only .*?\(fewer than 20\)", verdicts
        )
        assert said, verdicts
    assert "14 clean test images (fewer than 20)" in verdicts
    assert not any(claim in verdicts for claim in CERTAIN), verdicts
    assert "too few to conclude" in " ".join(output.split())  # the summary table's caption explains its marks
    assert re.search(r"\d\.\d{3}\*", output)  # the AUCs and TPRs are marked


@pytest.mark.slow
def test_the_report_of_a_tiny_run_marks_its_numbers_and_verdicts(tiny_run):
    out, _ = tiny_run
    page = (out / "report.html").read_text()
    assert page.count('<li class="v-few">') == 2 and page.count('class="lvl-few">too few images to conclude') == 2
    assert 'class="few-note"' in page and page.count('<td class="few"') >= 8  # AUC and 3 TPRs of each attack
    assert "Too few images to conclude anything on fgsm, gradient." in page
    assert not any(claim in page for claim in ("separates them", "no better than chance:", "borne out"))


@pytest.mark.slow
def test_an_older_run_without_the_flag_is_flagged_from_its_counts(tiny_run, tmp_path):
    out, _ = tiny_run
    old = tmp_path / "old"
    shutil.copytree(out, old)
    document = json.loads((old / "metrics.json").read_text())
    for m in document["attacks"].values():
        del m["small_sample"], m["min_per_class"]
    (old / "metrics.json").write_text(json.dumps(document))
    (old / "report.html").unlink()
    result = invoke("report", old)
    assert result.exit_code == 0, result.output
    page = (old / "report.html").read_text()
    assert page.count('<li class="v-few">') == 2 and 'class="few-note"' in page


@pytest.mark.slow
def test_finished_runs_compared_mark_the_small_samples(tiny_run, tmp_path):
    out, _ = tiny_run
    other = tmp_path / "other"
    shutil.copytree(out, other)
    result = invoke("compare", out, other, "--out", tmp_path / "compared")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert re.search(r"\d\.\d{3}\*", result.output) and "too few to conclude" in text
    page = (tmp_path / "compared" / "report.html").read_text()
    assert 'class="few-note"' in page and '<td class="few"' in page and "lvl-few" in page


@pytest.mark.slow
def test_detect_on_files_named_with_escape_codes_prints_none_of_them(tiny_run, tmp_path):
    out, _ = tiny_run
    unreadable = tmp_path / ESC_NAME
    unreadable.write_bytes(b"not an image")
    undecodable = tmp_path / b"evil\x9b[2J.png".decode("utf-8", "surrogateescape")  # a byte that is not UTF-8
    undecodable.write_bytes(b"not an image either")
    result = invoke("detect", "--run", out, unreadable, undecodable)
    assert result.exit_code == 2, result.output  # unreadable inputs: exit 2 and one line each
    assert_no_raw_controls(result.output)
    assert "\\x1b[31mred\\x1b]0;pwned\\x07.png" in result.output and "evil\\udc9b[2J.png" in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, result.output
