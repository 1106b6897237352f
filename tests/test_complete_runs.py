"""What the report renders from: complete runs only (a run still writing, or one that failed, is in
no chapter and is named on the page), and executed notebooks that still match their code (one
older than its source notebook or a helpers module it imports is named on the page and on stderr)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
import pytest

from helpers import data, paths
from helpers.report import chapters, freshness
from helpers.report.render import main, render
from helpers.report.setup import setup
from helpers.run import engine, results
from helpers.run.store import RunSession, now, prediction_row

needs_data = pytest.mark.skipif(not os.environ.get(data.DATA_ENV), reason=f"${data.DATA_ENV} not set")


def writer(store: Path, judge: str, rows: int, names: list[str] | None = None) -> RunSession:
    """A run folder as its writer leaves it mid-run: session started (status ``running``), ``rows``
    verdicts stored, not closed. The caller closes it (or fails it)."""
    run_id = f"{judge}__cpu__text__emoprefer"
    session = RunSession(run_id, store, identity={"judge": judge}).open()
    session.start({"judge": judge, "strategy": "-", "input_type": "text", "dataset": "emoprefer"})
    names = names or data.load_pairs()["name"].head(rows)
    session.append(prediction_row(judge=judge, strategy="-", input_type="text", order="normal", round=0, name=n,
                                  gt=None, pred="a1", parse_rule=None, raw="a1", run_id=run_id,
                                  dataset="emoprefer", created_at=now()) for n in names)
    return session


@needs_data
def test_a_run_still_writing_or_failed_is_in_no_chapter_and_is_listed_with_its_status(tmp_path):
    """Observed: make report during a run used its partial rows in confound_length (28 pairs) and
    summary_judges (252 rows) but not in metrics.csv."""
    store, reports = tmp_path / "store", tmp_path / "reports"
    engine.run("length", rounds=1, output_dir=store, progress=False)  # complete
    running = writer(store, "random", 28)  # still open: a report built now sees it mid-run
    failed = writer(store, "bt", 12)
    failed.fail(RuntimeError("endpoint exploded"))
    failed.store.close()
    try:
        left = results.left_out_runs(store)
        assert left.values.tolist() == [["bt__cpu__text__emoprefer", "failed", 12],
                                        ["random__cpu__text__emoprefer", "running", 28]]
        # the analysis notebooks' one loader (02-06)
        with pytest.warns(UserWarning, match=r"2 run\(s\) left out.*random__cpu__text__emoprefer \(running, 28 rows\)"):
            ctx = setup(store, reports)
        assert set(ctx.predictions["judge"]) == {"length"}
        assert set(results.load_predictions(store)["run_id"]) == {"length__cpu__text__emoprefer"}
        # where each cell came from (metrics.csv, the confound table)
        assert set(chapters.run_sources(store)["judge"]) == {"length"}
        # the summary (09): its judges table, its limitations and the note that opens the results chapter
        context = chapters.collect(setup(store, reports, predictions=False))
        assert set(context.overview["judge"]) == {"length"}
        assert chapters.judges_table(context).set_index("judge").loc["random", "status"] == "registered, not run here"
        status = chapters.build_table(context).set_index("key").loc["left_out", "status"]
        assert "random__cpu__text__emoprefer (running, 28 rows stored)" in status
        assert "bt__cpu__text__emoprefer (failed, 12 rows stored)" in status
        # the results chapter opens by quoting that status
        chapter = (paths.project_root() / "reports" / "sections" / "20_results.qmd").read_text(encoding="utf-8")
        assert "{{< var build.left_out >}}" in chapter.split("\n\n", 2)[1]
        # the runs table still lists every folder, with its status
        assert set(chapters.runs_table(context)["status"]) == {"complete", "running", "failed: RuntimeError"}
    finally:
        running.store.close()


def test_a_store_of_complete_runs_says_so(tmp_path):
    store = tmp_path / "store"
    session = writer(store, "length", 2, names=["s1", "s2"])
    session.close()
    session.store.close()
    context = chapters.Context(dataset="emoprefer", reports_dir=tmp_path, predictions_dir=store, registry=None,
                               overview=None, metrics=None, paper=None, prompts=None,
                               manifests=chapters.read_manifests(store), left_out=results.left_out_runs(store))
    assert results.run_statuses(store).values.tolist() == [["length__cpu__text__emoprefer", "complete"]]
    assert context.left_out.empty
    assert chapters.left_out_listing(context) == []


# --------------------------------------------------------------------------- stale executed notebooks


def notebook(path: Path, code: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)]), path)
    return path


def age(path: Path, seconds: float) -> None:
    """Set ``path``'s modification time ``seconds`` into the past."""
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))


def test_an_executed_notebook_older_than_its_source_is_named(tmp_path):
    sources, executed = tmp_path / "notebooks", tmp_path / "reports" / "executed"
    source = notebook(sources / "02_metrics.ipynb", "x = 1")
    run = notebook(executed / "02_metrics.ipynb", "x = 1")
    fresh = notebook(executed / "03_consistency.ipynb", "x = 1")
    notebook(sources / "03_consistency.ipynb", "x = 1")
    age(sources / "03_consistency.ipynb", 120)
    assert freshness.stale_notebooks(executed, sources) == []
    age(run, 60)  # executed a minute ago; the source edited since
    age(fresh, 0)
    (message,) = freshness.stale_notebooks(executed, sources)
    assert message.startswith("02_metrics.ipynb is stale: executed ")
    assert str(source) in message and "Re-run make report" in message


def test_an_executed_notebook_older_than_a_helper_it_imports_even_indirectly_is_named(tmp_path):
    sources, executed = tmp_path / "notebooks", tmp_path / "reports" / "executed"
    notebook(sources / "06_confound.ipynb", "from helpers.report.setup import setup")
    notebook(executed / "06_confound.ipynb", "")
    for path in (sources / "06_confound.ipynb", executed / "06_confound.ipynb"):
        age(path, 0)
    # setup imports helpers.run.results, which imports helpers.stats.metrics: all on the notebook's path
    deps = freshness.helper_files("from helpers.report.setup import setup")
    package = Path(freshness.PACKAGE)
    assert {package / "report/setup.py", package / "run/results.py", package / "stats/metrics.py",
            package / "__init__.py"} <= deps
    assert package / "tournament/rank.py" not in deps
    age(executed / "06_confound.ipynb", 10 ** 8)  # executed long before the helpers were last written
    (message,) = freshness.stale_notebooks(executed, sources)
    assert message.startswith("06_confound.ipynb is stale") and "src/helpers/" in message


def test_the_page_and_stderr_name_a_stale_notebook(tmp_path, monkeypatch, capsys):
    site = tmp_path / "project"
    (site / "params").mkdir(parents=True)
    (site / "pyproject.toml").write_text("")
    monkeypatch.setenv("EMOPREFER_ROOT", str(site))
    notebook(site / "notebooks" / "02_metrics.ipynb", "x = 2")
    run = notebook(site / "reports" / "executed" / "02_metrics.ipynb", "#| label: txt-x\nprint('old')")
    nb = nbformat.read(run, as_version=4)
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="old\n")]
    nbformat.write(nb, run)
    age(run, 3600)
    index = site / "reports" / "index.qmd"
    index.write_text("---\ntitle: T\n---\n\n{{< embed executed/02_metrics.ipynb#txt-x >}}\n")
    assert paths.project_root() == site
    page = render(index)
    assert [w for w in page.warnings if "stale" in w] == [page.warnings[0]]
    assert page.warnings[0].startswith("02_metrics.ipynb is stale: executed ")
    box = page.html.index('class="callout callout-warning render-warnings"')  # the box atop the page
    assert box < page.html.index("02_metrics.ipynb is stale") < page.html.index("old")
    out = tmp_path / "out.html"
    assert main(["--index", str(index), "--out", str(out), "--strict"]) == 1
    assert "warning: 02_metrics.ipynb is stale" in capsys.readouterr().err
    assert main(["--index", str(index), "--chapters-only"]) == 0  # quarto's pre-render step prints it too
    assert "warning: 02_metrics.ipynb is stale" in capsys.readouterr().err
    age(site / "notebooks" / "02_metrics.ipynb", 7200)  # the source is older than the execution: quiet
    assert not any("stale" in w for w in render(index).warnings)
