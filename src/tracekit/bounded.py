"""Bounded reading of text files a user (or anyone who can write a run directory) hands tracekit:
specs, `metrics.json`, `detector.json`, cache metadata, class-name lists.

Limits, each a clear `TracekitError` rather than gigabytes or a `RecursionError`: only regular
files, at most `MAX_TEXT_BYTES` (a spec: `MAX_SPEC_BYTES`), nesting at most `MAX_DEPTH` deep,
and a YAML document expanding (through aliases, each use counted) to at most `MAX_NODES`
values: a 600-byte spec of nested aliases ("billion laughs") is refused before it is built.
`short` keeps a value quoted in a message to one readable line.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import yaml

from .errors import TracekitError

MAX_TEXT_BYTES = 64 * 2**20
MAX_SPEC_BYTES = 2**20
MAX_DEPTH = 64
MAX_NODES = 100_000


def check_file(path: Path, what: str, limit: int, fix: str = "") -> None:
    """`TracekitError` unless `path` is a regular file (a pipe would block a reader, a link to a
    device feed it without end) of at most `limit` bytes; `what` names it in the message, `fix`
    ends the message (`FileNotFoundError` passes)."""
    info = os.stat(path)
    subject = f"{what} " if what else ""
    if not stat.S_ISREG(info.st_mode):
        raise TracekitError(f"{path}: {subject}must be a regular file (not a directory, pipe or device){fix}")
    if info.st_size > limit:
        raise TracekitError(f"{path}: {subject}is {info.st_size:,} bytes, more than the {limit:,} tracekit reads{fix}")


def read_text(path: Path, what: str, limit: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of the regular file `path`, at most `limit` bytes (`FileNotFoundError` passes)."""
    check_file(path, what, limit)
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read(limit + 1)
    except UnicodeDecodeError:
        raise TracekitError(f"{path}: {what} is not UTF-8 text") from None


def loads_json(text: str, where: str, strict: bool = False) -> Any:
    """JSON, nested at most `MAX_DEPTH` deep; `strict`: without the non-standard constants `NaN`,
    `Infinity` and `-Infinity` that Python's json module accepts (tracekit never writes them)."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant if strict else None)
    except RecursionError:
        raise TracekitError(f"{where}: JSON nested too deeply (more than {MAX_DEPTH} levels)") from None
    except ValueError as exc:
        raise TracekitError(f"{where}: not valid JSON ({exc})") from None
    if _depth(value) > MAX_DEPTH:
        raise TracekitError(f"{where}: JSON nested too deeply (more than {MAX_DEPTH} levels)")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def read_json(path: Path, what: str) -> Any:
    return loads_json(read_text(path, what), f"{path}")


def load_yaml(text: str, loader: type[yaml.SafeLoader], where: str) -> Any:
    """One YAML document with a safe `loader`, its alias expansion and nesting checked before it is built."""
    parser = loader(text)
    try:
        node = parser.get_single_node()
        if node is None:
            return None
        _check_node(node, where)
        return parser.construct_document(node)
    finally:
        parser.dispose()


def _check_node(root: yaml.Node, where: str) -> None:
    """Expanded size (each alias use counted again) and depth of a composed YAML document."""
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    on_path: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            depths[key] = 1 + max((depths[id(c)] for c in children), default=0)
            if sizes[key] > MAX_NODES:
                raise TracekitError(
                    f"{where}: the YAML expands to more than {MAX_NODES:,} values (aliases repeat what they name); "
                    "write the spec out plainly"
                )
            if depths[key] > MAX_DEPTH:
                raise TracekitError(f"{where}: the YAML is nested more than {MAX_DEPTH} levels deep")
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise TracekitError(f"{where}: the YAML refers to itself (a recursive alias)")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            return depth
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def short(value: Any, limit: int = 100) -> str:
    """`repr(value)`, cut to `limit` characters with a note of how long it was."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"
