"""The README's shell commands run verbatim: every file they name exists, and the quick ones of its
"Use" section run (in order, in a scratch directory that sees the repository's examples/) and
exit 0. The long runs (paper, challenge, scenes, the comparison of examples/compare.yaml and what
needs its directory) are checked for their files and spec only; the Ray section's commands name
a cluster and your own spec."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
LONG = ("examples/paper.yaml", "examples/challenge.yaml", "examples/scenes.yaml", "examples/compare.yaml", "runs/cmp")


def readme_commands(section: str = "") -> list[list[str]]:
    """`tracekit ...` lines of the README's bash blocks (of the `## section` only, if given), as
    argument lists without comments."""
    text = README.read_text(encoding="utf-8")
    if section:
        text = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "tracekit":
                commands.append(words)
    return commands


def test_the_readme_names_commands() -> None:
    commands = readme_commands()
    assert len(commands) >= 15
    assert {c[1] for c in commands} >= {"run", "compare", "validate", "plugins", "explain", "detect", "report", "cache"}


@pytest.mark.parametrize("words", readme_commands(), ids=lambda w: " ".join(w[1:3]))
def test_files_the_commands_name_exist(words: list[str]) -> None:
    for word in words:
        if word.startswith("examples/"):
            assert (ROOT / word).is_file(), f"README command `{' '.join(words)}` names {word}, which does not exist"


def test_long_specs_validate() -> None:
    for spec in ("paper", "challenge", "scenes", "compare", "scenes-compare"):
        result = subprocess.run(
            [sys.executable, "-m", "tracekit", "validate", f"examples/{spec}.yaml"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_quick_commands_run_verbatim_in_order(tmp_path: Path) -> None:
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {**os.environ, "COLUMNS": "100"}
    ran = 0
    for words in readme_commands("Use"):
        if any(long in words for long in LONG) or "--help" in words:
            continue
        result = subprocess.run(
            [sys.executable, "-m", "tracekit", *words[1:]], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, (
            f"`{' '.join(words)}` exited {result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )
        ran += 1
    assert ran >= 10
    assert (tmp_path / "runs" / "q" / "scores.csv").is_file() and (
        tmp_path / "runs" / "q-vs-q2" / "report.html"
    ).is_file()
