"""The report wing: what the analysis notebooks open with, what their chapters say, how their
results are shown, and the offline twin of ``quarto render``. The last step of the data flow
(data -> judges -> run -> stats -> report): it reads the predictions store and ``params/``,
calls ``helpers.stats`` for every number, and computes none itself.

- ``setup``: the one notebook preamble (``setup(...)``: folders, the predictions of one dataset,
  the "run the judges first" stop), which hands the notebooks the paper's reported results
  as read by their one reader, ``helpers.reported.paper_results()``.
- ``chapters``: the prose and the chapter logic — tables assembled from computed numbers, the
  sentences that quote them, the summary notebook's judges, build gaps and provenance.
- ``plots``: one function per figure kind (saved as PNG, shown whatever the backend).
- ``tables``: ``show``, the one way a notebook displays a table, so Quarto and the fallback show
  the same thing.
- ``names``: the names a reader sees (judges, writers, columns; p-values as "< 0.001").
- ``variables``: the numbers the prose quotes. Notebook 09 writes them from ``reports/tables`` into
  ``_variables.yml`` beside ``_quarto.yml``; the chapters quote them with Quarto's
  ``{{< var key >}}`` shortcode, which Quarto and ``prepass`` resolve from that one file.
- ``protocol``: the protocol card (each judge's decoding and media settings beside the paper's).
- ``prepass`` and ``render``: Quarto renders ``reports/index.qmd`` (chapters in
  ``reports/sections/``, the labelled outputs of the executed notebooks in ``reports/executed/``)
  for users who have it; ``python -m helpers.report`` renders the same sources with pandoc, which
  Quarto itself uses underneath. ``prepass`` does what Quarto adds before pandoc (chapter
  includes, notebook embeds, figure and table numbers, and ``sync_chapters``, Quarto's
  pre-render step); ``render`` lets pandoc do the rest (sections, TOC, callouts,
  cross-references) into one self-contained page, and is the command line.

``setup`` and ``chapters`` are imported by their module names (``from helpers.report.setup
import setup``), not from this package, so that importing the renderer stays light.
"""

from helpers.report.prepass import (
    CHAPTERS_BEGIN,
    CHAPTERS_END,
    ReportError,
    cell_options,
    split_front_matter,
    sync_chapters,
)
from helpers.report.render import FALLBACK_NOTE, Heading, Rendered, main, render, to_html
from helpers.report.tables import show

__all__ = ["CHAPTERS_BEGIN", "CHAPTERS_END", "FALLBACK_NOTE", "Heading", "Rendered", "ReportError",
           "cell_options", "main", "render", "show", "split_front_matter", "sync_chapters", "to_html"]
