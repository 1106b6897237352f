"""What Quarto does before pandoc sees the report, done without Quarto.

Quarto resolves its own shortcodes and numbers figures and tables; pandoc knows neither. This
pre-pass turns ``reports/index.qmd`` into one pandoc-Markdown text: the chapter includes pasted
in, each ``{{< embed nb.ipynb#label >}}`` replaced by that cell's outputs in the executed
notebook (images, HTML and text as raw HTML, Markdown as Markdown, so pandoc reads it like the
chapters), figures and tables numbered in document order as Quarto numbers them, and Quarto's
``{{< var key >}}`` shortcodes resolved from the project's ``_variables.yml`` (``variables``). What it cannot
resolve becomes a visible note in the text and a warning, never a silent gap.

The chapter list lives once, in the ``chapters:`` key of index.qmd's front matter;
``sync_chapters`` rewrites the include block between the ``chapters:begin``/``chapters:end``
markers from it, replacing a chapter whose file does not exist (yet) by a note, so that neither
Quarto (which stops on a missing include) nor the fallback breaks while the report grows.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from helpers.report import variables

CHAPTERS_BEGIN = "<!-- chapters:begin"
CHAPTERS_END = "<!-- chapters:end -->"
SHORTCODE = re.compile(r"^\s*\{\{<\s*(include|embed)\s+(.+?)\s*>\}\}\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")
KINDS = {"fig": "Figure", "tbl": "Table"}


class ReportError(Exception):
    """The report's sources cannot be read at all (no index file, broken front matter, no pandoc)."""


# --------------------------------------------------------------------------- sources


def split_front_matter(text: str, source: str = "<text>") -> tuple[dict, str]:
    """YAML front matter (between leading ``---`` lines) and the body after it."""
    match = re.match(r"^---[ \t]*\n(.*?)\n---[ \t]*(?:\n|$)", text, flags=re.S)
    if not match:
        return {}, text
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        raise ReportError(f"{source}: front matter is not valid YAML ({exc})") from exc
    if not isinstance(meta, dict):
        raise ReportError(f"{source}: front matter must be a YAML mapping")
    return meta, text[match.end():]


def chapter_block(chapters: list[str], base: Path) -> str:
    """The include lines for the chapters that exist; a visible note for each that does not."""
    parts = []
    for chapter in chapters:
        if (base / chapter).is_file():
            parts.append(f"{{{{< include {chapter} >}}}}")
        else:
            parts.append(
                "::: {.callout-warning .chapter-missing}\n"
                f"**Chapter not available in this build:** `{chapter}` does not exist yet, "
                "so its content is left out.\n:::"
            )
    return "\n\n".join(parts)


def sync_chapters(index: Path) -> list[str]:
    """Rewrite index.qmd's generated include block from its ``chapters:`` list.

    Returns the chapters whose file is missing. Writes only when the block changes, so the
    committed file is untouched once every chapter exists."""
    if not index.is_file():
        raise ReportError(f"report source {index} not found")
    text = index.read_text(encoding="utf-8")
    meta, _ = split_front_matter(text, str(index))
    chapters = [str(c) for c in meta.get("chapters") or []]
    begin, end = text.find(CHAPTERS_BEGIN), text.find(CHAPTERS_END)
    if not chapters or begin < 0 or end < begin:
        return []
    begin_line_end = text.index("\n", begin) + 1
    new = text[:begin_line_end] + "\n" + chapter_block(chapters, index.parent) + "\n\n" + text[end:]
    if new != text:
        index.write_text(new, encoding="utf-8")
    return [c for c in chapters if not (index.parent / c).is_file()]


def _shortcodes(body: str, kind: str):
    """(line, target) for each line of ``body``; target is set on a ``kind`` shortcode outside code."""
    in_code = False
    for line in body.splitlines():
        if FENCE.match(line):
            in_code = not in_code
        match = None if in_code else SHORTCODE.match(line)
        yield line, (match.group(2) if match and match.group(1) == kind else None)


def expand_includes(body: str, base: Path, warnings: list[str], depth: int = 0) -> str:
    """Replace include shortcodes by the files' bodies (front matter dropped), recursively.

    Paths are relative to the main document's folder, as in Quarto, where an include is a
    paste; a missing file becomes a visible note."""
    out = []
    for line, target in _shortcodes(body, "include"):
        if target is None:
            out.append(line)
            continue
        path = base / target.strip("\"'")
        if depth > 10:
            raise ReportError(f"includes nested more than 10 deep at {path}")
        if not path.is_file():
            warnings.append(f"included file {path} not found")
            out.append(note_md(f"Included file `{target}` not found; its content is missing here."))
            continue
        _, included = split_front_matter(path.read_text(encoding="utf-8"), str(path))
        out.append(expand_includes(included, base, warnings, depth + 1))
    return "\n".join(out)


def note_md(message: str) -> str:
    """A rendering problem as a Markdown callout (the message is Markdown)."""
    return f"\n::: {{.callout-warning .render-warning}}\n**Rendering problem:** {message}\n:::\n"


def note_html(message: str) -> str:
    """A rendering problem as raw HTML (the message is plain text, shown exactly)."""
    return (f'<div class="callout callout-warning render-warning"><p><strong>Rendering problem:</strong> '
            f"{html.escape(message)}</p></div>")


# --------------------------------------------------------------------------- notebooks


def cell_options(source: str) -> dict:
    """Quarto cell options: the leading ``#|`` comment lines of a code cell, read as YAML."""
    lines = []
    for line in source.splitlines():
        if not line.startswith("#|"):
            break
        lines.append(line[2:].removeprefix(" "))
    if not lines:
        return {}
    try:
        options = yaml.safe_load("\n".join(lines)) or {}
    except yaml.YAMLError:
        return {}
    return options if isinstance(options, dict) else {}


@dataclass
class Cell:
    """One labelled code cell of an executed notebook."""

    notebook: str
    label: str
    options: dict
    source: str
    outputs: list


class NotebookIndex:
    """Finds cells by Quarto's rules (cell id, then ``#| label``, then tag); reads each notebook once."""

    def __init__(self, base: Path):
        self.base = base
        self._cache: dict[str, dict[str, Cell] | str] = {}

    def cells(self, notebook: str) -> dict[str, Cell] | str:
        """label -> cell, or an error message when the notebook cannot be read."""
        if notebook not in self._cache:
            self._cache[notebook] = self._read(notebook)
        return self._cache[notebook]

    def _read(self, notebook: str) -> dict[str, Cell] | str:
        path = self.base / notebook
        if not path.is_file():
            return f"notebook {path} not found (has it been executed into reports/executed/?)"
        import nbformat  # here, not at the top: it imports jsonschema (seconds), and every notebook imports this wing

        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as exc:  # nbformat raises several unrelated types for bad files
            return f"notebook {path} cannot be read ({exc})"
        found: dict[str, Cell] = {}
        for cell in (c for c in nb.cells if c.cell_type == "code"):
            options = cell_options(cell.source)
            for key in [cell.get("id"), options.get("label"), *cell.get("metadata", {}).get("tags", [])]:
                if key and str(key) not in found:
                    found[str(key)] = Cell(notebook, str(options.get("label") or key), options,
                                           cell.source, list(cell.get("outputs", [])))
        return found

    def find(self, notebook: str, label: str) -> Cell | str:
        """The cell, or a message naming the labels the notebook does have."""
        cells = self.cells(notebook)
        if isinstance(cells, str):
            return cells
        if label not in cells:
            labels = sorted(k for k in cells if re.match(r"^(fig|tbl|txt)-", k))
            return f"no cell labelled '{label}' in {notebook} (labels there: {', '.join(labels) or 'none'})"
        return cells[label]


# --------------------------------------------------------------------------- embeds


@dataclass
class Numbering:
    """Figure and table numbers by label, in document order: label -> (word, number)."""

    labels: dict[str, tuple[str, str]] = field(default_factory=dict)

    def assign(self, label: str) -> str:
        if label not in self.labels:
            kind = label.split("-", 1)[0]
            count = sum(1 for word, _ in self.labels.values() if word == KINDS[kind])
            self.labels[label] = (KINDS[kind], str(count + 1))
        return self.labels[label][1]


def _joined(value) -> str:
    return "".join(str(v) for v in value) if isinstance(value, list) else str(value or "")


def _raw(html_text: str) -> str:
    """Raw HTML for pandoc: a fence longer than any backtick run inside, so nothing is parsed."""
    fence = "`" * max([3, *(len(run) + 1 for run in re.findall(r"`+", html_text))])
    return f"\n{fence}{{=html}}\n{html_text}\n{fence}\n"


def output_markdown(output: dict, alt: str, problems: list[str]) -> str:
    """One notebook output for pandoc: Markdown as such, images as data URIs, HTML and text raw.

    stderr streams (warnings, logs) are left out, as Quarto leaves them out of embeds."""
    kind = output.get("output_type")
    if kind == "stream":
        text = output.get("text", "")
        return _raw(f'<pre class="cell-output">{html.escape(text)}</pre>') if output.get("name") == "stdout" else ""
    if kind == "error":
        problems.append(f"the cell raised {output.get('ename')}: {output.get('evalue')}")
        error = f"{output.get('ename')}: {output.get('evalue')}"
        return _raw(f'<pre class="cell-error">{html.escape(error)}</pre>')
    data = output.get("data", {})
    for mime in ("image/png", "image/jpeg", "image/svg+xml"):
        if mime in data:
            payload = _joined(data[mime])
            payload = base64.b64encode(payload.encode()).decode() if mime.endswith("xml") else re.sub(r"\s+", "", payload)
            return _raw(f'<img src="data:{mime};base64,{payload}" alt="{html.escape(alt)}">')
    if "text/markdown" in data:
        return "\n" + _joined(data["text/markdown"]) + "\n"
    if "text/html" in data:
        return _raw(f'<div class="cell-html">{_joined(data["text/html"])}</div>')
    if "text/plain" in data:
        return _raw(f'<pre class="cell-output">{html.escape(_joined(data["text/plain"]))}</pre>')
    return ""


def embed_markdown(target: str, notebooks: NotebookIndex, numbering: Numbering,
                   warnings: list[str], echo: bool = False) -> str:
    """An embed as Quarto shows it: a numbered, captioned figure or table, or the cell's outputs
    as they are (generated prose). Captions stay Markdown, so pandoc typesets and cross-references
    them; the wrapping ``report-*`` divs become HTML elements in ``render``."""
    notebook, _, label = target.partition("#")
    cell = notebooks.find(notebook, label) if label else f"embed '{target}' names no cell label"
    if isinstance(cell, str):
        warnings.append(f"embed {target}: {cell}")
        return _raw(note_html(f"embed {target}: {cell}"))
    kind, options, problems = label.split("-", 1)[0], cell.options, []
    alt = _joined(options.get("fig-alt") or options.get("fig-cap") or label)
    body = "".join(output_markdown(out, alt, problems) for out in cell.outputs)
    if echo:
        code = "\n".join(line for line in cell.source.splitlines() if not line.startswith("#|"))
        body = _raw(f'<pre class="cell-code"><code>{html.escape(code)}</code></pre>') + body
    if not body.strip():
        hint = (" (a figure cell without output: was the notebook executed with MPLBACKEND=Agg? "
                "Jupyter captures figures only with its inline backend)") if kind == "fig" else ""
        problems.append("the cell has no output" + hint)
    warnings.extend(f"{notebook}#{label}: {p}" for p in problems)
    notes = "".join(_raw(note_html(f"{notebook}#{label}: {p}")) for p in problems)
    if kind not in KINDS:
        return f"\n::: {{#{label} .report-text}}\n{body}{notes}\n:::\n"
    caption = f"{KINDS[kind]} {numbering.assign(label)}: {_joined(options.get(f'{kind}-cap', ''))}"
    source = _raw(f'<p class="embed-source">Source: <a href="{html.escape(notebook)}">'
                  f"{html.escape(Path(notebook).name)}</a></p>")
    caption_div = f"\n::: {kind}-caption\n{caption}\n:::\n"
    parts = [body, notes, caption_div] if kind == "fig" else [caption_div, body, notes]
    return f"\n::: {{#{label} .report-{'figure' if kind == 'fig' else 'table'}}}\n{''.join(parts)}{source}\n:::\n"


def expand_embeds(body: str, notebooks: NotebookIndex, numbering: Numbering, warnings: list[str]) -> str:
    """Replace each embed shortcode (outside code) by ``embed_markdown``, numbering in document order."""
    out = []
    for line, target in _shortcodes(body, "embed"):
        if target is None:
            out.append(line)
            continue
        name, *args = target.split()
        out.append(embed_markdown(name, notebooks, numbering, warnings, echo="echo=true" in args))
    return "\n".join(out)


def prepass(index: Path, warnings: list[str]) -> tuple[str, Numbering]:
    """index.qmd as one pandoc-Markdown text (front matter kept), and its figure/table numbers."""
    if not index.is_file():
        raise ReportError(f"report source {index} not found")
    text = index.read_text(encoding="utf-8")
    split_front_matter(text, str(index))  # fail early and clearly on broken YAML
    body = expand_includes(text, index.parent, warnings)
    body = variables.resolve(body, variables.load(variables.variables_path(index)), warnings)
    numbering = Numbering()
    return expand_embeds(body, NotebookIndex(index.parent), numbering, warnings), numbering
