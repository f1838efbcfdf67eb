"""A run's figures and report.html: written, not blank, self-contained, escaped, and offline in Chromium."""

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image

from tracekit import plugins
from tracekit.engine.run import run
from tracekit.hookspecs import Register
from tracekit.plugins import hookimpl
from tracekit.report.figures import example_figure, feature_maps, write_figures
from tracekit.scores import local_entropy_map, to_gray_u8
from tracekit.testing import testing_plugin, tiny_model

EVIL_LABEL = '<b>&"x'
EVIL_CLASSES = ["<i>zero</i>", "a&b", '"quoted"']


def _evil_model():
    """tiny-cnn whose class names need escaping (tests only)."""
    model = tiny_model()
    model.class_names = list(EVIL_CLASSES)
    return model


class _EvilPlugin:
    @hookimpl
    def tracekit_register_models(self, register: Register) -> None:
        register("evil-names-cnn", _evil_model)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    plugins.register_plugin(testing_plugin, "tracekit-testing")
    plugins.register_plugin(_EvilPlugin(), "tracekit-report-test")
    try:
        spec = {
            "name": "report-test",
            "seed": 3,
            "device": "cpu",
            "model": {"name": "evil-names-cnn"},
            "data": {"name": "random-images", "n": 32},
            "attacks": [{"name": "sign-noise", "eps": 0.3, "label": EVIL_LABEL}, {"name": "sign-noise", "eps": 0.1}],
            "detector": {"name": "feature-response", "score": {"name": "local-entropy"}},
            "calibration": {"fit_fraction": 0.5, "target_fpr": 0.1},
            "batch_size": 8,
        }
        yield run(spec, out=tmp_path_factory.mktemp("run"))
    finally:
        plugins.unregister_plugin("tracekit-report-test")
        plugins.unregister_plugin("tracekit-testing")


def png_stats(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        array = np.asarray(image.convert("RGB"))
    packed = (array.astype(np.uint32) << np.array([16, 8, 0], dtype=np.uint32)).sum(2)
    return array.shape, array.std(), len(np.unique(packed))


FIGURES = ["roc.png", "score_hist.png", "examples_b_x.png", "examples_sign-noise.png"]


@pytest.mark.parametrize("name", FIGURES)
def test_figures_exist_and_are_not_blank(result, name):
    shape, std, colors = png_stats(result.out_dir / name)
    assert shape[0] > 300 and shape[1] > 300
    assert std > 20 and colors > 50  # drawn content, not a blank canvas


@pytest.fixture(scope="module")
def figures(result, tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    return out, write_figures(out, result, examples=3)


def test_example_panels_show_test_images_successful_first_with_run_scores(result, figures):
    tmp_path, figures = figures
    art = result.artifacts
    test_ids = {art.samples.ids[i] for i in art.test_idx.tolist()}
    scores = {(r["sample_id"], r["attack"]): float(r["score"]) for r in result.scores}
    assert [e["attack"] for e in figures["examples"]] == [EVIL_LABEL, "sign-noise"]
    for entry, attack in zip(figures["examples"], art.attacks):
        examples = entry["examples"]
        assert len(examples) == 3 and (tmp_path / entry["file"]).is_file()
        assert all(e.sample_id in test_ids for e in examples)
        flags = [e.success for e in examples]
        n_success = int(attack.success[torch.isin(attack.indices, art.test_idx)].sum())
        assert flags == sorted(flags, reverse=True) and sum(flags) == min(3, n_success)
        for e in examples:
            assert e.clean_score == scores[(e.sample_id, "clean")]
            assert e.adv_score == scores[(e.sample_id, attack.key)]
            assert e.label in EVIL_CLASSES and e.adv_class in EVIL_CLASSES


def test_feature_maps_are_the_default_gray_conversion_and_local_entropy(result):
    art = result.artifacts
    images = art.samples.images[:5]
    gray, entropy = feature_maps(art.detector, art.model.module, images, art.device)
    expected_gray = to_gray_u8(art.detector.maps(art.model.module, images))
    assert torch.equal(gray, expected_gray)
    assert torch.equal(entropy, local_entropy_map(expected_gray))


def test_detector_without_maps_gets_no_map_panels(result, figures, tmp_path):
    class ScoreOnly:
        needs_adversarial_fit = False

        def score(self, model, images):
            return images.mean((1, 2, 3))

    art = result.artifacts
    assert feature_maps(ScoreOnly(), art.model.module, art.samples.images[:2], art.device) is None
    figures_dir, figures = figures
    entry = figures["examples"][0]
    attack = art.attacks[0]
    chosen = torch.tensor([art.samples.ids.index(e.sample_id) for e in entry["examples"]])
    positions = [int(torch.nonzero(attack.indices == i)) for i in chosen.tolist()]
    example_figure(tmp_path / "without.png", "no maps", art.samples.images[chosen], attack.adversarial[positions],
                   entry["examples"], art.threshold, None)  # fmt: skip
    (w_without, _), (w_with, _) = (Image.open(path).size for path in (tmp_path / "without.png", figures_dir / entry["file"]))
    assert w_without < 0.6 * w_with  # 3 columns instead of 7
    assert png_stats(tmp_path / "without.png")[1] > 20


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tags, self.rows, self._row = [], [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag == "tr":
            self._row = []

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._row is not None and data.strip():
            self._row.append(data.strip())


@pytest.fixture(scope="module")
def page(result):
    text = (result.out_dir / "report.html").read_text(encoding="utf-8")
    parser = _Page()
    parser.feed(text)
    return text, parser


def test_report_is_self_contained(result, page):
    text, parser = page
    assert not re.search(r"https?://|src=\"/|href=|url\(|@import", text)
    assert {"script", "link", "iframe", "object"}.isdisjoint(parser.tags)
    inlined = {"roc.png", "score_hist.png", "examples_b_x.png", "examples_sign-noise.png"}
    assert len(parser.images) == len(inlined)
    prefix = "data:image/png;base64,"
    assert all(src.startswith(prefix) for src in parser.images)
    decoded = {base64.b64decode(src[len(prefix) :]) for src in parser.images}
    assert decoded == {(result.out_dir / name).read_bytes() for name in inlined}


def test_report_escapes_every_user_string(page):
    text, parser = page
    for raw in [EVIL_LABEL, *EVIL_CLASSES]:
        assert raw not in text
    assert "&lt;b&gt;&amp;&#34;x" in text
    assert "b" not in parser.tags and "i" not in parser.tags  # no markup was injected
    cells = [cell for row in parser.rows for cell in row]
    assert EVIL_LABEL in cells  # the label reads back exactly as written
    assert any(name in cell for cell in cells for name in EVIL_CLASSES)  # so do the class names


def test_report_metrics_table_matches_metrics_json(result, page):
    _, parser = page
    metrics = json.loads((result.out_dir / "metrics.json").read_text())
    for attack, m in metrics["attacks"].items():
        row = next(r for r in parser.rows if r[0] == attack)
        assert row[1:3] == [str(m["n_clean"]), str(m["n_attacked"])]
        assert f"{m['success_rate']:.1%}" in row
        assert f"{m['auc']:.3f}" in row and f"{m['tpr_at_fpr']['0.05']:.3f}" in row
        assert f"{m['threshold']:.4g}" in row
    assert "report-test" in page[0] and "tracekit" in page[0]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _render(tmp_path, html_path, name):
    """Screenshot `html_path` in headless Chromium; return (screenshot, URLs the page requested)."""
    shot, netlog = tmp_path / f"{name}.png", tmp_path / f"{name}.netlog.json"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
        f"--user-data-dir={tmp_path / f'{name}-profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--log-net-log={netlog}", f"--screenshot={shot}", "--window-size=1200,2000", html_path.as_uri(),
    ]  # fmt: skip
    subprocess.run(command, capture_output=True, timeout=120, check=False)
    assert shot.is_file(), f"chromium wrote no screenshot of {html_path}"
    log = json.loads(netlog.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    # Requests the page made carry the file:// page as their network isolation key; Chromium's
    # own background requests (time sync, accounts) carry other keys.
    requested = [
        e["params"]["url"]
        for e in log["events"]
        if e["type"] == start_job and "url" in e.get("params", {})
        and "file://" in e["params"].get("network_isolation_key", "")
    ]  # fmt: skip
    return shot, requested


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")
def test_report_renders_offline_in_headless_chromium(result, tmp_path):
    control = tmp_path / "control.html"
    control.write_text('<html><body><img src="http://tracekit-control.invalid/x.png"></body></html>')
    _, control_requests = _render(tmp_path, control, "control")
    assert control_requests == ["http://tracekit-control.invalid/x.png"]  # the net log does see page requests

    shot, requests = _render(tmp_path, result.out_dir / "report.html", "report")
    assert requests == []
    shape, std, colors = png_stats(shot)
    assert shape[:2] == (2000, 1200)
    assert std > 30 and colors > 200  # text, tables and figures were drawn
    with Image.open(shot) as image:
        lower = np.asarray(image.convert("RGB"))[1000:]
    assert lower.std() > 30  # the figures below the fold rendered, not just the header
