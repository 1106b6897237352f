"""The offline twin of Quarto (helpers.report): what the report page shows for given sources.

Every test writes a small report in a temporary folder — an index.qmd, chapter files and
synthetic *executed* notebooks (a PNG figure, a DataFrame table, generated Markdown) — and
checks the page the twin makes from them.
"""

from __future__ import annotations

import base64
import io
import re
import textwrap
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml
from PIL import Image

from helpers import paths, report


def png_bytes(color=(200, 30, 30), size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def code_cell(options: str, outputs: list, source: str = "x = 1") -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(textwrap.dedent(options).strip() + "\n" + source)
    cell.outputs = outputs
    return cell


def figure_output(png: bytes) -> nbformat.NotebookNode:
    return nbformat.v4.new_output("display_data", data={
        "image/png": base64.b64encode(png).decode(), "text/plain": "<Figure>"})


def table_output(frame: pd.DataFrame) -> nbformat.NotebookNode:
    return nbformat.v4.new_output("execute_result", execution_count=1, data={
        "text/html": frame.to_html(), "text/plain": frame.to_string()})


def markdown_output(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_output("display_data", data={"text/markdown": text, "text/plain": text})


def write_notebook(path: Path, cells: list) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# A notebook"), *cells]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A report with two chapters: one figure, one table, generated prose, cross-references."""
    write_notebook(tmp_path / "executed/02_metrics.ipynb", [
        code_cell('#| label: tbl-metrics-main\n#| tbl-cap: "Main results, **two-class** WAF"',
                  [table_output(pd.DataFrame({"judge": ["length", "random"], "waf": [61.25, 49.9]}))]),
        code_cell('#| label: fig-metrics-heatmap\n#| fig-cap: "Heatmap of WAF"\n#| fig-alt: "a heatmap"',
                  [nbformat.v4.new_output("stream", name="stderr", text="a warning\n"), figure_output(png_bytes())]),
        code_cell("#| label: txt-metrics-best", [markdown_output("The best judge is **length** (see @tbl-metrics-main).")]),
    ])
    write(tmp_path / "sections/10_data.qmd", """
        # Data {#sec-data}

        Results are in @tbl-metrics-main and @fig-metrics-heatmap; figure [-@fig-metrics-heatmap] again.

        ```python
        print("@fig-metrics-heatmap stays code")
        ```
    """)
    write(tmp_path / "sections/20_results.qmd", """
        ---
        title: ignored chapter front matter
        ---
        # Results

        {{< embed executed/02_metrics.ipynb#txt-metrics-best >}}

        {{< embed executed/02_metrics.ipynb#fig-metrics-heatmap >}}

        ## Table

        {{< embed executed/02_metrics.ipynb#tbl-metrics-main >}}

        As said in @sec-data.
    """)
    write(tmp_path / "index.qmd", """
        ---
        title: "A study"
        subtitle: "Its subtitle"
        date: 2026-01-02
        chapters:
          - sections/10_data.qmd
          - sections/20_results.qmd
        ---

        <!-- chapters:begin (generated) -->
        <!-- chapters:end -->
    """)
    return tmp_path


def test_the_page_has_title_toc_numbered_sections_and_the_fallback_line(site):
    report.sync_chapters(site / "index.qmd")
    page = report.render(site / "index.qmd").html
    assert '<h1 class="title">A study</h1>' in page
    assert "Its subtitle" in page and "2026-01-02" in page
    assert report.FALLBACK_NOTE in page
    toc = page.split('<nav id="TOC"', 1)[1].split("</nav>", 1)[0]
    assert re.search(r'href="#sec-data"><span class="toc-section-number">1</span> Data<', toc)
    assert re.search(r'<span class="toc-section-number">2\.1</span> Table<', toc)
    assert "ignored chapter front matter" not in page


def test_embeds_become_numbered_captioned_figures_and_tables_in_document_order(site):
    report.sync_chapters(site / "index.qmd")
    rendered = report.render(site / "index.qmd")
    page = rendered.html
    assert rendered.warnings == []
    figure = re.search(r'<figure class="report-figure" id="fig-metrics-heatmap">(.*?)</figure>', page, re.S).group(1)
    payload = re.search(r'src="data:image/png;base64,([^"]+)" alt="a heatmap"', figure).group(1)
    assert Image.open(io.BytesIO(base64.b64decode(payload))).size == (40, 30)
    assert "Figure 1: Heatmap of WAF" in figure
    assert "a warning" not in page  # stderr streams are logs, not report content
    table = re.search(r'<div class="report-table" id="tbl-metrics-main">(.*?)</div>', page, re.S).group(1)
    assert "Table 1: Main results, <strong>two-class</strong> WAF" in table
    assert "<td>61.25</td>" in table
    assert "The best judge is <strong>length</strong>" in page


def test_cross_references_link_to_the_numbered_targets_but_not_inside_code(site):
    report.sync_chapters(site / "index.qmd")
    page = report.render(site / "index.qmd").html
    assert '<a class="xref" href="#tbl-metrics-main">Table\u00a01</a>' in page
    assert '<a class="xref" href="#fig-metrics-heatmap">Figure\u00a01</a>' in page
    assert 'figure <a class="xref" href="#fig-metrics-heatmap">1</a> again' in page
    assert '<a class="xref" href="#sec-data">Section\u00a01</a>' in page
    assert "@fig-metrics-heatmap stays code" in page  # code is shown verbatim


def test_generated_prose_from_a_notebook_can_cross_reference_too(site):
    report.sync_chapters(site / "index.qmd")
    page = report.render(site / "index.qmd").html
    assert 'The best judge is <strong>length</strong> (see <a class="xref" href="#tbl-metrics-main">Table\u00a01</a>)' in page


def test_a_missing_label_is_a_visible_warning_on_stderr_and_fails_strict_mode(site, capsys):
    write(site / "sections/20_results.qmd", """
        # Results

        {{< embed executed/02_metrics.ipynb#fig-does-not-exist >}}

        See @fig-does-not-exist.
    """)
    index = site / "index.qmd"
    out = site / "out.html"
    assert report.main(["--index", str(index), "--out", str(out)]) == 0
    assert report.main(["--index", str(index), "--out", str(out), "--strict"]) == 1
    page = out.read_text()
    assert "no cell labelled &#x27;fig-does-not-exist&#x27; in executed/02_metrics.ipynb" in page
    assert "fig-metrics-heatmap" in page  # the message lists the labels that do exist
    assert '<strong class="xref-missing">?@fig-does-not-exist</strong>' in page
    assert "rendering problem(s)" in page
    assert "fig-does-not-exist" in capsys.readouterr().err


def test_a_missing_notebook_is_named_in_the_warning(site):
    write(site / "sections/20_results.qmd", "{{< embed executed/09_summary.ipynb#txt-summary-abstract >}}\n")
    report.sync_chapters(site / "index.qmd")
    rendered = report.render(site / "index.qmd")
    assert any("executed/09_summary.ipynb not found" in w for w in rendered.warnings)
    assert "executed/09_summary.ipynb not found" in rendered.html


def test_missing_chapters_become_notes_in_index_and_return_once_written(site):
    index = site / "index.qmd"
    (site / "sections/20_results.qmd").unlink()
    assert report.sync_chapters(index) == ["sections/20_results.qmd"]
    text = index.read_text()
    assert "{{< include sections/10_data.qmd >}}" in text
    assert "{{< include sections/20_results.qmd >}}" not in text
    page = report.render(index).html
    assert "Chapter not available in this build" in page and "sections/20_results.qmd" in page
    write(site / "sections/20_results.qmd", "# Results\n")
    assert report.sync_chapters(index) == []
    assert "{{< include sections/20_results.qmd >}}" in index.read_text()
    before = index.stat().st_mtime_ns
    assert report.main(["--index", str(index), "--chapters-only"]) == 0  # Quarto's pre-render step
    assert index.stat().st_mtime_ns == before  # unchanged block: file not rewritten
    assert not (site / "index.html").exists()  # and nothing rendered


def test_an_include_of_a_missing_file_written_by_hand_is_a_visible_note(tmp_path):
    write(tmp_path / "index.qmd", "---\ntitle: T\n---\n\n{{< include sections/nope.qmd >}}\n")
    rendered = report.render(tmp_path / "index.qmd")
    assert "Included file <code>sections/nope.qmd</code> not found" in rendered.html
    assert rendered.warnings


def test_cell_options_are_read_as_yaml_from_the_leading_comment_lines():
    source = '#| label: fig-x\n#| fig-cap: "A: caption"\n#| fig-subcap:\n#|   - one\n#|   - two\nplot()\n#| not: this'
    assert report.cell_options(source) == {"label": "fig-x", "fig-cap": "A: caption", "fig-subcap": ["one", "two"]}
    assert report.cell_options("plot()\n#| label: late") == {}


def test_callouts_and_unnumbered_headings_follow_pandoc_syntax():
    text = ('# Abstract {-}\n\n::: {.callout-note #note-1 title="Read me"}\nSome *text*.\n:::\n\n'
            "# Intro\n\n[small]{.smallcaps}")
    body, headings = report.to_html(text, headings=[])
    assert '<div class="callout callout-note" id="note-1">' in body and "<em>text</em>" in body
    assert "<strong>Read me</strong>" in body
    assert [(h.text, h.number) for h in headings] == [("Abstract", ""), ("Intro", "1")]
    assert '<span class="smallcaps">small</span>' in body


def test_a_missing_index_is_a_clear_error(tmp_path, capsys):
    assert report.main(["--index", str(tmp_path / "index.qmd")]) == 1
    assert "index.qmd not found" in capsys.readouterr().err


def test_a_figure_cell_without_output_is_reported_with_the_likely_cause(tmp_path):
    write_notebook(tmp_path / "executed/nb.ipynb", [code_cell('#| label: fig-empty\n#| fig-cap: "Empty"', [])])
    write(tmp_path / "index.qmd", "---\ntitle: T\n---\n\n{{< embed executed/nb.ipynb#fig-empty >}}\n")
    page = report.render(tmp_path / "index.qmd").html
    assert "the cell has no output" in page and "MPLBACKEND=Agg" in page


# --------------------------------------------------------------------------- the project's own sources

def notebook_labels(notebook: Path) -> set[str]:
    nb = nbformat.read(notebook, as_version=4)
    return {str(report.cell_options(c.source).get("label")) for c in nb.cells if c.cell_type == "code"} - {"None"}


def embeds_of(chapter: Path) -> list[tuple[str, str]]:
    found = re.findall(r"\{\{<\s*embed\s+executed/([\w.-]+\.ipynb)#([\w-]+)", chapter.read_text(encoding="utf-8"))
    return [(nb, label) for nb, label in found]


def test_quarto_renders_the_article_into_reports_without_executing_notebooks():
    config = yaml.safe_load((paths.project_root() / "_quarto.yml").read_text())
    assert config["project"]["render"] == ["reports/index.qmd"]  # -> reports/index.html
    assert config["execute"]["enabled"] is False
    assert "helpers.report --chapters-only" in config["project"]["pre-render"]
    meta, body = report.split_front_matter((paths.reports_dir() / "index.qmd").read_text())
    assert [Path(c).stem for c in meta["chapters"]] == [
        "00_abstract", "05_introduction", "07_related", "10_data", "15_judges", "20_results", "25_confound",
        "27_reward_models", "28_probes", "50_ranking",
        "80_discussion", "95_appendix"]
    assert report.CHAPTERS_BEGIN in body and report.CHAPTERS_END in body


def test_no_table_or_figure_is_embedded_twice_and_the_abstract_is_prose_with_var_shortcodes():
    sections = paths.reports_dir() / "sections"
    embeds = [e for chapter in sorted(sections.glob("*.qmd")) for e in embeds_of(chapter)]
    assert embeds and len(embeds) == len(set(embeds)), "an output is embedded twice"
    abstract = (sections / "00_abstract.qmd").read_text(encoding="utf-8")
    assert not embeds_of(sections / "00_abstract.qmd") and "{{< var judges.length.value >}}" in abstract


def test_every_chapter_embeds_labels_that_exist_in_its_notebook_source():
    """Catches a renamed label before a build shows it as a rendering problem; chapters whose
    notebook is not written yet are skipped here (the report shows a note for them)."""
    root = paths.project_root()
    problems = []
    for chapter in sorted((root / "reports" / "sections").glob("*.qmd")):
        for notebook, label in embeds_of(chapter):
            source = root / "notebooks" / notebook
            if source.is_file() and label not in notebook_labels(source):
                problems.append(f"{chapter.name}: {notebook}#{label}")
    assert not problems, "embeds of labels that no cell defines: " + ", ".join(problems)


# --------------------------------------------------------------------------- pandoc renders the rest


def cells_text(styled_html: str) -> list[list[str]]:
    """The rows of an HTML table as lists of cell HTML (header row first)."""
    rows = re.findall(r"<tr>(.*?)</tr>", styled_html, flags=re.S)
    return [[c.strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, flags=re.S)] for row in rows]


def test_show_hides_the_index_shows_missing_values_as_a_dash_and_renders_subscripts():
    frame = pd.DataFrame({"judge": ["length", "len~a~ − len~b~", None], "two_class_waf": [61.254, float("nan"), 50.0],
                          "pairs": [574, 563, 11]}, index=[7, 3, 9])
    rows = cells_text(report.show(frame).to_html())
    assert rows[0] == ["Judge", "2-class WAF", "Pairs"]  # no index column; headers in words
    assert rows[1] == ["length", "61.25", "574"]
    assert rows[2] == ["len<sub>a</sub> − len<sub>b</sub>", "—", "563"]
    assert rows[3] == ["—", "50.00", "11"]


def test_show_keeps_a_mean_with_its_spread_and_an_interval_on_one_line():
    """ "79.75 ± 0.00" or "[76.11, 83.07]" never breaks inside a narrow column; long text still wraps."""
    table = pd.DataFrame({"2-class WAF": ["79.75 ± 0.00", "53.00 ± 1.32"], "95% CI": ["[76.11, 83.07]", "[49.02, 56.65]"],
                          "note": ["a long sentence that may wrap", "another"]})
    rules = [rule for rule in report.show(table).to_html().split("}") if "white-space: nowrap" in rule]
    columns = sorted(re.search(r"\.col(\d+)", rule).group(1) for rule in rules)
    assert columns == ["0", "1"]


def test_show_keeps_a_named_index_as_columns_and_escapes_html():
    frame = pd.DataFrame({"rating": [1000.0, 768.4], "comparisons": [574.0, float("nan")]},
                         index=pd.Index(["<mask>", "merrfine"], name="system"))
    rows = cells_text(report.show(frame, digits={"rating": 1}).to_html())
    assert rows[0] == ["system", "rating", "comparisons"]
    assert rows[1] == ["&lt;mask&gt;", "1000.0", "574"]  # whole-number floats shown as counts
    assert rows[2] == ["merrfine", "768.4", "—"]


def test_show_with_intervals_sets_each_estimate_over_its_bounds_in_one_column():
    frame = pd.DataFrame({"judge": ["length", "random"], "two_class_waf_std": [0.5, 0.25],
                          "two_class_waf_lo": [75.941, 46.7], "two_class_waf_hi": [82.96, 52.56],
                          "len_balanced_acc": [50.0, 47.62], "len_balanced_lo": [49.14, None],
                          "len_balanced_hi": [50.86, None]})
    rows = cells_text(report.show(frame, intervals=True).to_html())
    # a std column is not an estimate: its neighbours stay separate columns
    assert rows[0] == ["Judge", "two class waf std", "2-class WAF, 95% CI low", "2-class WAF, 95% CI high",
                       "Length-balanced accuracy"]
    assert rows[1][1:4] == ["0.50", "75.94", "82.96"]
    assert rows[1][4] == '50.00<br><span class="ci">[49.14, 50.86]</span>'
    assert rows[2][4] == "47.62"  # no bounds: the estimate alone


@pytest.fixture
def tables_site(tmp_path: Path) -> Path:
    """A chapter with two figures and two tables (one shown with report.show), referenced
    before and after they appear, a section reference forward and back, and a subscript."""
    shown = report.show(pd.DataFrame({"judge": ["length", "random"], "len~a~ coefficient": [1.4123, None]}))
    write_notebook(tmp_path / "executed/06_confound.ipynb", [
        code_cell('#| label: fig-a\n#| fig-cap: "First."', [figure_output(png_bytes())]),
        code_cell('#| label: tbl-a\n#| tbl-cap: "First table, as in @fig-b."',
                  [nbformat.v4.new_output("execute_result", execution_count=1,
                                          data={"text/html": shown.to_html(), "text/plain": "<Styler>"})]),
        code_cell('#| label: fig-b\n#| fig-cap: "Second."', [figure_output(png_bytes((0, 90, 0)))]),
        code_cell('#| label: tbl-b\n#| tbl-cap: "Second table."', [table_output(pd.DataFrame({"x": [1]}))]),
    ])
    write(tmp_path / "index.qmd", """
        ---
        title: T
        ---

        ## Abstract {.unnumbered}

        See @sec-results for @fig-b and @tbl-b, and [-@tbl-a] for len~a~.

        ## Data {#sec-data}

        {{< embed executed/06_confound.ipynb#fig-a >}}

        {{< embed executed/06_confound.ipynb#tbl-a >}}

        ### Detail {#sec-detail}

        ::: {.callout-note}
        A note without a title.
        :::

        ## Results {#sec-results}

        {{< embed executed/06_confound.ipynb#fig-b >}}

        {{< embed executed/06_confound.ipynb#tbl-b >}}

        Back to @sec-data and @sec-detail.
    """)
    return tmp_path


def test_cross_references_are_numbered_in_document_order_as_quarto_numbers_them(tables_site):
    rendered = report.render(tables_site / "index.qmd")
    page = rendered.html
    assert rendered.warnings == []
    link = '<a class="xref" href="#{}">{}</a>'
    assert link.format("fig-b", "Figure\u00a02") in page and link.format("tbl-b", "Table\u00a02") in page
    assert link.format("tbl-a", "1") in page  # [-@tbl-a]: the number alone
    assert "Figure 1: First." in page and "Figure 2: Second." in page
    assert "Table 1: First table, as in " + link.format("fig-b", "Figure\u00a02") in page  # refs in captions
    assert page.index('id="fig-a"') < page.index('id="tbl-a"') < page.index('id="fig-b"')


def test_section_references_carry_the_numbers_pandoc_gives_the_headings(tables_site):
    page = report.render(tables_site / "index.qmd").html
    numbers = dict(re.findall(r'<h\d data-number="([\d.]+)" id="(sec-[\w-]+)"', page))
    numbers = {label: number for number, label in numbers.items()}
    assert numbers == {"sec-data": "1", "sec-detail": "1.1", "sec-results": "2"}  # the abstract is unnumbered
    for label, number in numbers.items():
        assert f'<a class="xref" href="#{label}">Section\u00a0{number}</a>' in page


def test_embedded_show_tables_have_no_index_a_dash_for_missing_and_subscripts(tables_site):
    page = report.render(tables_site / "index.qmd").html
    table = page.split('id="tbl-a"', 1)[1].split("</table>", 1)[0]
    rows = cells_text(table)
    assert rows[0] == ["Judge", "len<sub>a</sub> coefficient"]
    assert rows[1:] == [["length", "1.41"], ["random", "—"]]
    assert "len<sub>a</sub>" in page.split('id="abstract"', 1)[1].split("</p>", 1)[0]  # prose subscript by pandoc


def test_callouts_get_quartos_default_title_and_a_visible_style(tables_site):
    page = report.render(tables_site / "index.qmd").html
    callout = page.split('<div class="callout callout-note">', 1)[1].split("</div>", 1)[0]
    assert "<strong>Note</strong>" in callout and "A note without a title." in callout
    assert re.search(r"\.callout\s*\{[^}]*border-left", page), "the callout box style is not in the page"


def test_the_page_is_self_contained(tables_site):
    page = report.render(tables_site / "index.qmd").html
    assert "<link" not in page and 'rel="stylesheet"' not in page  # the CSS is inlined
    sources = re.findall(r'<img[^>]* src="([^"]+)"', page)
    assert len(sources) == 2 and all(s.startswith("data:image/png;base64,") for s in sources)


def test_without_pandoc_the_error_says_how_to_get_it(site, monkeypatch, capsys):
    def no_pandoc():
        raise OSError("No pandoc was found")

    monkeypatch.setattr(report.render.__globals__["pypandoc"], "get_pandoc_path", no_pandoc)
    assert report.main(["--index", str(site / "index.qmd"), "--out", str(site / "out.html")]) == 1
    assert "pip install pypandoc-binary" in capsys.readouterr().err


@pytest.mark.slow
def test_python_dash_m_helpers_report_runs_the_cli(site):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "helpers.report", "--index", str(site / "index.qmd"),
                           "--chapters-only"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "{{< include sections/20_results.qmd >}}" in (site / "index.qmd").read_text()
