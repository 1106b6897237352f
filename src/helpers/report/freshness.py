"""Whether an executed notebook still matches the code that should have produced it.

``make report`` executes ``notebooks/NN_x.ipynb`` into ``reports/executed/NN_x.ipynb``; the page
embeds the executed copy. When the source notebook, or any ``helpers`` module it imports
(directly or through other ``helpers`` modules), was edited after that execution, the page would
show outputs of code that no longer exists, without a word. :func:`stale_notebooks` names each
such notebook and what changed; the renderer shows the list at the top of the page and prints
it (``python -m helpers.report``, and its ``--chapters-only`` step, which ``quarto render`` runs).

Times are file modification times: a fresh clone is older than anything ``make report`` writes.
"""

from __future__ import annotations

import ast
import datetime as dt
import functools
import json
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # src/helpers


def _module_file(name: str) -> Path | None:
    """The file of ``helpers.a.b`` (a module, else a package's ``__init__``), None outside helpers."""
    parts = name.split(".")
    if parts[0] != PACKAGE.name:
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported(tree: ast.AST) -> set[str]:
    """Dotted names of the helpers modules an AST imports (``from helpers.x import y`` may name a
    module ``y`` or an attribute of ``x``: both are tried)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {n for n in names if n.split(".")[0] == PACKAGE.name}


@functools.cache
def _imports_of(path: Path) -> frozenset[Path]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return frozenset()
    return frozenset(f for f in map(_module_file, _imported(tree)) if f is not None)


def helper_files(code: str) -> set[Path]:
    """Every helpers module file ``code`` depends on: its imports, theirs, and so on (each
    package's ``__init__`` on the way included, as Python runs it)."""
    try:
        todo = [f for f in map(_module_file, _imported(ast.parse(code))) if f is not None]
    except SyntaxError:  # a cell magic or other non-Python: be safe, count the whole package
        return set(PACKAGE.rglob("*.py"))
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        parents = [p / "__init__.py" for p in path.parents if PACKAGE in (p, *p.parents)]
        todo += [p for p in parents if p.is_file()] + list(_imports_of(path))
    return seen


def _joined(source: str | list) -> str:
    return "".join(source) if isinstance(source, list) else str(source)


def _cells(path: Path) -> list[dict]:
    """A notebook's cells, read as plain JSON (nbformat would import jsonschema, seconds of import time)."""
    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return []
    return [c for c in cells if isinstance(c, dict)] if isinstance(cells, list) else []


def _stamp(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def stale_notebook(executed: Path, source: Path) -> str | None:
    """Why ``executed`` no longer matches ``source`` and the helpers it imports, or None."""
    if not executed.is_file() or not source.is_file():
        return None
    ran = executed.stat().st_mtime
    newer = [source] if source.stat().st_mtime > ran else []
    code = "\n".join(_joined(c.get("source", "")) for c in _cells(source) if c.get("cell_type") == "code")
    newer += sorted((f for f in helper_files(code) if f.stat().st_mtime > ran), key=lambda f: -f.stat().st_mtime)
    if not newer:
        return None
    root = PACKAGE.parents[1]
    shown = ", ".join(str(f.relative_to(root)) if f.is_relative_to(root) else str(f) for f in newer[:5])
    more = f" and {len(newer) - 5} more" if len(newer) > 5 else ""
    return (f"{executed.name} is stale: executed {_stamp(ran)}, but {shown}{more} changed after; "
            "its outputs may not match the code. Re-run make report")


def stale_notebooks(executed_dir: Path, sources_dir: Path) -> list[str]:
    """One message per executed notebook in ``executed_dir`` older than its source in
    ``sources_dir`` (same file name) or than a helpers module that source imports."""
    messages = (stale_notebook(path, sources_dir / path.name) for path in sorted(Path(executed_dir).glob("*.ipynb")))
    return [m for m in messages if m]
