"""The offline renderer: the report's Quarto sources through pandoc, without Quarto.

Quarto renders with pandoc; so does this fallback. ``prepass`` does what Quarto adds before
pandoc (includes, notebook embeds, figure and table numbers). This module reads that text with
pandoc, makes three small changes to pandoc's document tree and lets pandoc write one
self-contained page (``--standalone --toc --number-sections --embed-resources``, the project's
CSS and template):

- Quarto's cross-references ``@fig-x``, ``@tbl-x``, ``@sec-x`` (and ``[-@fig-x]``, the number
  alone) become links; pandoc parses them as citations, so code and raw HTML are left alone.
  Section numbers are pandoc's own (its ``--number-sections`` on the document's headings).
- Callouts (``::: {.callout-note title="..."}``) get Quarto's title (the given one, or "Note",
  "Warning"...) and the ``callout`` class the CSS draws as a box.
- The embeds' ``report-figure``/``report-table``/``report-text`` divs become ``<figure>`` and
  ``<div>`` elements, their caption divs ``<figcaption>`` / ``<p class="table-caption">``.

An executed notebook older than its source notebook, or than a ``helpers`` module it imports
(``freshness``), is named in the box of problems at the top of the page and on stderr.

Known differences from Quarto: TeX math is pandoc's plain HTML (no MathJax offline), callouts
have no icons, and only embedded cells are numbered figures and tables (a Markdown image with
``{#fig-x}`` is not; the chapters use none).

Command line: ``python -m helpers.report [--index reports/index.qmd] [--out reports/index.html]
[--strict] [--chapters-only]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pypandoc

from helpers import paths
from helpers.report.freshness import stale_notebooks
from helpers.report.prepass import ReportError, prepass, split_front_matter, sync_chapters

FALLBACK_NOTE = "Rendered by the offline fallback (python -m helpers.report), not by Quarto"
HERE = Path(__file__).parent
XREF = re.compile(r"^[FfTtSs](?:ig|bl|ec)-")
CAPTIONS = {"fig-caption": ("<figcaption>", "</figcaption>"),
            "tbl-caption": ('<p class="table-caption">', "</p>")}
ELEMENTS = {"report-figure": "figure", "report-table": "div", "report-text": "div"}


def pandoc(args: list[str], text: str) -> tuple[str, str]:
    """Run pandoc (the one pypandoc finds: pypandoc-binary ships it) on ``text``: stdout, stderr."""
    try:
        binary = pypandoc.get_pandoc_path()
    except OSError as exc:
        raise ReportError("pandoc not found: `pip install pypandoc-binary` (it ships pandoc)") from exc
    done = subprocess.run([binary, *args], input=text, capture_output=True, text=True, check=False)
    if done.returncode:
        raise ReportError(f"pandoc {' '.join(args[:4])} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout, done.stderr


# --------------------------------------------------------------------------- the document tree


def _raw_block(text: str) -> dict:
    return {"t": "RawBlock", "c": ["html", text]}


def _raw_inline(text: str) -> dict:
    return {"t": "RawInline", "c": ["html", text]}


def walk(node, fn):
    """``node`` (pandoc JSON) rebuilt bottom-up; an element for which ``fn`` returns a list is
    replaced by that list's elements."""
    if isinstance(node, dict):
        return {key: walk(value, fn) for key, value in node.items()}
    if not isinstance(node, list):
        return node
    out = []
    for item in (walk(item, fn) for item in node):
        new = fn(item) if isinstance(item, dict) and "t" in item else None
        out.extend([item] if new is None else new)
    return out


def _open_tag(tag: str, ident: str, classes: list[str], attrs: list[list[str]]) -> str:
    parts = [f'class="{html.escape(" ".join(classes))}"'] if classes else []
    parts += [f'id="{html.escape(ident)}"'] if ident else []
    parts += [f'{html.escape(k)}="{html.escape(v)}"' for k, v in attrs]
    return f"<{tag} {' '.join(parts)}>" if parts else f"<{tag}>"


def element(div: dict) -> list[dict] | None:
    """A callout, an embed wrapper or a caption div as HTML around its (pandoc-written) content."""
    if div["t"] != "Div":
        return None
    (ident, classes, attrs), blocks = div["c"]
    caption = next((CAPTIONS[c] for c in classes if c in CAPTIONS), None)
    if caption and all(b["t"] in ("Para", "Plain") for b in blocks):  # a caption is a line of text
        inlines = [x for i, b in enumerate(blocks) for x in ([{"t": "LineBreak"}] if i else []) + b["c"]]
        return [{"t": "Plain", "c": [_raw_inline(caption[0]), *inlines, _raw_inline(caption[1])]}]
    if caption:
        return [_raw_block(caption[0]), *blocks, _raw_block(caption[1])]
    kind = next((c.removeprefix("callout-") for c in classes if c.startswith("callout-")), None)
    if kind:
        title = dict(attrs).get("title", kind.capitalize())
        attrs = [[k, v] for k, v in attrs if k != "title"]
        blocks = [{"t": "Para", "c": [{"t": "Strong", "c": [{"t": "Str", "c": title}]}]}, *blocks]
        classes, tag = ["callout", *classes], "div"
    else:
        tag = next((ELEMENTS[c] for c in classes if c in ELEMENTS), None)
        if tag is None:
            return None  # any other div is pandoc's
    return [_raw_block(_open_tag(tag, ident, classes, attrs)), *blocks, _raw_block(f"</{tag}>")]


def xref(cite: dict, refs: dict[str, tuple[str, str]], warnings: list[str]) -> list[dict] | None:
    """A citation of ``fig-``/``tbl-``/``sec-`` labels as links "Figure 3" (``[-@x]``: "3");
    an unknown label stays visible as ``?@label`` and is a warning. Other citations are pandoc's."""
    if cite["t"] != "Cite" or not all(XREF.match(c["citationId"]) for c in cite["c"][0]):
        return None
    out: list[dict] = []
    for i, citation in enumerate(cite["c"][0]):
        key = citation["citationId"][0].lower() + citation["citationId"][1:]
        prefix = citation["citationPrefix"]
        out += ([{"t": "Str", "c": ";"}, {"t": "Space"}] if i else []) + prefix + ([{"t": "Space"}] if prefix else [])
        if key not in refs:
            warnings.append(f"cross-reference @{key}: no figure, table or section has that label")
            out.append(_raw_inline(f'<strong class="xref-missing">?@{html.escape(key)}</strong>'))
        else:
            word, number = refs[key]
            text = number if citation["citationMode"]["t"] == "SuppressAuthor" else f"{word}\u00a0{number}"
            out.append(_raw_inline(f'<a class="xref" href="#{html.escape(key)}">{html.escape(text)}</a>'))
        out += citation["citationSuffix"]
    return out


@dataclass
class Heading:
    """A heading as pandoc numbers it (``number`` is "" for an unnumbered one)."""

    level: int
    id: str
    number: str
    text: str


def numbered_headings(tree: dict) -> list[Heading]:
    """The document's headings with the numbers pandoc's ``--number-sections`` gives them."""
    found: list[dict] = []
    walk(tree["blocks"], lambda el: found.append(el) if el["t"] == "Header" else None)
    out, _ = pandoc(["-f", "json", "-t", "html5", "--number-sections", "--wrap=none"],
                    json.dumps({**tree, "meta": {}, "blocks": found}))
    result = []
    for level, attrs, inner in re.findall(r"<h([1-6])([^>]*)>(.*?)</h\1>", out, flags=re.S):
        attr = dict(re.findall(r'([\w-]+)="([^"]*)"', attrs))
        text = re.sub(r"<[^>]+>", "", re.sub(r'<span class="header-section-number">.*?</span>', "", inner))
        result.append(Heading(int(level), attr.get("id", ""), attr.get("data-number", ""), html.unescape(text).strip()))
    return result


def tree(markdown: str, refs: dict[str, tuple[str, str]], warnings: list[str]) -> tuple[dict, list[Heading]]:
    """Pandoc's document tree of ``markdown`` with callouts, embed wrappers and cross-references
    resolved (``refs``: figure/table label -> (word, number); sections are added here)."""
    document = json.loads(pandoc(["-f", "markdown", "-t", "json"], markdown)[0])
    document["blocks"] = walk(document["blocks"], element)
    found = numbered_headings(document)
    refs = {**refs, **{h.id: ("Section", h.number or h.text) for h in found if h.id.startswith("sec-")}}
    document["blocks"] = walk(document["blocks"], lambda el: xref(el, refs, warnings))
    return document, found


def to_html(markdown: str, headings: list[Heading] | None = None) -> tuple[str, list[Heading]]:
    """An HTML fragment of ``markdown`` as the report renders it; its headings are appended to
    ``headings`` when given."""
    document, found = tree(markdown, {}, [])
    if headings is not None:
        headings.extend(found)
    return pandoc(["-f", "json", "-t", "html5", "--wrap=none"], json.dumps(document))[0], found


# --------------------------------------------------------------------------- the page


@dataclass
class Rendered:
    html: str
    warnings: list[str]


def _page_args(meta: dict, index: Path, warnings: list[str]) -> list[str]:
    """pandoc's options for the page; the template shows the fallback line and the problems."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    note = (f'<p class="fallback-note">{FALLBACK_NOTE}, on {stamp}, with pandoc '
            f"{pypandoc.get_pandoc_version()}: same sources as <code>quarto render</code> "
            "(reports/index.qmd, its chapter files and the executed notebooks).</p>")
    args = ["--standalone", f"--template={HERE / 'template.html'}", f"--css={HERE / 'report.css'}",
            "--embed-resources", f"--resource-path={index.parent}", "--toc", "--number-sections",
            f"--toc-depth={int(meta.get('toc-depth', 3))}", "--wrap=none", "-M", "toc-title=Contents",
            "-M", f"lang={meta.get('lang', 'en')}", "-V", f"fallback-note={note}"]
    if str(meta.get("date")) in ("today", "now", "last-modified"):
        args += ["-M", f"date={dt.date.today().isoformat()}"]
    if warnings:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
        args += ["-V", f'render-warnings=<div class="callout callout-warning render-warnings"><p><strong>'
                       f"{len(warnings)} rendering problem(s)</strong> — see the notes in the text:</p>"
                       f"<ul>{items}</ul></div>"]
    return args


def stale(index: Path) -> list[str]:
    """The executed notebooks beside ``index`` (``executed/``) older than their source notebook or
    a helpers module it imports: shown first on the page and printed, never rendered silently."""
    return stale_notebooks(Path(index).parent / "executed", paths.project_root() / "notebooks")


def render(index: Path) -> Rendered:
    """Render index.qmd, its includes and embeds into one self-contained HTML page."""
    index = Path(index)
    warnings: list[str] = stale(index)
    markdown, numbering = prepass(index, warnings)
    document, _ = tree(markdown, numbering.labels, warnings)
    meta, _ = split_front_matter(markdown, str(index))
    page, stderr = pandoc(["-f", "json", "-t", "html5", *_page_args(meta, index, warnings)], json.dumps(document))
    warnings += [f"pandoc: {line}" for line in stderr.splitlines() if line.strip()]
    return Rendered(_tidy(page), warnings)


def _tidy(page: str) -> str:
    """Two cosmetic undoings of pandoc's markup, so the page keeps the markup the offline
    renderer always had (and its tests pin): TOC links without the ``id="toc-..."`` anchors
    that nothing links to, and apostrophes as ``&#x27;`` (Python's ``html.escape``, in which the
    notes were written) rather than the ``&#39;`` of ``--embed-resources``' re-serialisation."""
    return re.sub(r'(<a href="#[^"]*") id="toc-[^"]*"', r"\1", page).replace("&#39;", "&#x27;")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.report",
                                     description="Render the report without Quarto (pandoc via pypandoc).")
    parser.add_argument("--index", type=Path, default=None, help="report source (default: reports/index.qmd)")
    parser.add_argument("--out", type=Path, default=None, help="output page (default: index.html beside the source)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when anything could not be resolved")
    parser.add_argument("--chapters-only", action="store_true",
                        help="only refresh the chapter includes of index.qmd (Quarto's pre-render step)")
    args = parser.parse_args(argv)
    index = args.index or paths.reports_dir() / "index.qmd"
    if args.out is not None and (args.out.is_dir() or any(p.exists() and not p.is_dir() for p in args.out.parents)):
        parser.error(f"argument --out: {args.out} cannot be written (it is a folder, or a part of its path is a file); "
                     "name an .html file in a folder")
    try:
        for chapter in sync_chapters(index):
            print(f"note: chapter {chapter} does not exist yet; the report shows a note in its place", file=sys.stderr)
        if args.chapters_only:  # Quarto's pre-render step: quarto renders the page, we can only print
            for warning in stale(index):
                print(f"warning: {warning}", file=sys.stderr)
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
