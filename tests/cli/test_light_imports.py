"""The light commands (`--help`, `validate`, `plugins`, `cache ls/clear`) never import torch or the
other heavy libraries: each runs in a fresh interpreter, which then reports what it imported.

`report RUN_DIR` is not among them: it rebuilds the run's model and detector to draw the example
maps, so it needs torch; its `--help` is light. When a case fails, the message names the module
and the chain of tracekit imports that first pulled it in; `python -X importtime -c "import
tracekit.cli"` shows the whole tree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "scipy", "sklearn", "art", "matplotlib", "pandas", "pyarrow", "ray")
EXAMPLES = Path(__file__).parents[2] / "examples"

# Runs the CLI's `main` with the given arguments; writes {"exit": code, "imported": {module: chain}}
# to $LIGHT_IMPORTS_OUT, where chain is the tracekit import chain that first imported the module.
PROBE = r"""
import json, os, sys, traceback

HEAVY = set(sys.argv[1].split(","))
first = {}


def tracekit_frames():
    for frame in traceback.extract_stack()[:-2]:
        path = frame.filename.replace(os.sep, "/")
        if "/tracekit/" in path:
            yield f"tracekit/{path.rpartition('/tracekit/')[2]}:{frame.lineno}"


class Watch:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in HEAVY and top not in first:
            first[top] = " -> ".join(tracekit_frames()) or "(not from tracekit)"
        return None


sys.meta_path.insert(0, Watch())
sys.argv = ["tracekit", *sys.argv[2:]]
from tracekit.cli import main

code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code
imported = {m: first.get(m, "?") for m in sorted(HEAVY) if m in sys.modules}
with open(os.environ["LIGHT_IMPORTS_OUT"], "w") as fh:
    json.dump({"exit": code, "imported": imported}, fh)
"""


def run_light(args: list[str], tmp_path: Path, cache: Path | None = None) -> dict:
    """Run `tracekit ARGS` in a fresh interpreter; its exit code and the heavy modules it imported."""
    out = tmp_path / "imports.json"
    env = {**os.environ, "LIGHT_IMPORTS_OUT": str(out), "TRACEKIT_CACHE": str(cache or tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(HEAVY), *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.is_file(), f"`tracekit {' '.join(args)}` did not finish:\n{proc.stdout}\n{proc.stderr}"
    result = json.loads(out.read_text())
    result["output"] = proc.stdout + proc.stderr
    return result


def assert_light(args: list[str], result: dict) -> None:
    assert result["exit"] in (0, None), f"`tracekit {' '.join(args)}` exited {result['exit']}:\n{result['output']}"
    heavy = result["imported"]
    assert not heavy, "\n".join(
        [f"`tracekit {' '.join(args)}` imported heavy modules it does not need:"]
        + [f"  {module}, first imported by {chain}" for module, chain in heavy.items()]
        + ['(`python -X importtime -c "import tracekit.cli"` shows the import tree)']
    )


SUBCOMMANDS = [
    "run",
    "validate",
    "plugins",
    "cache",
    "cache ls",
    "cache clear",
    "compare",
    "explain",
    "detect",
    "report",
]


@pytest.mark.parametrize(
    "args",
    [["--help"], *([*command.split(), "--help"] for command in SUBCOMMANDS)],
    ids=lambda args: " ".join(args),
)
def test_help_is_light(args, tmp_path):
    result = run_light(args, tmp_path)
    assert_light(args, result)
    assert "Usage" in result["output"]


@pytest.mark.parametrize("spec", ["quickstart.yaml", "compare.yaml"])
def test_validate_is_light(spec, tmp_path):
    args = ["validate", "--show", str(EXAMPLES / spec)]
    result = run_light(args, tmp_path)
    assert_light(args, result)
    assert "valid spec" in result["output"]


@pytest.mark.parametrize("args", [["plugins"], ["plugins", "--json"]], ids=" ".join)
def test_plugins_is_light(args, tmp_path):
    result = run_light(args, tmp_path)
    assert_light(args, result)
    assert "feature-response" in result["output"]


def test_cache_ls_and_clear_are_light(tmp_path):
    cache = tmp_path / "cache"
    entry = cache / "attacks" / ("0" * 32)
    entry.mkdir(parents=True)
    (entry / "meta.json").write_text(json.dumps({"attack": {"name": "fgsm", "eps": 0.1}, "seed": 0, "model": "f" * 64}))
    (entry / ("1" * 32 + ".pt")).write_bytes(b"\0" * 1000)

    listed = run_light(["cache", "ls"], tmp_path, cache)
    assert_light(["cache", "ls"], listed)
    assert "fgsm" in listed["output"] and "1 cached attack(s)" in listed["output"]

    cleared = run_light(["cache", "clear"], tmp_path, cache)
    assert_light(["cache", "clear"], cleared)
    assert "removed 1 cached attack(s)" in cleared["output"] and not entry.exists()
