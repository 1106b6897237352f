"""The rendered report, opened in a real browser (headless Chromium), looks like the paper it is.

Two pages. A small synthetic build: simulated CPU-judge predictions in a temporary store, the real
summary notebook (09_summary) executed on them by papermill (it writes ``_variables.yml``), a
synthetic executed results notebook with a PNG figure and a DataFrame table, and chapters that
quote the summary's numbers through Quarto's var shortcode; the offline renderer turns it into
one page. And the study's own page, ``reports/index.html`` as ``make report`` built it (skipped,
with the reason, where it has not been built): measured at a desktop width (1280 px) and a phone
width (390 px) by a script injected into a copy of the page, and photographed into
``reports/screenshots/`` (git-ignored) so a person can look at what a reader sees first.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import matplotlib
import nbformat
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import f1_score
from synthetic import synthetic_predictions, write_predictions

from helpers import paths, report
from helpers.run.store import row_key

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

pytestmark = pytest.mark.slow

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic", "--hide-scrollbars"]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def run_browser(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    browser = chromium()
    assert browser
    return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def two_class_waf(frame: pd.DataFrame) -> float:
    """The paper's two-class WAF (gt 'same' dropped, predicted 'same' counted as a1), in percent."""
    decided = frame[frame["gt"] != "same"]
    return 100 * f1_score(decided["gt"], decided["pred"].replace("same", "a1"), average="weighted")


def synthetic_metrics(predictions: pd.DataFrame) -> pd.DataFrame:
    """A metrics.csv-shaped table (the columns the summary reads) from normal-order predictions."""
    rows = []
    normal = predictions[predictions["order"] == "normal"]
    for (judge, strategy, input_type), runs in normal.groupby(["judge", "strategy", "input_type"]):
        per_round = [two_class_waf(r) for _, r in runs.groupby("round")]
        rows.append({"judge": judge, "strategy": strategy, "input_type": input_type, "rounds": len(per_round),
                     "two_class_waf": np.mean(per_round), "two_class_waf_std": np.std(per_round),
                     "two_class_waf_lo": min(per_round) - 2, "two_class_waf_hi": max(per_round) + 2})
    return pd.DataFrame(rows)


def results_notebook(path: Path, metrics: pd.DataFrame) -> None:
    """An executed notebook like the analysis members': a labelled PNG figure and a table."""
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(metrics["judge"], metrics["two_class_waf"], color=["#1f4e79", "#d99a00"][: len(metrics)])
    ax.set_ylabel("two-class WAF (%)")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    figure = nbformat.v4.new_code_cell('#| label: fig-results-bars\n#| fig-cap: "Two-class WAF by judge."\nplot()')
    figure.outputs = [nbformat.v4.new_output("display_data", data={
        "image/png": base64.b64encode(buffer.getvalue()).decode(), "text/plain": "<Figure>"})]
    table = nbformat.v4.new_code_cell('#| label: tbl-results-main\n#| tbl-cap: "Main results."\nmetrics')
    table.outputs = [nbformat.v4.new_output("execute_result", execution_count=1, data={
        "text/html": metrics.round(2).to_html(index=False), "text/plain": metrics.to_string()})]
    nb = nbformat.v4.new_notebook()
    nb.cells = [figure, table]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def built_report(tmp_path_factory) -> Path:
    """Build the synthetic report with the offline renderer; returns the page's path."""
    if not chromium():
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium); the browser check needs it")
    root = tmp_path_factory.mktemp("browser")
    reports, store = root / "reports", root / "predictions"
    predictions = synthetic_predictions(n_pairs=60, judges={"length": 0.78, "random": 0.5}, rounds=2, seed=1)
    for judge, rows in predictions.groupby("judge"):
        run_id = f"{judge}__cpu__text__emoprefer"
        keys = [row_key(r.strategy, r.order, int(r.round), str(r.name)) for r in rows.itertuples()]
        write_predictions(rows.assign(run_id=run_id, key=keys), store, run_id)  # every reader checks the key
        (store / run_id / "manifest.json").write_text(f'{{"judge": "{judge}", "rounds": 2}}')
    metrics = synthetic_metrics(predictions)
    (reports / "tables").mkdir(parents=True)
    metrics.to_csv(reports / "tables" / "metrics.csv", index=False)
    results_notebook(reports / "executed" / "02_metrics.ipynb", metrics)

    (reports / "sections").mkdir()
    (reports / "index.qmd").write_text(textwrap.dedent("""\
        ---
        title: "A synthetic study"
        chapters:
          - sections/00_abstract.qmd
          - sections/20_results.qmd
          - sections/30_missing.qmd
        ---

        <!-- chapters:begin -->
        <!-- chapters:end -->
    """))
    (reports / "sections" / "00_abstract.qmd").write_text(textwrap.dedent("""
        ## Abstract {.unnumbered}

        The best of {{< var judges.count >}} judges is the {{< var judges.best.name >}}, at a two-class
        WAF of {{< var judges.best.value >}} (95% CI {{< var judges.best.lo >}}–{{< var judges.best.hi >}}).
    """))
    (reports / "sections" / "20_results.qmd").write_text(textwrap.dedent("""
        ## Results {#sec-results}

        @fig-results-bars shows the judges; @tbl-results-main gives the numbers.

        {{< embed executed/02_metrics.ipynb#fig-results-bars >}}

        {{< embed executed/02_metrics.ipynb#tbl-results-main >}}
    """))

    data_dir = os.environ.get("EMOPREFER_DATA") or str(root / "no-data")  # never download in tests
    done = subprocess.run(
        [str(Path(os.sys.executable)), "-m", "papermill", "--log-level", "WARNING", "--cwd",
         str(paths.project_root() / "notebooks"), str(paths.project_root() / "notebooks" / "09_summary.ipynb"),
         str(reports / "executed" / "09_summary.ipynb"), "-p", "predictions_dir", str(store),
         "-p", "reports_dir", str(reports), "-p", "data_dir", data_dir],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = root / "site" / "index.html"
    assert report.main(["--index", str(reports / "index.qmd"), "--out", str(out), "--strict"]) == 0
    return out


class PageParser(HTMLParser):
    """Images, headings and their text from the DOM Chromium dumps after loading the page."""

    def __init__(self):
        super().__init__()
        self.images: list[str] = []
        self.headings: list[str] = []
        self._heading: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs).get("src", ""))
        if tag in ("h1", "h2", "h3"):
            self._heading = []

    def handle_endtag(self, tag):
        if tag in ("h1", "h2", "h3") and self._heading is not None:
            self.headings.append(" ".join("".join(self._heading).split()))
            self._heading = None

    def handle_data(self, data):
        if self._heading is not None:
            self._heading.append(data)


def image_bytes(src: str, page: Path) -> bytes:
    if src.startswith("data:"):
        return base64.b64decode(src.split(",", 1)[1])
    path = (page.parent / src).resolve()
    assert path.is_file(), f"image {src} referenced by the page does not exist"
    return path.read_bytes()


def test_the_page_loads_in_chromium_with_its_sections_and_decodable_images(built_report, tmp_path):
    done = run_browser(["--dump-dom", built_report.as_uri()], tmp_path / "profile")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert "</html>" in dom and report.FALLBACK_NOTE in dom
    parsed = PageParser()
    parsed.feed(dom)
    headings = parsed.headings
    for expected in ("Contents", "Abstract", "Results"):
        assert any(h.endswith(expected) for h in headings), f"heading {expected!r} missing from {headings}"
    assert re.search(r"<figcaption>Figure 1: Two-class WAF by judge\.</figcaption>", dom)
    assert re.search(r"Table \d+: Main results\.", dom)
    assert "Chapter not available in this build" in dom  # chapters this setup lacks are announced
    assert parsed.images, "the page shows no image"
    for src in parsed.images:
        with Image.open(io.BytesIO(image_bytes(src, built_report))) as image:
            image.load()
            assert image.width > 10 and image.height > 10


def test_the_abstract_quotes_the_numbers_this_build_computed(built_report, tmp_path):
    """Notebook 09 wrote _variables.yml from metrics.csv; the renderer put its values in the prose."""
    metrics = pd.read_csv(built_report.parent.parent / "reports" / "tables" / "metrics.csv")
    page = built_report.read_text()
    abstract = page.split('id="abstract"', 1)[1].split("<h2", 1)[0]
    best = metrics.sort_values("two_class_waf", ascending=False).iloc[0]
    assert best["judge"] == "length"  # the simulated length judge is the most accurate here
    assert (f"The best of 2 judges is the Longer-text rule, at a two-class WAF of {best['two_class_waf']:.2f} "
            f"(95% CI {best['two_class_waf_lo']:.2f}–{best['two_class_waf_hi']:.2f})") in " ".join(abstract.split())
    assert "?var:" not in page


def test_a_screenshot_of_the_page_is_written_and_not_blank(built_report, tmp_path):
    shot = tmp_path / "report.png"
    done = run_browser(["--window-size=1280,1800", f"--screenshot={shot}", built_report.as_uri()], tmp_path / "profile")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (1800, 1280)
    assert pixels.std() > 10, "the screenshot is blank"
    assert (pixels < 100).mean() > 0.005, "no dark text on the page"
    if os.environ.get("REPORT_SCREENSHOT"):
        shutil.copy(shot, os.environ["REPORT_SCREENSHOT"])


# --------------------------------------------------------------------------- the study's own page

MEASURE = """
<script>
window.addEventListener('load', () => {
  const appendix = document.getElementById('sec-appendix');
  const main = el => !appendix || (appendix.compareDocumentPosition(el) & Node.DOCUMENT_POSITION_PRECEDING
                                   && !appendix.contains(el));
  const article = document.querySelector('main.article') || document.body;
  const width = article.getBoundingClientRect().width;
  const tables = [...document.querySelectorAll('.report-table')].map(box => {
    const scroller = box.querySelector('.cell-html') || box;
    const table = box.querySelector('table');
    const caption = box.querySelector('.table-caption');
    return {id: box.id, main: main(box), box_width: scroller.getBoundingClientRect().width,
            box_right: scroller.getBoundingClientRect().right, scroll_width: scroller.scrollWidth,
            client_width: scroller.clientWidth, overflow: getComputedStyle(scroller).overflowX,
            rows: table ? table.querySelectorAll('tbody tr').length : 0,
            cells: table ? table.querySelectorAll('tbody td').length : 0,
            headers: table ? [...table.querySelectorAll('th')].map(th => th.innerText) : [],
            caption: caption ? caption.innerText : ''};
  });
  const figures = [...document.querySelectorAll('figure.report-figure')].map(f => ({
    id: f.id, main: main(f), caption: (f.querySelector('figcaption') || {}).innerText || '',
    img_width: (f.querySelector('img') || {}).clientWidth || 0,
    img_natural: (f.querySelector('img') || {}).naturalWidth || 0}));
  const abstract = document.getElementById('abstract');
  let abstractText = '';
  if (abstract) {
    const section = abstract.tagName === 'SECTION' ? abstract : null;
    if (section) abstractText = section.innerText;
    else { let el = abstract.nextElementSibling;
           while (el && !/^H[12]$/.test(el.tagName)) { abstractText += el.innerText + ' '; el = el.nextElementSibling; } }
  }
  const title = document.querySelector('h1.title');
  const out = {viewport: window.innerWidth, article_width: width, page_scroll_width: document.documentElement.scrollWidth,
               text: document.body.innerText, tables, figures, abstract: abstractText,
               headings: [...document.querySelectorAll('h1, h2, h3')].map(h => h.innerText),
               title_bottom: title ? title.getBoundingClientRect().bottom : -1};
  if (window.parent !== window) window.parent.postMessage(JSON.stringify(out), '*');
});
</script>
"""
# Headless Chromium will not make a window narrower than 500 px, so a phone's width is an
# iframe of that width inside a wider window; the page inside it lays out as on the phone.
FRAME = """<!doctype html><html><body style="margin:0">
<iframe src="{src}" style="border:0;width:{width}px;height:{height}px;display:block"></iframe>
<script>window.addEventListener('message', e => {{
  const pre = document.createElement('pre'); pre.id = 'measured'; pre.textContent = e.data; document.body.appendChild(pre);
}});</script></body></html>"""
HEIGHT = 900


def framed(folder: Path, page: Path, width: int, anchor: str = "") -> Path:
    """A window-sized page that shows ``page`` (at ``#anchor``) in an iframe ``width`` px wide."""
    wrapper = folder / f"frame-{width}-{anchor or 'top'}.html"
    wrapper.write_text(FRAME.format(src=page.as_uri() + (f"#{anchor}" if anchor else ""), width=width, height=HEIGHT))
    return wrapper
WIDTHS = (1280, 390)
SHOTS = {"abstract": "", "results": "tbl-results-main", "confound": "fig-confound-plane"}  # "": the top
SNAKE = re.compile(r"\b[a-z0-9]+_[a-z0-9_]+\b")


@pytest.fixture(scope="module")
def study_page() -> Path:
    page = paths.reports_dir() / "index.html"
    if not chromium():
        pytest.skip("chromium is not installed (make chromium); the browser check needs it")
    if not page.is_file():
        pytest.skip("reports/index.html has not been built (make report); nothing to measure")
    return page


@pytest.fixture(scope="module")
def measured(study_page, tmp_path_factory) -> dict[int, dict]:
    """What the page shows at each width, measured inside Chromium after layout."""
    folder = tmp_path_factory.mktemp("measure")
    copy = folder / "index.html"
    copy.write_text(study_page.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    out = {}
    for width in WIDTHS:
        window = f"--window-size={max(width, 500)},{HEIGHT}"
        done = run_browser([window, "--virtual-time-budget=8000", "--dump-dom", framed(folder, copy, width).as_uri()],
                           folder / f"profile{width}")
        assert done.returncode == 0, done.stderr[-2000:]
        found = re.search(r'<pre id="measured">(.*?)</pre>', done.stdout, flags=re.S)
        assert found, "the measuring script did not run"
        out[width] = json.loads(html_unescape(found.group(1)))
        assert out[width]["viewport"] == width
    return out


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)


def variables() -> dict:
    import yaml

    return yaml.safe_load((paths.project_root() / "_variables.yml").read_text(encoding="utf-8"))


def main_text(page: dict) -> tuple[list[dict], list[dict]]:
    return [t for t in page["tables"] if t["main"]], [f for f in page["figures"] if f["main"]]


@pytest.mark.parametrize("width", WIDTHS)
def test_main_text_tables_fit_the_column_at_1280_and_scroll_in_their_own_box_at_390(measured, width):
    page = measured[width]
    tables, _ = main_text(page)
    assert tables, "no table in the main text"
    assert page["page_scroll_width"] <= width, "the page itself scrolls sideways"
    for table in tables:
        assert table["box_width"] <= page["article_width"] + 1, f"{table['id']} is wider than the text column"
        assert table["box_right"] <= width + 1, f"{table['id']} runs off the screen"
        if width >= 1280:
            assert table["scroll_width"] <= table["client_width"] + 1, \
                f"{table['id']} hides {table['scroll_width'] - table['client_width']} px behind a scroll"
        else:
            assert table["overflow"] in ("auto", "scroll"), f"{table['id']} cannot scroll in its own box"


@pytest.mark.parametrize("width", WIDTHS)
def test_no_unresolved_reference_no_empty_table_no_code_names_in_main_headers_and_captions(measured, width):
    page = measured[width]
    assert "??" not in page["text"] and "?var:" not in page["text"] and "?@" not in page["text"]
    assert "Rendering problem" not in page["text"]
    for table in page["tables"]:
        assert table["rows"] and table["cells"], f"{table['id']} is an empty table"
    tables, figures = main_text(page)
    for what in [*(t["caption"] for t in tables), *(h for t in tables for h in t["headers"]),
                 *(f["caption"] for f in figures), *page["headings"]]:
        assert not SNAKE.search(what), f"code name in {what!r}"
        assert "(s)" not in what, f"'(s)' in {what!r}"


def test_at_most_eight_tables_and_eight_figures_before_the_appendix_and_a_conclusion(measured):
    page = measured[1280]
    tables, figures = main_text(page)
    assert len(tables) <= 8 and len(figures) <= 8, (len(tables), len(figures))
    assert any(h.strip().endswith("Conclusion") for h in page["headings"])
    assert any(h.strip().endswith("Appendix") for h in page["headings"])
    for figure in figures:  # drawn for the width it is shown at: not shrunk to less than half (tick labels stay legible)
        assert figure["img_natural"] and figure["img_width"] >= 0.5 * figure["img_natural"], figure["id"]


def test_the_abstract_holds_the_headline_numbers_and_the_title_is_on_a_phones_first_screen(measured):
    values = variables()
    abstract = " ".join(measured[1280]["abstract"].split())
    for number in (values["judges"]["length"]["value"], values["judges"]["length"]["lo"],
                   values["judges"]["length"]["hi"], values["paper"]["best"]["value"],
                   values["data"]["longer_preferred"]["value"], values["judges"]["balanced"]["value"]):
        assert number in abstract, f"{number} missing from the abstract"
    assert 0 < measured[390]["title_bottom"] < HEIGHT


def test_screenshots_of_the_abstract_the_main_table_and_the_confound_figure(study_page, tmp_path):
    folder = paths.reports_dir() / "screenshots"
    folder.mkdir(exist_ok=True)
    for width in WIDTHS:
        for name, anchor in SHOTS.items():
            shot = folder / f"{name}_{width}.png"
            done = run_browser([f"--window-size={max(width, 500)},{HEIGHT}", "--virtual-time-budget=5000",
                                f"--screenshot={shot}", framed(tmp_path, study_page, width, anchor).as_uri()],
                               tmp_path / f"profile-{name}-{width}")
            assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
            with Image.open(shot) as image:
                image.crop((0, 0, width, HEIGHT)).save(shot)
            pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
            assert pixels.shape == (HEIGHT, width) and pixels.std() > 10, f"{shot} is blank"


def test_the_page_calls_v1s_labels_unanimous_and_states_the_human_agreement_once_with_its_meaning(measured):
    """v1 kept only the pairs all annotators agreed on: the page says "unanimous", never calls the
    labels a majority ("majority" only for votes of judges), and gives the paper's agreement between
    annotators as it is: 69.31 on two classes and 59.23 with ties, each once, with that meaning."""
    text = " ".join(measured[1280]["text"].split())
    assert "unanimous" in text
    for match in re.finditer(r"majority", text, flags=re.I):
        around = text[max(0, match.start() - 100):match.end() + 100]
        assert re.search(r"vote|voting|top-k", around, flags=re.I), f"'majority' describes the labels: {around!r}"
    human = variables()["paper"]["human"]
    for value, meaning in ((human["two_class"], "two classes"), (human["with_ties"], "with ties")):
        places = [m.start() for m in re.finditer(rf"(?<![\d.]){re.escape(value)}(?![\d])", text)]
        assert len(places) == 1, f"{value} appears {len(places)} times; it has one meaning and is stated once"
        around = text[max(0, places[0] - 200):places[0] + 80]
        assert "agreement between annotators" in around and meaning in around, around
