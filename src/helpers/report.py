"""The offline twin of ``quarto render``: the report's Quarto sources as one HTML page.

Quarto cannot be installed on the study's machines, yet the report must be readable there and
must not drift from what Quarto users get. So this module renders the *same* sources Quarto
reads — ``reports/index.qmd``, the chapter files it includes and the executed notebooks the
chapters embed — understanding just the Quarto features the report uses: YAML front matter,
``{{< include >}}``, ``{{< embed nb.ipynb#label >}}``, cell options (``#| label``,
``#| fig-cap``, ``#| tbl-cap``, ``#| fig-alt``), numbered figures and tables, ``@fig-``/``@tbl-``/
``@sec-`` cross-references, fenced divs (callouts) and a table of contents. Anything it cannot
resolve is shown in the page (and on stderr), never silently dropped. Known differences from
Quarto: stderr streams (warnings, logs) of embedded cells are left out, TeX math is shown as
typed, and nested lists need four-space indentation (Python-Markdown's rule).

The chapter list lives once, in the ``chapters:`` key of index.qmd's front matter;
``sync_chapters`` rewrites the include block between the ``chapters:begin``/``chapters:end``
markers from it, replacing chapters whose file does not exist (yet) by a visible note, so that
neither Quarto (which stops on a missing include) nor the twin breaks while the report grows.
Quarto runs it as its ``pre-render`` step; the twin runs it before rendering.

Command line: ``python -m helpers.report [--index reports/index.qmd] [--out reports/index.html]
[--strict] [--chapters-only]``.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import html
import re
import sys
import xml.etree.ElementTree as etree
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import markdown
import nbformat
import yaml
from markdown.treeprocessors import Treeprocessor

from helpers import paths

CHAPTERS_BEGIN = "<!-- chapters:begin"
CHAPTERS_END = "<!-- chapters:end -->"
SHORTCODE = re.compile(r"^\s*\{\{<\s*(include|embed)\s+(.+?)\s*>\}\}\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")
DIV_OPEN = re.compile(r"^:{3,}\s*\{([^}]*)\}\s*$|^:{3,}\s*([A-Za-z][\w-]*)\s*$")
DIV_CLOSE = re.compile(r"^:{3,}\s*$")
SPAN = re.compile(r"\[([^\]\n]+)\]\{\.([\w-]+)\}")
XREF = re.compile(r"\[(-?)@((?:fig|tbl|sec)-[A-Za-z0-9_-]*[A-Za-z0-9])\]|(?<![\w@/.])@([FfTtSs](?:ig|bl|ec)-[A-Za-z0-9_-]*[A-Za-z0-9])")
KIND_WORDS = {"fig": "Figure", "tbl": "Table", "sec": "Section"}
TOKEN = "REPORTEMBEDTOKEN{:04d}X"
FALLBACK_NOTE = "Rendered by the offline fallback (python -m helpers.report), not by Quarto"


class ReportError(Exception):
    """The report's sources cannot be read at all (no index file, broken front matter)."""


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
    chapters = meta.get("chapters") or []
    begin, end = text.find(CHAPTERS_BEGIN), text.find(CHAPTERS_END)
    if not chapters or begin < 0 or end < begin:
        return []
    begin_line_end = text.index("\n", begin) + 1
    block = chapter_block([str(c) for c in chapters], index.parent)
    new = text[:begin_line_end] + "\n" + block + "\n\n" + text[end:]
    if new != text:
        index.write_text(new, encoding="utf-8")
    return [str(c) for c in chapters if not (index.parent / str(c)).is_file()]


def expand_includes(body: str, base: Path, warnings: list[str], depth: int = 0) -> str:
    """Replace include shortcodes by the files' bodies (front matter dropped), recursively.

    Paths are relative to the main document's folder, as in Quarto, where an include is a
    paste; a missing file becomes a visible note."""
    out, in_code = [], False
    for line in body.splitlines():
        if FENCE.match(line):
            in_code = not in_code
        match = None if in_code else SHORTCODE.match(line)
        if not match or match.group(1) != "include":
            out.append(line)
            continue
        target = base / match.group(2).strip().strip("\"'")
        if depth > 10:
            raise ReportError(f"includes nested more than 10 deep at {target}")
        if not target.is_file():
            warnings.append(f"included file {target} not found")
            out.append(_note_md(f"Included file `{match.group(2)}` not found; its content is missing here."))
            continue
        _, included = split_front_matter(target.read_text(encoding="utf-8"), str(target))
        out.append(expand_includes(included, base, warnings, depth + 1))
    return "\n".join(out)


def _note_md(message: str) -> str:
    return f"\n::: {{.callout-warning .render-warning}}\n**Rendering problem:** {message}\n:::\n"


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
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as exc:  # nbformat raises several unrelated types for bad files
            return f"notebook {path} cannot be read ({exc})"
        found: dict[str, Cell] = {}
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            options = cell_options(cell.source)
            keys = [cell.get("id"), options.get("label"), *cell.get("metadata", {}).get("tags", [])]
            for key in keys:
                if key and str(key) not in found:
                    found[str(key)] = Cell(notebook, str(options.get("label") or key), options,
                                           cell.source, list(cell.get("outputs", [])))
        return found

    def find(self, notebook: str, label: str) -> Cell | str:
        cells = self.cells(notebook)
        if isinstance(cells, str):
            return cells
        if label not in cells:
            labels = sorted(k for k in cells if re.match(r"^(fig|tbl|txt)-", k))
            return f"no cell labelled '{label}' in {notebook} (labels there: {', '.join(labels) or 'none'})"
        return cells[label]


# --------------------------------------------------------------------------- embeds


@dataclass
class Embed:
    """One embed shortcode, its resolved cell (or the problem) and its figure/table number."""

    token: str
    target: str
    cell: Cell | None = None
    problem: str | None = None
    number: int | None = None
    echo: bool = False

    @property
    def label(self) -> str:
        return self.target.partition("#")[2]

    @property
    def kind(self) -> str | None:
        prefix = self.label.split("-", 1)[0]
        return prefix if prefix in ("fig", "tbl") else None


@dataclass
class Numbering:
    """Figure, table and section numbers by label, for cross-references."""

    labels: dict[str, tuple[str, str]] = field(default_factory=dict)  # label -> (kind, number)
    counters: dict[str, int] = field(default_factory=lambda: {"fig": 0, "tbl": 0})

    def assign(self, label: str, kind: str) -> int:
        if label in self.labels:
            return int(self.labels[label][1])
        self.counters[kind] += 1
        self.labels[label] = (kind, str(self.counters[kind]))
        return self.counters[kind]


def collect_embeds(body: str, notebooks: NotebookIndex, numbering: Numbering,
                   warnings: list[str]) -> tuple[str, list[Embed]]:
    """Swap each embed shortcode for a placeholder paragraph and resolve its cell, numbering
    figures and tables in document order (as Quarto does)."""
    out, embeds, in_code = [], [], False
    for line in body.splitlines():
        if FENCE.match(line):
            in_code = not in_code
        match = None if in_code else SHORTCODE.match(line)
        if not match or match.group(1) != "embed":
            out.append(line)
            continue
        target, *args = match.group(2).split()
        embed = Embed(TOKEN.format(len(embeds)), target, echo="echo=true" in args)
        notebook, _, label = target.partition("#")
        found = notebooks.find(notebook, label) if label else f"embed '{target}' names no cell label"
        if isinstance(found, str):
            embed.problem = found
            warnings.append(f"embed {target}: {found}")
        else:
            embed.cell = found
            if embed.kind:
                embed.number = numbering.assign(embed.label, embed.kind)
        embeds.append(embed)
        out.extend(["", embed.token, ""])
    return "\n".join(out), embeds


def _inline_md(text: str) -> str:
    rendered = markdown.markdown(html.escape(str(text), quote=False) if "<" in str(text) else str(text))
    return re.sub(r"^<p>(.*)</p>$", r"\1", rendered.strip(), flags=re.S)


def _joined(value) -> str:
    return " ".join(str(v) for v in value) if isinstance(value, list) else str(value or "")


def render_output(output: dict, alt: str, problems: list[str]) -> str:
    """One notebook output as HTML: images as data URIs, HTML and Markdown as such, text as <pre>."""
    kind = output.get("output_type")
    if kind == "stream":
        return f'<pre class="cell-output">{html.escape(output.get("text", ""))}</pre>' if output.get("name") == "stdout" else ""
    if kind == "error":
        problems.append(f"the cell raised {output.get('ename')}: {output.get('evalue')}")
        return f'<pre class="cell-error">{html.escape(str(output.get("ename")))}: {html.escape(str(output.get("evalue")))}</pre>'
    data = output.get("data", {})
    for mime in ("image/png", "image/jpeg"):
        if mime in data:
            payload = re.sub(r"\s+", "", _joined(data[mime]).replace(" ", ""))
            return f'<img src="data:{mime};base64,{payload}" alt="{html.escape(alt)}">'
    if "image/svg+xml" in data:
        svg = base64.b64encode(_joined(data["image/svg+xml"]).encode()).decode()
        return f'<img src="data:image/svg+xml;base64,{svg}" alt="{html.escape(alt)}">'
    if "text/html" in data:
        return f'<div class="cell-html">{_joined(data["text/html"])}</div>'
    if "text/markdown" in data:
        return f'<div class="cell-markdown">{to_html(_joined(data["text/markdown"]))[0]}</div>'
    if "text/plain" in data:
        return f'<pre class="cell-output">{html.escape(_joined(data["text/plain"]))}</pre>'
    return ""


def render_embed(embed: Embed) -> str:
    """An embed as the HTML Quarto would give it: a numbered figure, a numbered table, or the
    cell's outputs as they are (generated prose)."""
    if embed.cell is None:
        return (f'<div class="callout callout-warning render-warning"><p><strong>Rendering problem:</strong> '
                f'embed <code>{html.escape(embed.target)}</code>: {html.escape(str(embed.problem))}</p></div>')
    cell, options, problems = embed.cell, embed.cell.options, []
    alt = _joined(options.get("fig-alt") or options.get("fig-cap") or embed.label)
    body = "\n".join(part for out in cell.outputs if (part := render_output(out, alt, problems)))
    if embed.echo:
        code = "\n".join(line for line in cell.source.splitlines() if not line.startswith("#|"))
        body = f'<pre class="cell-code"><code>{html.escape(code)}</code></pre>\n{body}'
    if not body:
        hint = (" (a figure cell without output: was the notebook executed with MPLBACKEND=Agg? "
                "Jupyter captures figures only with its inline backend)") if embed.kind == "fig" else ""
        problems.append("the cell has no output" + hint)
    note = "".join(
        f'<p class="callout callout-warning render-warning"><strong>Rendering problem:</strong> '
        f"{html.escape(cell.notebook)}#{html.escape(embed.label)}: {html.escape(p)}</p>"
        for p in problems
    )
    source = (f'<p class="embed-source">Source: <a href="{html.escape(cell.notebook)}">'
              f"{html.escape(Path(cell.notebook).name)}</a></p>")
    label = html.escape(embed.label)
    if embed.kind == "fig":
        caption = _inline_md(_joined(options.get("fig-cap", "")))
        return (f'<figure class="report-figure" id="{label}">{body}{note}'
                f'<figcaption>Figure {embed.number}: {caption}</figcaption>{source}</figure>')
    if embed.kind == "tbl":
        caption = _inline_md(_joined(options.get("tbl-cap", "")))
        return (f'<div class="report-table" id="{label}"><p class="table-caption">Table {embed.number}: '
                f"{caption}</p>{body}{note}{source}</div>")
    return f'<div class="report-text" id="{label}">{body}{note}</div>'


# --------------------------------------------------------------------------- markdown


def fenced_divs(body: str) -> str:
    """Pandoc fenced divs (``::: {.callout-note}``) as HTML divs whose content is still Markdown."""
    out, in_code, depth = [], False, 0
    for line in body.splitlines():
        if FENCE.match(line):
            in_code = not in_code
        if in_code:
            out.append(line)
            continue
        opened = DIV_OPEN.match(line)
        if opened:
            attrs = opened.group(1) if opened.group(1) is not None else "." + opened.group(2)
            classes = [a[1:] for a in attrs.split() if a.startswith(".")]
            ids = [a[1:] for a in attrs.split() if a.startswith("#")]
            if any(c.startswith("callout") for c in classes):
                classes.insert(0, "callout")
            id_attr = f' id="{html.escape(ids[0])}"' if ids else ""
            out += ["", f'<div class="{html.escape(" ".join(classes))}"{id_attr} markdown="1">', ""]
            title = re.search(r'title="([^"]*)"', attrs)
            if title:
                out += [f"**{title.group(1)}**", ""]
            depth += 1
        elif DIV_CLOSE.match(line) and depth:
            out += ["", "</div>", ""]
            depth -= 1
        else:
            out.append(SPAN.sub(r'<span class="\2">\1</span>', line).replace("{-}", "{.unnumbered}"))
    return "\n".join(out)


@dataclass
class Heading:
    level: int
    id: str
    number: str
    text: str


class SectionNumbers(Treeprocessor):
    """Numbers headings like Quarto's ``number-sections`` (skipping ``.unnumbered``), counting
    from the document's top heading level, and records them for the TOC and ``@sec-`` refs."""

    def __init__(self, md, headings: list[Heading]):
        super().__init__(md)
        self.headings = headings

    def run(self, root: etree.Element) -> None:
        found = [el for el in root.iter() if el.tag in ("h1", "h2", "h3", "h4")]
        if not found:
            return
        top = min(int(el.tag[1]) for el in found)
        counters = [0] * 4
        for el in found:
            level = int(el.tag[1]) - top
            classes = el.get("class", "").split()
            number = ""
            if "unnumbered" not in classes:
                counters[level] += 1
                counters[level + 1:] = [0] * (3 - level)
                number = ".".join(str(c) for c in counters[: level + 1])
                span = etree.Element("span", {"class": "header-section-number"})
                span.text = number
                span.tail = " " + (el.text or "")
                el.text = ""
                el.insert(0, span)
            text = "".join(el.itertext()).strip()
            if number:
                text = text[len(number):].strip()
            self.headings.append(Heading(level + 1, el.get("id", ""), number, text))


def to_html(text: str, headings: list[Heading] | None = None) -> tuple[str, list[Heading]]:
    """Markdown (with the fenced divs converted) to HTML; headings get ids and numbers."""
    found: list[Heading] = [] if headings is None else headings
    md = markdown.Markdown(extensions=["extra", "sane_lists", "toc"])
    if headings is not None:
        md.treeprocessors.register(SectionNumbers(md, found), "section_numbers", 4)
    return md.convert(fenced_divs(text)), found


def toc_html(headings: list[Heading], depth: int = 3) -> str:
    """Nested list of links to the headings down to ``depth``."""
    items, level = [], 0
    for h in (h for h in headings if h.level <= depth and h.id):
        while level < h.level:
            items.append("<ul>")
            level += 1
        while level > h.level:
            items.append("</ul>")
            level -= 1
        number = f'<span class="toc-section-number">{h.number}</span> ' if h.number else ""
        items.append(f'<li><a href="#{html.escape(h.id)}">{number}{html.escape(h.text)}</a></li>')
    items += ["</ul>"] * level
    return "\n".join(items)


def resolve_xrefs(page: str, numbering: Numbering, warnings: list[str]) -> str:
    """``@fig-x``/``@tbl-x``/``@sec-x`` (and ``[-@fig-x]``, number only) as links, outside code."""
    parts, skip = re.split(r"(<[^>]+>)", page), 0
    for i, part in enumerate(parts):
        if part.startswith("<"):
            name = re.match(r"</?\s*(\w+)", part)
            if name and name.group(1).lower() in ("pre", "code", "script", "style"):
                skip += -1 if part.startswith("</") else 1
            continue
        if skip <= 0 and "@" in part:
            parts[i] = XREF.sub(lambda m: _xref(m, numbering, warnings), part)
    return "".join(parts)


def _xref(match: re.Match, numbering: Numbering, warnings: list[str]) -> str:
    number_only = match.group(1) == "-"
    label = match.group(2) or match.group(3)
    key = label[0].lower() + label[1:]
    if key not in numbering.labels:
        warnings.append(f"cross-reference @{key}: no figure, table or section has that label")
        return f'<strong class="xref-missing">?@{html.escape(key)}</strong>'
    kind, number = numbering.labels[key]
    text = number if number_only else f"{KIND_WORDS[kind]}\u00a0{number}"
    return f'<a class="xref" href="#{html.escape(key)}">{text}</a>'


# --------------------------------------------------------------------------- page


def _meta_text(value) -> str:
    if value in ("today", "now", "last-modified"):
        return dt.date.today().isoformat()
    if isinstance(value, list):
        return ", ".join(_meta_text(v.get("name", v) if isinstance(v, dict) else v) for v in value)
    return str(value or "")


def _css() -> str:
    return resources.files("helpers").joinpath("assets/report.css").read_text(encoding="utf-8")


@dataclass
class Rendered:
    html: str
    warnings: list[str]


def render(index: Path) -> Rendered:
    """Render index.qmd, its includes and embeds into one self-contained HTML page."""
    index = Path(index)
    if not index.is_file():
        raise ReportError(f"report source {index} not found")
    meta, body = split_front_matter(index.read_text(encoding="utf-8"), str(index))
    warnings: list[str] = []
    body = expand_includes(body, index.parent, warnings)
    numbering = Numbering()
    body, embeds = collect_embeds(body, NotebookIndex(index.parent), numbering, warnings)
    article, headings = to_html(body, headings=[])
    for h in headings:
        if h.id.startswith("sec-"):
            numbering.labels[h.id] = ("sec", h.number or h.text)
    for embed in embeds:
        rendered = render_embed(embed)
        article = article.replace(f"<p>{embed.token}</p>", rendered).replace(embed.token, rendered)
    article = resolve_xrefs(article, numbering, warnings)
    return Rendered(page(meta, article, headings, warnings), warnings)


def page(meta: dict, article: str, headings: list[Heading], warnings: list[str]) -> str:
    title = html.escape(_meta_text(meta.get("title", "Report")))
    header = [f'<h1 class="title">{title}</h1>']
    if meta.get("subtitle"):
        header.append(f'<p class="subtitle">{html.escape(_meta_text(meta["subtitle"]))}</p>')
    byline = " · ".join(x for x in (_meta_text(meta.get("author")), _meta_text(meta.get("date"))) if x)
    if byline:
        header.append(f'<p class="byline">{html.escape(byline)}</p>')
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header.append(
        f'<p class="fallback-note">{FALLBACK_NOTE}, on {stamp}: same sources as <code>quarto render</code> '
        "(reports/index.qmd, its chapter files and the executed notebooks).</p>"
    )
    if warnings:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
        header.append(f'<div class="callout callout-warning render-warnings"><p><strong>{len(warnings)} '
                      f"rendering problem(s)</strong> — see the notes in the text:</p><ul>{items}</ul></div>")
    toc = toc_html(headings, depth=int(meta.get("toc-depth", 3)))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="helpers.report (offline fallback for Quarto)">
<title>{title}</title>
<style>
{_css()}
</style>
</head>
<body>
<div class="page">
<nav id="TOC" class="toc" aria-label="Table of contents">
<h2 class="toc-title">Contents</h2>
{toc}
</nav>
<main class="article">
<header id="title-block-header">
{chr(10).join(header)}
</header>
{article}
</main>
</div>
</body>
</html>
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.report", description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=None, help="report source (default: reports/index.qmd)")
    parser.add_argument("--out", type=Path, default=None, help="output page (default: index.html beside the source)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when anything could not be resolved")
    parser.add_argument("--chapters-only", action="store_true",
                        help="only refresh the chapter includes of index.qmd (Quarto's pre-render step)")
    args = parser.parse_args(argv)
    index = args.index or paths.reports_dir() / "index.qmd"
    try:
        missing = sync_chapters(index)
        for chapter in missing:
            print(f"note: chapter {chapter} does not exist yet; the report shows a note in its place", file=sys.stderr)
        if args.chapters_only:
            return 0
        rendered = render(index)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = args.out or index.with_suffix(".html")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(rendered.html, encoding="utf-8")
    for warning in rendered.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{FALLBACK_NOTE}: {out}")
    return 1 if args.strict and rendered.warnings else 0


if __name__ == "__main__":
    sys.exit(main())
