"""Helpers shared by the report tests: PNG statistics, an HTML table parser, headless Chromium."""

import json
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DATA_PNG = "data:image/png;base64,"


def _png_stats(path):
    """(shape, standard deviation, number of distinct colors) of a PNG file."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        array = np.asarray(image.convert("RGB"))
    packed = (array.astype(np.uint32) << np.array([16, 8, 0], dtype=np.uint32)).sum(2)
    return array.shape, array.std(), len(np.unique(packed))


class Page(HTMLParser):
    """Tags, image sources and tables of a page; a table is its header and body cell texts, per row
    (a cell's text chunks flattened: a value and its interval below it are two entries)."""

    def __init__(self, text):
        super().__init__()
        self.text, self.images, self.tags, self.tables = text, [], [], []
        self.classes = []  # (tag, class, text of the element's first chunk) of every element with a class
        self._row, self._section, self._pending = None, None, []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if "class" in attrs:
            self._pending.append((tag, attrs["class"]))
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag == "table":
            self.tables.append({"head": [], "rows": []})
        elif tag in ("thead", "tbody"):
            self._section = "head" if tag == "thead" else "rows"
        elif tag == "tr":
            self._row = []

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None:
            target = self.tables[-1]
            if self._section == "head":
                target["head"] += self._row
            else:
                target["rows"].append(self._row)
            self._row = None

    def handle_data(self, data):
        if data.strip():
            self.classes += [(tag, cls, data.strip()) for tag, cls in self._pending]
            self._pending = []
            if self._row is not None:
                self._row.append(data.strip())

    def table_with(self, *headers):
        """The one table whose header cells include all of `headers`."""
        found = [t for t in self.tables if all(h in t["head"] for h in headers)]
        assert len(found) == 1, f"{len(found)} tables with headers {headers}"
        return found[0]

    def rows_by_label(self, table):
        return {row[0]: row[1:] for row in table["rows"]}


@pytest.fixture(scope="session")
def png_stats():
    return _png_stats


@pytest.fixture(scope="session")
def parse_page():
    return Page


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


@pytest.fixture
def chromium(tmp_path):
    """`render(html_path) -> (screenshot, requested URLs)`, after checking on a control page that
    the net log does see the page's own requests. Skipped where Chromium is not installed."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    control = tmp_path / "control.html"
    control.write_text('<html><body><img src="http://tracekit-control.invalid/x.png"></body></html>')
    _, control_requests = _render(tmp_path, control, "control")
    assert control_requests == ["http://tracekit-control.invalid/x.png"]
    return lambda html_path: _render(tmp_path, html_path, html_path.parent.name + "-page")
