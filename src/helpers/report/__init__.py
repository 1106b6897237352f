"""The study's report: how notebooks show their results, and the offline twin of ``quarto render``.

Quarto renders ``reports/index.qmd`` (its chapters in ``reports/sections/``, the labelled outputs
of the executed notebooks in ``reports/executed/``) for users who have it. Quarto cannot be
installed on the study's machines, so ``python -m helpers.report`` renders the same sources
with pandoc, which Quarto itself uses underneath:

- ``prepass``: what Quarto adds before pandoc: chapter includes, notebook embeds, figure and
  table numbers (and ``sync_chapters``, Quarto's pre-render step).
- ``render``: pandoc does the rest (sections, TOC, callouts, cross-references) into one
  self-contained page; the command line.
- ``tables``: ``show``, the one way a notebook displays a table, so Quarto and the fallback
  show the same thing.
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
