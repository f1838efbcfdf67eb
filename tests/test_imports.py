"""No import cycle in tracekit: the graph of every runtime import statement of every module under
src/tracekit (at module level or inside a function; those under `if TYPE_CHECKING:` are not run)
has no strongly connected component of more than one module.

An import inside a function still ties the two modules together: a cycle hidden that way breaks as
soon as someone moves the import up, and it says that a type or a constant lives in the wrong
module. Relative imports are resolved, and `from pkg import name` counts as an import of the
submodule `pkg.name` when there is one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tracekit

ROOT = Path(tracekit.__file__).parent


def modules(root: Path = ROOT) -> dict[str, tuple[Path, bool]]:
    """`{dotted name: (file, whether it is a package's __init__)}` of every module under `root`."""
    out = {}
    for file in sorted(root.rglob("*.py")):
        parts = list(file.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (file, is_package)
    return out


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Ids of the nodes under `if TYPE_CHECKING:` (or `if typing.TYPE_CHECKING:`)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skipped


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """`{module: the tracekit modules it imports at run time}`."""
    known = modules(root)
    package = root.name
    graph: dict[str, set[str]] = {}
    for name, (file, is_package) in known.items():
        tree = ast.parse(file.read_text(encoding="utf-8"), str(file))
        here = name.split(".") if is_package else name.split(".")[:-1]  # the package relative imports start from
        skipped = _type_checking_only(tree)
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    submodule = f"{target}.{alias.name}"
                    targets.add(submodule if submodule in known else target)
        graph[name] = {t for t in targets if t in known and (t == package or t.startswith(package + "."))}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's, without recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def describe(component: list[str], graph: dict[str, set[str]]) -> str:
    """A cycle's modules and the imports between them, one per line."""
    edges = [f"    {a} -> {b}" for a in component for b in sorted(graph[a]) if b in component]
    return f"{len(component)} modules: {', '.join(component)}\n" + "\n".join(edges)


def test_the_graph_counts_imports_in_functions_resolves_relative_ones_and_skips_type_checking(tmp_path: Path) -> None:
    toy = tmp_path / "toy"
    (toy / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from .a import thing\n",
        "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import b\nthing = 1\n",
        "b.py": "import os\n\ndef later():\n    from .sub import c\n    import toy.a\n",
        "sub/__init__.py": "",
        "sub/c.py": "from .. import b\nfrom ..sub import d\nfrom . import *\n",
        "sub/d.py": "import typing\nif typing.TYPE_CHECKING:\n    import toy.b\nelse:\n    pass\n",
    }
    for name, text in files.items():
        (toy / name).write_text(text)
    assert import_graph(toy) == {
        "toy": {"toy.a"},
        "toy.a": set(),  # its import of b is for type checkers only
        "toy.b": {"toy.sub.c", "toy.a"},  # in a function, `from .sub import c` is the module toy.sub.c
        "toy.sub": set(),
        "toy.sub.c": {"toy.b", "toy.sub.d", "toy.sub"},
        "toy.sub.d": set(),
    }
    assert cycles(import_graph(toy)) == [["toy.b", "toy.sub.c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle() -> None:
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles in tracekit (each must be broken, not hidden in a function):\n" + "\n".join(
        describe(c, graph) for c in found
    )
